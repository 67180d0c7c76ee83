from __future__ import annotations

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from custom_networks.blocks.cbam import CBAM
from custom_networks.blocks.shifted_mlp import ShiftedMLPBlock, shift_channel_groups
from custom_networks.blocks.tokenizer import OverlapPatchEmbedding
from custom_networks.nets.sc_unext import PyramidFusion, SCSkipFusion, SCUNeXt
from custom_networks.nets.unext import AddSkip, LastLevel, UNeXt

# widths for tests of shapes and export, where UNeXt-S's own widths are not the point
TINY_FEATURES = (4, 8, 12, 16, 24)


def count_parameters(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def count_gmacs(model: torch.nn.Module, shape: tuple[int, ...]) -> float:
    model.eval()
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(torch.randn(*shape))
    return counter.get_total_flops() / 2 / 1e9


def reference_shift(x: torch.Tensor, dim: int, groups: int) -> torch.Tensor:
    """Loop version: out[..., i, ...] = x[..., i - offset, ...] where that index exists, else 0."""
    out = torch.zeros_like(x)
    size = x.shape[dim]
    start = 0
    for group, chunk in enumerate(torch.chunk(x, groups, dim=1)):
        offset = group - groups // 2
        for i in range(size):
            source = i - offset
            if 0 <= source < size:
                out[:, start : start + chunk.shape[1]].select(dim, i).copy_(chunk.select(dim, source))
        start += chunk.shape[1]
    return out


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_shift_moves_each_group_by_its_offset_with_zero_fill(spatial_dims):
    size = 7
    for dim in range(2, 2 + spatial_dims):
        impulse = torch.zeros((1, 5) + (size,) * spatial_dims)
        centre = (3,) * spatial_dims
        impulse[(0, slice(None)) + centre] = 1.0
        shifted = shift_channel_groups(impulse, dim)
        for group, offset in enumerate(range(-2, 3)):
            expected = list(centre)
            expected[dim - 2] += offset
            assert torch.nonzero(shifted[0, group]).tolist() == [expected]

        # Impulses on the first and last index of the axis: groups shifted off the edge become zero.
        edges = torch.zeros_like(impulse)
        edges.select(dim, 0).fill_(1.0)
        edges.select(dim, size - 1).fill_(2.0)
        shifted = shift_channel_groups(edges, dim)
        for group, offset in enumerate(range(-2, 3)):
            values = shifted[0, group].movedim(dim - 2, 0).reshape(size, -1)[:, 0].tolist()
            expected_values = [0.0] * size
            if 0 <= offset < size:
                expected_values[offset] = 1.0
            if 0 <= size - 1 + offset < size:
                expected_values[size - 1 + offset] = 2.0
            assert values == expected_values


@pytest.mark.parametrize("channels, groups", [(10, 5), (7, 5), (6, 3)])
def test_shift_matches_loop_reference_on_random_input(channels, groups):
    torch.manual_seed(0)
    x = torch.randn(2, channels, 5, 4, 6)
    for dim in (2, 3, 4, -1):
        expected = reference_shift(x, dim % x.dim(), groups)
        assert torch.equal(shift_channel_groups(x, dim, groups), expected)


def test_shift_rejects_non_spatial_dim():
    with pytest.raises(ValueError, match="spatial"):
        shift_channel_groups(torch.zeros(1, 5, 4, 4), 1)


def test_shift_scripted_matches_eager():
    x = torch.randn(1, 12, 6, 6)
    scripted = torch.jit.script(shift_channel_groups)
    assert torch.equal(scripted(x, 3, 5), shift_channel_groups(x, 3, 5))


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_shifted_mlp_block_shape_and_residual(spatial_dims):
    torch.manual_seed(0)
    block = ShiftedMLPBlock(spatial_dims, 20, mlp_ratio=2.0)
    x = torch.randn((2, 20) + (6,) * spatial_dims)
    y = block(x)
    assert y.shape == x.shape
    assert not torch.allclose(y, x)
    with torch.no_grad():
        block.fc2.weight.zero_()
        block.fc2.bias.zero_()
    assert torch.equal(block(x), x)


def test_shifted_mlp_block_shifts_every_axis_in_3d():
    # With identity Linear layers and a centre-tap depthwise conv, the block only shifts and applies GELU,
    # so a token of group g must move by (g - 2) along D, H and W.
    block = ShiftedMLPBlock(3, 5)
    with torch.no_grad():
        for fc in (block.fc1, block.fc2):
            fc.weight.copy_(torch.eye(5))
            fc.bias.zero_()
        block.dwconv.weight.zero_()
        block.dwconv.weight[:, :, 1, 1, 1] = 1.0
        block.dwconv.bias.zero_()
        block.norm.weight.fill_(1.0)
        block.norm.bias.fill_(0.0)
    x = torch.zeros(1, 5, 7, 7, 7)
    x[0, :, 3, 3, 3] = torch.tensor([1.0, -1.0, 2.0, -2.0, 3.0])
    mlp_part = block(x) - x
    for group, offset in enumerate(range(-2, 3)):
        moved = torch.nonzero(mlp_part[0, group].abs() > 1e-6).tolist()
        assert moved == [[3 + offset] * 3]


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_tokenizer_shape_and_per_token_layer_norm(spatial_dims):
    torch.manual_seed(0)
    tokenizer = OverlapPatchEmbedding(spatial_dims, 3, 24)
    x = torch.randn((2, 3) + (8,) * spatial_dims) * 5 + 3
    tokens = tokenizer(x)
    assert tokens.shape == (2, 24) + (4,) * spatial_dims
    mean = tokens.mean(dim=1)
    var = tokens.var(dim=1, unbiased=False)
    assert torch.allclose(mean, torch.zeros_like(mean), atol=1e-5)
    assert torch.allclose(var, torch.ones_like(var), atol=1e-3)


def test_unext_parameter_counts_match_reference():
    assert abs(count_parameters(UNeXt(2, 3, 1, size="s")) - 253_561) <= 0.02 * 253_561
    assert abs(count_parameters(UNeXt(2, 3, 1, size="base")) - 1_471_921) <= 0.02 * 1_471_921
    assert UNeXt(2, 3, 1, features=(4, 8, 16, 24, 32)).features == (4, 8, 16, 24, 32)


def test_unext_s_gmacs_match_reference():
    assert count_gmacs(UNeXt(2, 3, 1, size="s"), (1, 3, 256, 256)) == pytest.approx(0.099, rel=0.02)


def test_scunext_size_targets():
    model = SCUNeXt(2, 3, 1)
    assert abs(count_parameters(model) - 250_000) <= 0.25 * 250_000
    assert count_gmacs(model, (1, 3, 256, 256)) == pytest.approx(0.13, rel=0.25)


def test_scunext_flags_off_is_unext_s():
    torch.manual_seed(0)
    unext = UNeXt(2, 3, 2, size="s").eval()
    plain = SCUNeXt(2, 3, 2, sc_skip=False, use_cbam=False, pyramid_fusion=False).eval()
    assert count_parameters(plain) == count_parameters(unext)
    plain.load_state_dict(unext.state_dict())
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(plain(x), unext(x))


def test_unext_hooks_build_the_skip_and_level_fusions():
    skip_calls, level_calls = [], []

    def make_skip_fusion(level, channels):
        skip_calls.append((level, channels))
        return AddSkip()

    def make_level_fusion(level_channels):
        level_calls.append(tuple(level_channels))
        return LastLevel()

    features = TINY_FEATURES
    model = UNeXt(2, 1, 1, features=features, make_skip_fusion=make_skip_fusion, make_level_fusion=make_level_fusion)
    assert skip_calls == [(0, 16), (1, 12), (2, 8), (3, 4)]
    assert level_calls == [(16, 12, 8, 4, 4)]
    default = UNeXt(2, 1, 1, features=features)
    assert all(type(stage.skip_fusion) is AddSkip for stage in default.decoder)
    assert type(default.level_fusion) is LastLevel
    assert list(model.state_dict()) == list(default.state_dict())


def test_scunext_switches_build_its_modules_through_the_hooks():
    model = SCUNeXt(2, 3, 1, features=TINY_FEATURES)
    fusions = [stage.skip_fusion for stage in model.decoder]
    assert all(isinstance(fusion, SCSkipFusion) for fusion in fusions)
    # f is a conv at the two conv levels only; the token levels use the shifted MLP after the skip
    assert [isinstance(fusion.f, torch.nn.Identity) for fusion in fusions] == [True, True, False, False]
    assert isinstance(model.level_fusion, PyramidFusion)
    cbam_only = SCUNeXt(2, 3, 1, sc_skip=False, pyramid_fusion=False)
    assert all(isinstance(stage.skip_fusion.attention, CBAM) for stage in cbam_only.decoder)
    assert type(cbam_only.level_fusion) is LastLevel


@pytest.mark.parametrize("norm, norm_type", [("batch", torch.nn.BatchNorm2d), ("instance", torch.nn.InstanceNorm2d)])
def test_scunext_cbam_and_fusions_honour_norm(norm, norm_type):
    model = SCUNeXt(2, 3, 1, features=TINY_FEATURES, norm=norm)
    for stage in model.decoder:
        spatial_conv = stage.skip_fusion.attention.spatial_gate.conv
        assert isinstance(spatial_conv.adn.N, norm_type) and spatial_conv.conv.bias is None
    without = SCUNeXt(2, 3, 1, features=TINY_FEATURES, norm=None)
    for stage in without.decoder:
        spatial_conv = stage.skip_fusion.attention.spatial_gate.conv
        assert not hasattr(spatial_conv, "adn") or not hasattr(spatial_conv.adn, "N")
        assert spatial_conv.conv.bias is not None
    assert not any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in without.modules())


