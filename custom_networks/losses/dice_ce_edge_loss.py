from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from monai.losses import DiceCELoss
from monai.networks.layers.simplelayers import separable_filtering
from monai.networks.utils import one_hot
from torch.nn.modules.loss import _Loss

__all__ = ["DiceCEEdgeLoss"]


class DiceCEEdgeLoss(_Loss):
    """
    Joint loss of SC-UNeXt: Dice + cross-entropy region term plus an edge term on edge maps.

    Reference: J. Smith, "Advanced Medical Image Segmentation with Multi-Scale Feature Fusion and
    Attention Mechanisms" (SC-UNeXt), joint loss raising the weight of lesion boundaries.

    ``loss = DiceCELoss(input, target) + edge_weight * mean(|edge(p) - edge(t)|)`` where ``p`` are the
    predicted probabilities (``sigmoid`` / ``softmax`` / ``other_act`` applied to the logits as for the Dice
    term; none of them means ``input`` is used as is), ``t`` the (one-hot) target, and ``edge`` works on each
    channel separately:

    - "sobel": gradient magnitude ``sqrt(sum_axis g_axis ** 2)`` with the separable Sobel filter (derivative
      ``[-1, 0, 1] / 2`` along the axis, smoothing ``[1, 2, 1] / 4`` along the others; replicate padding so a
      constant map has no edge at the image border). A unit step gives 0.5 on both sides of the boundary.
    - "morphological": morphological gradient, 3x3(x3) max-pool minus min-pool (dilation minus erosion).

    The edge distance is the mean absolute difference (L1) over all elements (``reduction="mean"``) or its
    sum (``reduction="sum"``). ``include_background=False`` drops channel 0 from the edge term as well.
    With ``edge_weight=0`` the edge term is skipped and the loss equals ``DiceCELoss``.

    Args:
        edge_weight: weight of the edge term, at least 0. Defaults to 1.
        edge_operator: "sobel" or "morphological". Defaults to "sobel".
        include_background, to_onehot_y, sigmoid, softmax, other_act, squared_pred, jaccard, reduction,
        smooth_nr, smooth_dr, batch, weight, lambda_dice, lambda_ce, label_smoothing: as in
            ``monai.losses.DiceCELoss`` (``reduction`` "mean" or "sum").

    Input: logits (B, C, *spatial); target (B, 1, *spatial) labels or (B, C, *spatial) one-hot.
    """

    def __init__(
        self,
        edge_weight: float = 1.0,
        edge_operator: str = "sobel",
        include_background: bool = True,
        to_onehot_y: bool = False,
        sigmoid: bool = False,
        softmax: bool = False,
        other_act: Callable | None = None,
        squared_pred: bool = False,
        jaccard: bool = False,
        reduction: str = "mean",
        smooth_nr: float = 1e-5,
        smooth_dr: float = 1e-5,
        batch: bool = False,
        weight: torch.Tensor | None = None,
        lambda_dice: float = 1.0,
        lambda_ce: float = 1.0,
        label_smoothing: float = 0.0,
    ) -> None:
        super().__init__(reduction=reduction)
        if edge_weight < 0.0:
            raise ValueError(f"edge_weight should be no less than 0.0, got {edge_weight}.")
        if edge_operator not in ("sobel", "morphological"):
            raise ValueError(f"edge_operator must be 'sobel' or 'morphological', got {edge_operator!r}.")
        if int(sigmoid) + int(softmax) + int(other_act is not None) > 1:
            raise ValueError("Incompatible values: more than one of sigmoid, softmax and other_act are set.")
        self.dice_ce = DiceCELoss(
            include_background=include_background,
            to_onehot_y=to_onehot_y,
            sigmoid=sigmoid,
            softmax=softmax,
            other_act=other_act,
            squared_pred=squared_pred,
            jaccard=jaccard,
            reduction=reduction,
            smooth_nr=smooth_nr,
            smooth_dr=smooth_dr,
            batch=batch,
            weight=weight,
            lambda_dice=lambda_dice,
            lambda_ce=lambda_ce,
            label_smoothing=label_smoothing,
        )
        self.edge_weight = edge_weight
        self.edge_operator = edge_operator
        self.include_background = include_background
        self.to_onehot_y = to_onehot_y
        self.sigmoid = sigmoid
        self.softmax = softmax
        self.other_act = other_act

    def edge_map(self, x: torch.Tensor) -> torch.Tensor:
        """Edge map of every channel of ``x`` (B, C, *spatial), same shape."""
        if self.edge_operator == "morphological":
            spatial_dims = x.dim() - 2
            max_pool = [F.max_pool1d, F.max_pool2d, F.max_pool3d][spatial_dims - 1]
            return max_pool(x, 3, 1, 1) + max_pool(-x, 3, 1, 1)
        derivative = torch.tensor([-0.5, 0.0, 0.5], dtype=x.dtype, device=x.device)
        smoothing = torch.tensor([0.25, 0.5, 0.25], dtype=x.dtype, device=x.device)
        squared = torch.zeros_like(x)
        for axis in range(x.dim() - 2):
            kernels = [smoothing] * (x.dim() - 2)
            kernels[axis] = derivative
            squared = squared + separable_filtering(x, kernels, mode="replicate") ** 2
        # The small epsilon keeps the gradient of sqrt finite where the map is flat.
        return torch.sqrt(squared + 1e-12)

    def edge_loss(self, input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Edge term alone: L1 distance between the edge maps of the probabilities and of the target."""
        n_pred_ch = input.shape[1]
        if self.sigmoid:
            input = torch.sigmoid(input)
        elif self.softmax:
            input = torch.softmax(input, 1) if n_pred_ch > 1 else input
        elif self.other_act is not None:
            input = self.other_act(input)
        if self.to_onehot_y and n_pred_ch > 1:
            target = one_hot(target, num_classes=n_pred_ch)
        if not self.include_background and n_pred_ch > 1:
            input = input[:, 1:]
            target = target[:, 1:]
        difference = torch.abs(self.edge_map(input) - self.edge_map(target.to(input.dtype)))
        return difference.sum() if self.reduction == "sum" else difference.mean()

    def forward(self, input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """
        Args:
            input: logits (B, C, *spatial).
            target: labels (B, 1, *spatial) or one-hot (B, C, *spatial).
        """
        loss = self.dice_ce(input, target)
        if self.edge_weight > 0.0:
            loss = loss + self.edge_weight * self.edge_loss(input, target)
        return loss
