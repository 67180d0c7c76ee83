from __future__ import annotations

import pytest
import torch
from monai.losses import DiceCELoss

from custom_networks.losses.dice_ce_edge_loss import DiceCEEdgeLoss


def square_mask(spatial_dims: int, size: int = 16, start: int = 4, stop: int = 11) -> torch.Tensor:
    mask = torch.zeros((2, 1) + (size,) * spatial_dims)
    mask[(slice(None), slice(None)) + (slice(start, stop),) * spatial_dims] = 1.0
    return mask


def logits_from_mask(mask: torch.Tensor, scale: float = 8.0) -> torch.Tensor:
    return (mask * 2 - 1) * scale


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_zero_edge_weight_equals_dice_ce_binary(spatial_dims):
    torch.manual_seed(0)
    logits = torch.randn((2, 1) + (12,) * spatial_dims)
    target = (torch.rand_like(logits) > 0.5).float()
    loss = DiceCEEdgeLoss(edge_weight=0.0, sigmoid=True, lambda_ce=0.5)
    expected = DiceCELoss(sigmoid=True, lambda_ce=0.5)(logits, target)
    assert torch.equal(loss(logits, target), expected)


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_zero_edge_weight_equals_dice_ce_multiclass(spatial_dims):
    torch.manual_seed(0)
    logits = torch.randn((2, 3) + (12,) * spatial_dims)
    labels = torch.randint(0, 3, (2, 1) + (12,) * spatial_dims)
    kwargs = {"to_onehot_y": True, "softmax": True, "include_background": False, "lambda_dice": 2.0}
    loss = DiceCEEdgeLoss(edge_weight=0.0, **kwargs)
    assert torch.equal(loss(logits, labels), DiceCELoss(**kwargs)(logits, labels))


@pytest.mark.parametrize("spatial_dims", [2, 3])
@pytest.mark.parametrize("edge_operator", ["sobel", "morphological"])
def test_perfect_prediction_beats_shifted_prediction(spatial_dims, edge_operator):
    target = square_mask(spatial_dims)
    shifted = torch.roll(target, shifts=2, dims=2)
    loss = DiceCEEdgeLoss(edge_operator=edge_operator, sigmoid=True)
    assert loss(logits_from_mask(target), target) < loss(logits_from_mask(shifted), target)
    assert loss.edge_loss(logits_from_mask(target), target) < loss.edge_loss(logits_from_mask(shifted), target)
    # The edge term adds to the region term for the wrong boundary.
    region = DiceCELoss(sigmoid=True)(logits_from_mask(shifted), target)
    assert loss(logits_from_mask(shifted), target) > region


@pytest.mark.parametrize("spatial_dims", [2, 3])
@pytest.mark.parametrize("edge_operator", ["sobel", "morphological"])
def test_edge_term_zero_for_identical_maps(spatial_dims, edge_operator):
    target = square_mask(spatial_dims)
    loss = DiceCEEdgeLoss(edge_operator=edge_operator)
    assert loss.edge_loss(target.clone(), target).item() == 0.0
    assert loss.edge_loss(torch.zeros_like(target), target).item() > 0.0


def test_sobel_edge_map_of_a_step():
    step = torch.zeros(1, 1, 6, 8)
    step[..., 4:] = 1.0
    edges = DiceCEEdgeLoss().edge_map(step)[0, 0]
    expected = torch.zeros(6, 8)
    expected[:, 3:5] = 0.5
    assert torch.allclose(edges, expected, atol=1e-5)


def test_morphological_edge_map_of_a_step():
    step = torch.zeros(1, 1, 5, 5, 6)
    step[..., 3:] = 1.0
    edges = DiceCEEdgeLoss(edge_operator="morphological").edge_map(step)[0, 0]
    expected = torch.zeros(5, 5, 6)
    expected[..., 2:4] = 1.0
    assert torch.equal(edges, expected)


@pytest.mark.parametrize("spatial_dims", [2, 3])
@pytest.mark.parametrize("edge_operator", ["sobel", "morphological"])
def test_backward_is_finite(spatial_dims, edge_operator):
    torch.manual_seed(0)
    logits = torch.randn((2, 3) + (10,) * spatial_dims, requires_grad=True)
    labels = torch.randint(0, 3, (2, 1) + (10,) * spatial_dims)
    labels[0] = 0  # a flat target: the Sobel magnitude's sqrt must stay differentiable
    loss = DiceCEEdgeLoss(edge_weight=2.0, edge_operator=edge_operator, to_onehot_y=True, softmax=True)
    value = loss(logits, labels)
    value.backward()
    assert torch.isfinite(value)
    assert torch.isfinite(logits.grad).all()
    assert logits.grad.abs().sum() > 0


def test_edge_weight_scales_edge_term():
    torch.manual_seed(0)
    logits = torch.randn(2, 1, 12, 12)
    target = square_mask(2, size=12, start=3, stop=8)
    region = DiceCELoss(sigmoid=True)(logits, target)
    edge = DiceCEEdgeLoss(sigmoid=True).edge_loss(logits, target)
    assert torch.allclose(DiceCEEdgeLoss(edge_weight=3.0, sigmoid=True)(logits, target), region + 3.0 * edge)


def test_invalid_arguments():
    with pytest.raises(ValueError, match="edge_weight"):
        DiceCEEdgeLoss(edge_weight=-1.0)
    with pytest.raises(ValueError, match="edge_operator"):
        DiceCEEdgeLoss(edge_operator="canny")
    with pytest.raises(ValueError, match="sigmoid"):
        DiceCEEdgeLoss(sigmoid=True, softmax=True)