def test_each_scunext_flag_changes_parameter_count():
    base = count_parameters(SCUNeXt(2, 3, 1, sc_skip=False, use_cbam=False, pyramid_fusion=False))
    for flag in ("sc_skip", "use_cbam", "pyramid_fusion"):
        flags = {"sc_skip": False, "use_cbam": False, "pyramid_fusion": False, flag: True}
        assert count_parameters(SCUNeXt(2, 3, 1, **flags)) > base, flag


@pytest.mark.parametrize("network", [UNeXt, SCUNeXt])
@pytest.mark.parametrize("spatial_dims, size", [(2, (64, 96)), (3, (32, 32, 64))])
@pytest.mark.parametrize("batch", [1, 2])
def test_output_shape(network, spatial_dims, size, batch):
    torch.manual_seed(0)
    model = network(spatial_dims, 2, 3, features=TINY_FEATURES).eval()
    with torch.no_grad():
        y = model(torch.randn((batch, 2) + size))
    assert y.shape == (batch, 3) + size
    assert torch.isfinite(y).all()


@pytest.mark.parametrize("network", [UNeXt, SCUNeXt])
def test_training_step_gives_finite_gradients_3d(network):
    torch.manual_seed(0)
    model = network(3, 1, 2, features=(4, 8, 8, 16, 16), norm=("group", {"num_groups": 2}), dropout=0.1)
    model(torch.randn(1, 1, 32, 32, 32)).sum().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())


@pytest.mark.parametrize("network", [UNeXt, SCUNeXt])
def test_non_divisible_size_raises(network):
    model = network(2, 1, 1)
    with pytest.raises(ValueError, match=r"\[64, 48\].*32"):
        model(torch.randn(1, 1, 64, 48))


@pytest.mark.parametrize("network", [UNeXt, SCUNeXt])
@pytest.mark.parametrize("spatial_dims, size", [(2, (64, 32)), (3, (32, 32, 32))])
def test_torchscript_matches_eager(network, spatial_dims, size):
    torch.manual_seed(0)
    model = network(spatial_dims, 1, 2, features=TINY_FEATURES).eval()
    x = torch.randn((2, 1) + size)
    scripted = torch.jit.script(model)
    with torch.no_grad():
        assert torch.allclose(scripted(x), model(x), atol=1e-6)
