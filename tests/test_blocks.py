from __future__ import annotations

import io
import warnings

import onnxruntime as ort
import pytest
import torch
import torch.nn.functional as F

from custom_networks.blocks.attention_gate import AttentionGate
from custom_networks.blocks.cbam import CBAM, ChannelGate, SpatialGate
from custom_networks.blocks.double_conv import DoubleConv
from custom_networks.blocks.eca import ECA, eca_kernel_size
from custom_networks.blocks.gsconv import GSConv, interleave_halves
from custom_networks.blocks.min_aspp import MinASPP
from custom_networks.blocks.residual_block import ResidualAttentionBlock

DIMS = [2, 3]


def _randomize_norm_stats(module: torch.nn.Module) -> None:
    """Give batch norms non-trivial running statistics so eval-mode comparisons are not identity-like."""
    for m in module.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 1.5)


# GSConv


@pytest.mark.parametrize("spatial_dims", DIMS)
def test_interleave_halves_labelled_channels(spatial_dims):
    labels = torch.arange(8, dtype=torch.float32)  # a0..a3 = 0..3, b0..b3 = 4..7
    x = labels.view(1, 8, *([1] * spatial_dims)).expand(2, 8, *([3] * spatial_dims))
    out = interleave_halves(x)
    assert out.shape == x.shape
    assert out[0, :].flatten(1)[:, 0].tolist() == [0, 4, 1, 5, 2, 6, 3, 7]
    assert torch.equal(out[1], out[0])


def test_interleave_halves_odd_channels_raises():
    with pytest.raises(ValueError):
        interleave_halves(torch.zeros(1, 5, 2, 2))


@pytest.mark.parametrize("spatial_dims", DIMS)
def test_gsconv_output_interleaves_dense_and_depthwise(spatial_dims):
    torch.manual_seed(0)
    block = GSConv(spatial_dims, 3, 8).eval()
    recorded = {}
    block.dense.register_forward_hook(lambda m, i, o: recorded.__setitem__("dense", o.clone()))
    block.depthwise.register_forward_hook(lambda m, i, o: recorded.__setitem__("depthwise", o.clone()))
    with torch.no_grad():
        out = block(torch.randn(2, 3, *([6] * spatial_dims)))
    assert recorded["dense"].shape[1] == 4 and recorded["depthwise"].shape[1] == 4
    assert torch.equal(out[:, 0::2], recorded["dense"])
    assert torch.equal(out[:, 1::2], recorded["depthwise"])


@pytest.mark.parametrize("spatial_dims", DIMS)
@pytest.mark.parametrize("strides", [1, 2])
@pytest.mark.parametrize("gated", [False, True])
def test_gsconv_output_shape(spatial_dims, strides, gated):
    block = GSConv(spatial_dims, 3, 6, strides=strides, gated=gated)
    out = block(torch.randn(2, 3, *([8] * spatial_dims)))
    assert out.shape == (2, 6, *([8 // strides] * spatial_dims))


def test_gsconv_depthwise_is_5x5_and_grouped():
    block = GSConv(2, 3, 8)
    conv = block.depthwise.conv
    assert conv.kernel_size == (5, 5) and conv.groups == 4 and conv.stride == (1, 1)
    assert block.dense.conv.stride == (1, 1)
    assert GSConv(2, 3, 8, strides=2).dense.conv.stride == (2, 2)


@pytest.mark.parametrize("out_channels", [1, 7])
def test_gsconv_odd_out_channels_raises(out_channels):
    with pytest.raises(ValueError, match="even"):
        GSConv(2, 4, out_channels)


@pytest.mark.parametrize("spatial_dims", DIMS)
@pytest.mark.parametrize("strides", [1, 2])
def test_gated_gsconv_is_plain_times_sigmoid_gate(spatial_dims, strides):
    torch.manual_seed(0)
    plain = GSConv(spatial_dims, 3, 8, strides=strides)
    _randomize_norm_stats(plain)
    gated = GSConv(spatial_dims, 3, 8, strides=strides, gated=True)
    missing = gated.load_state_dict(plain.state_dict(), strict=False).missing_keys
    assert sorted(missing) == ["gate.bias", "gate.weight"]
    assert gated.gate.kernel_size == (1,) * spatial_dims and gated.gate.stride == (strides,) * spatial_dims
    plain.eval()
    gated.eval()
    x = torch.randn(2, 3, *([8] * spatial_dims))
    with torch.no_grad():
        expected = plain(x) * torch.sigmoid(gated.gate(x))
        torch.testing.assert_close(gated(x), expected, rtol=0, atol=1e-6)


@pytest.mark.parametrize("spatial_dims", DIMS)
def test_gsconv_dropout_layer_only_when_asked(spatial_dims):
    assert GSConv(spatial_dims, 3, 8).dropout is None
    block = GSConv(spatial_dims, 3, 8, dropout=0.5)
    assert isinstance(block.dropout, torch.nn.Dropout) and block.dropout.p == 0.5
    torch.manual_seed(0)
    x = torch.randn(2, 3, *([6] * spatial_dims))
    with torch.no_grad():
        dropped = block.train()(x)
        kept = block.eval()(x)
    assert bool((dropped == 0).any()) and not torch.equal(dropped, kept)


# DoubleConv


@pytest.mark.parametrize("spatial_dims", DIMS)
def test_double_conv_keys_and_units(spatial_dims):
    block = DoubleConv(spatial_dims, 3, 8)
    assert list(block.state_dict()) == [
        f"{unit}.{key}"
        for unit in ("conv_0", "conv_1")
        for key in ("conv.weight", "adn.N.weight", "adn.N.bias", "adn.N.running_mean", "adn.N.running_var",
                    "adn.N.num_batches_tracked")
    ]
    for unit, c_in in ((block.conv_0, 3), (block.conv_1, 8)):
        assert unit.conv.in_channels == c_in and unit.conv.out_channels == 8
        assert unit.conv.kernel_size == (3,) * spatial_dims and unit.conv.padding == (1,) * spatial_dims
        assert list(unit.adn._modules) == ["N", "A"]
    x = torch.randn(2, 3, *([5] * spatial_dims))
    assert block(x).shape == (2, 8, *([5] * spatial_dims))


def test_double_conv_bias_without_norm_and_dropout_only_when_asked():
    plain = DoubleConv(2, 3, 8, norm=None)
    assert plain.conv_0.conv.bias is not None and list(plain.conv_0.adn._modules) == ["A"]
    dropped = DoubleConv(2, 3, 8, dropout=0.25)
    assert list(dropped.conv_1.adn._modules) == ["N", "D", "A"] and dropped.conv_1.adn.D.p == 0.25
    assert not any(isinstance(m, torch.nn.Dropout) for m in DoubleConv(2, 3, 8).modules())


@pytest.mark.parametrize("spatial_dims", DIMS)
def test_double_conv_custom_units_and_attention(spatial_dims):
    torch.manual_seed(0)
    block = DoubleConv(
        spatial_dims, 3, 8, unit=lambda c_in, c_out: GSConv(spatial_dims, c_in, c_out), attention=ECA(spatial_dims, 8)
    ).eval()
    assert [name for name, _ in block.named_children()] == ["conv_0", "conv_1", "attention"]
    assert isinstance(block.conv_0, GSConv) and block.conv_0.dense.conv.in_channels == 3
    assert isinstance(block.conv_1, GSConv) and block.conv_1.dense.conv.in_channels == 8
    x = torch.randn(2, 3, *([6] * spatial_dims))
    with torch.no_grad():
        assert torch.equal(block(x), block.attention(block.conv_1(block.conv_0(x))))


@pytest.mark.parametrize("spatial_dims", DIMS)
def test_double_conv_shortcut_adds_a_linear_path_from_the_input(spatial_dims):
    torch.manual_seed(spatial_dims)
    block = DoubleConv(spatial_dims, 3, 8, attention=ECA(spatial_dims, 8), shortcut=True).eval()
    _randomize_norm_stats(block)
    assert [name for name, _ in block.named_children()] == ["conv_0", "conv_1", "attention", "shortcut"]
    assert block.shortcut.conv.kernel_size == (1,) * spatial_dims and block.shortcut.conv.bias is None
    assert list(block.shortcut.adn._modules) == ["N"]  # norm, no activation
    x = torch.randn(2, 3, *([6] * spatial_dims))
    with torch.no_grad():
        branch = block.attention(block.conv_1(block.conv_0(x)))
        assert torch.equal(block(x), branch + block.shortcut(x))
        assert bool((block(x) < 0).any()) and not bool((branch < 0).any())  # the ReLU branch alone is never < 0
    unnormed = DoubleConv(spatial_dims, 3, 8, norm=None, shortcut=True)
    assert unnormed.shortcut.conv.bias is not None and not hasattr(unnormed.shortcut, "adn")


# Residual block


@pytest.mark.parametrize("spatial_dims", DIMS)
@pytest.mark.parametrize("attention", [None, "se", "cbam"])
def test_residual_block_layout(spatial_dims, attention):
    block = ResidualAttentionBlock(spatial_dims, 4, 8, attention=attention)
    names = ["conv_0", "conv_1"] + ([] if attention is None else ["attention"])
    assert [name for name, _ in block.residual.named_children()] == names
    assert block.residual.conv_0.conv.bias is None and block.residual.conv_1.conv.bias is None
    assert block.shortcut.conv.bias is None
    assert not any(isinstance(m, torch.nn.Dropout) for m in block.modules())
    assert block(torch.randn(2, 4, *([6] * spatial_dims))).shape == (2, 8, *([6] * spatial_dims))
    assert ResidualAttentionBlock(spatial_dims, 4, 8, norm=None).residual.conv_0.conv.bias is not None
    assert ResidualAttentionBlock(spatial_dims, 4, 8, dropout=0.2).residual.conv_0.adn.D.p == 0.2


# ECA


@pytest.mark.parametrize(
    "channels, expected",
    [(8, 3), (16, 3), (32, 3), (64, 3), (128, 5), (256, 5), (512, 5), (1024, 5), (4096, 7)],
)
def test_eca_kernel_size_formula(channels, expected):
    assert eca_kernel_size(channels) == expected


@pytest.mark.parametrize("spatial_dims", DIMS)
def test_eca_adaptive_and_override_kernel(spatial_dims):
    assert ECA(spatial_dims, 64).conv.kernel_size == (3,)
    assert ECA(spatial_dims, 256).conv.kernel_size == (5,)
    override = ECA(spatial_dims, 64, kernel_size=7)
    assert override.conv.kernel_size == (7,) and override.conv.padding == (3,) and override.conv.bias is None
    with pytest.raises(ValueError):
        ECA(spatial_dims, 64, kernel_size=4)


@pytest.mark.parametrize("spatial_dims", DIMS)
def test_eca_zero_weights_halves_input(spatial_dims):
    block = ECA(spatial_dims, 16)
    with torch.no_grad():
        block.conv.weight.zero_()
    x = torch.randn(2, 16, *([5] * spatial_dims))
    assert torch.equal(block(x), 0.5 * x)


@pytest.mark.parametrize("spatial_dims", DIMS)
def test_eca_conv_runs_along_channels(spatial_dims):
    # weights (1, 0, 0): channel c is scaled by sigmoid(mean of channel c - 1), channel 0 by sigmoid(0) (padding)
    block = ECA(spatial_dims, 8, kernel_size=3)
    with torch.no_grad():
        block.conv.weight.copy_(torch.tensor([1.0, 0.0, 0.0]).view(1, 1, 3))
    x = torch.randn(2, 8, *([4] * spatial_dims))
    means = x.flatten(2).mean(-1)
    shifted = torch.cat([torch.zeros(2, 1), means[:, :-1]], dim=1)
    expected = x * torch.sigmoid(shifted).view(2, 8, *([1] * spatial_dims))
    torch.testing.assert_close(block(x), expected, rtol=0, atol=1e-6)


# CBAM


@pytest.mark.parametrize("spatial_dims", DIMS)
def test_cbam_channel_gate_runs_before_spatial_gate(spatial_dims):
    torch.manual_seed(0)
    block = CBAM(spatial_dims, 16).eval()
    calls = []
    outputs = {}

    def record_output(name):
        def hook(module, inputs, output):
            calls.append(name)
            outputs[name] = output.clone()

        return hook

    def record_spatial_input(module, inputs):
        outputs["spatial_input"] = inputs[0].clone()

    block.channel_gate.register_forward_hook(record_output("channel"))
    block.spatial_gate.register_forward_hook(record_output("spatial"))
    block.spatial_gate.register_forward_pre_hook(record_spatial_input)
    with torch.no_grad():
        out = block(torch.randn(2, 16, *([6] * spatial_dims)))
    assert calls == ["channel", "spatial"]
    assert torch.equal(outputs["spatial_input"], outputs["channel"])
    assert torch.equal(out, outputs["spatial"])


@pytest.mark.parametrize("channels, hidden", [(4, 1), (8, 1), (16, 1), (64, 4)])
def test_cbam_mlp_hidden_width(channels, hidden):
    gate = CBAM(2, channels, reduction=16).channel_gate
    assert gate.hidden_channels == hidden
    assert gate.mlp[0].out_channels == hidden and gate.mlp[2].in_channels == hidden
    assert gate.mlp[2].out_channels == channels


@pytest.mark.parametrize("spatial_dims", DIMS)
@pytest.mark.parametrize("channels", [4, 32])
def test_cbam_output_shape(spatial_dims, channels):
    x = torch.randn(2, channels, *([6] * spatial_dims))
    assert CBAM(spatial_dims, channels)(x).shape == x.shape


@pytest.mark.parametrize("spatial_dims", DIMS)
@pytest.mark.parametrize("kernel_size", [3, 7])
def test_cbam_spatial_kernel(spatial_dims, kernel_size):
    conv = CBAM(spatial_dims, 8, spatial_kernel_size=kernel_size).spatial_gate.conv.conv
    assert conv.weight.shape == (1, 2, *([kernel_size] * spatial_dims))
    assert conv.bias is None
    assert SpatialGate(spatial_dims, kernel_size, norm=None).conv.conv.bias is not None
    with pytest.raises(ValueError):
        SpatialGate(spatial_dims, 5)


@pytest.mark.parametrize("spatial_dims", DIMS)
def test_cbam_residual_adds_the_gated_features_and_single_gates_run_alone(spatial_dims):
    x = torch.rand(2, 8, *([6] * spatial_dims))
    torch.manual_seed(0)
    paper = CBAM(spatial_dims, 8).eval()
    torch.manual_seed(0)
    residual = CBAM(spatial_dims, 8, residual=True).eval()
    with torch.no_grad():
        gated = paper(x)
        assert torch.allclose(residual(x), x + gated)
        assert (gated <= x + 1e-6).all(), "the paper's gates only scale features down"
    channel_only = CBAM(spatial_dims, 8, gates=("channel",)).eval()
    assert isinstance(channel_only.spatial_gate, torch.nn.Identity)
    with torch.no_grad():
        assert torch.equal(channel_only(x), channel_only.channel_gate(x))
    with pytest.raises(ValueError, match="gates"):
        CBAM(spatial_dims, 8, gates=("spatial", "temporal"))


@pytest.mark.parametrize("spatial_dims", DIMS)
def test_cbam_unet_switches_reach_the_blocks(spatial_dims):
    from custom_networks import CBAMUNet

    net = CBAMUNet(spatial_dims, 1, 2, features=(4, 8, 16), gate_last_block=False, norm_spatial_gate=False)
    assert net.decoder[-1].attention is None, "no CBAM right before the head"
    assert all(block.attention is not None for block in [*net.encoder, net.bottleneck, *net.decoder[:-1]])
    assert net.encoder[0].attention.spatial_gate.conv.conv.bias is not None
    default = CBAMUNet(spatial_dims, 1, 2, features=(4, 8, 16))
    assert default.decoder[-1].attention is not None
    assert default.encoder[0].attention.spatial_gate.conv.conv.bias is None
    x = torch.randn(2, 1, *([8] * spatial_dims))
    assert net(x).shape == (2, 2, *([8] * spatial_dims))


@pytest.mark.parametrize("spatial_dims", DIMS)
def test_one_channel_gates_take_group_norm_with_one_group(spatial_dims):
    norm = ("group", {"num_groups": 4})
    x = torch.randn(2, 8, *([6] * spatial_dims))
    cbam = CBAM(spatial_dims, 8, norm=norm)
    assert cbam.spatial_gate.conv.adn.N.num_groups == 1 and cbam(x).shape == x.shape
    gate = AttentionGate(spatial_dims, 8, 8, norm=norm)
    assert gate.psi.adn.N.num_groups == 1
    assert gate(x, torch.randn(2, 8, *([3] * spatial_dims))).shape == x.shape


def test_cbam_3d_default_spatial_kernel_is_7x7x7():
    assert CBAM(3, 8).spatial_gate.conv.conv.kernel_size == (7, 7, 7)


@pytest.mark.parametrize("spatial_dims", DIMS)
def test_spatial_gate_descriptor_order_is_max_then_mean(spatial_dims):
    gate = SpatialGate(spatial_dims, kernel_size=3, norm=None)
    with torch.no_grad():
        gate.conv.conv.weight.zero_()
        gate.conv.conv.bias.zero_()
        gate.conv.conv.weight[(0, 0) + (1,) * spatial_dims] = 1.0  # centre tap of the first descriptor
    x = torch.randn(2, 4, *([5] * spatial_dims))
    expected = x * torch.sigmoid(x.amax(dim=1, keepdim=True))
    torch.testing.assert_close(gate(x), expected, rtol=0, atol=1e-6)


@pytest.mark.parametrize("spatial_dims", DIMS)
def test_channel_gate_sums_avg_and_max_branches(spatial_dims):
    # with the last MLP conv zeroed each branch gives its bias b, so the weight is sigmoid(2 b)
    gate = ChannelGate(spatial_dims, 8, reduction=4)
    with torch.no_grad():
        gate.mlp[2].weight.zero_()
        gate.mlp[2].bias.copy_(torch.linspace(-1, 1, 8))
    x = torch.randn(2, 8, *([4] * spatial_dims))
    expected = x * torch.sigmoid(2 * torch.linspace(-1, 1, 8)).view(1, 8, *([1] * spatial_dims))
    torch.testing.assert_close(gate(x), expected, rtol=0, atol=1e-6)


# Attention gate


@pytest.mark.parametrize("spatial_dims", DIMS)
@pytest.mark.parametrize("gating_stride", [2, 1])
def test_attention_gate_coefficients_and_output(spatial_dims, gating_stride):
    torch.manual_seed(0)
    gate = AttentionGate(spatial_dims, skip_channels=6, gating_channels=10, gating_stride=gating_stride)
    _randomize_norm_stats(gate)
    gate.eval()
    x = torch.randn(2, 6, *([8] * spatial_dims))
    g = torch.randn(2, 10, *([8 // gating_stride] * spatial_dims))
    with torch.no_grad():
        alpha = gate.coefficients(x, g)
        out = gate(x, g)
    assert alpha.shape == (2, 1, *([8] * spatial_dims))
    assert bool((alpha > 0).all()) and bool((alpha < 1).all())
    assert alpha.std() > 0
    assert torch.equal(out, x * alpha)


@pytest.mark.parametrize("spatial_dims", DIMS)
def test_attention_gate_projections(spatial_dims):
    strided = AttentionGate(spatial_dims, 6, 10)
    assert strided.project_skip.kernel_size == (2,) * spatial_dims
    assert strided.project_skip.stride == (2,) * spatial_dims and strided.project_skip.bias is None
    assert strided.project_gating.kernel_size == (1,) * spatial_dims and strided.project_gating.bias is not None
    assert strided.project_skip.out_channels == 3
    assert AttentionGate(spatial_dims, 1, 4).project_skip.out_channels == 1
    same_grid = AttentionGate(spatial_dims, 6, 10, inter_channels=5, gating_stride=1)
    assert same_grid.project_skip.kernel_size == (1,) * spatial_dims and same_grid.project_skip.out_channels == 5
    with pytest.raises(ValueError):
        AttentionGate(spatial_dims, 6, 10, gating_stride=4)


def test_attention_gate_resamples_coarse_coefficients_bilinearly():
    torch.manual_seed(0)
    gate = AttentionGate(2, 4, 4, norm=None).eval()
    x = torch.randn(1, 4, 8, 8)
    g = torch.randn(1, 4, 4, 4)
    with torch.no_grad():
        coarse = torch.sigmoid(gate.psi(torch.relu(gate.project_skip(x) + gate.project_gating(g))))
        expected = F.interpolate(coarse, size=(8, 8), mode="bilinear", align_corners=False)
        torch.testing.assert_close(gate.coefficients(x, g), expected, rtol=0, atol=1e-6)


# Min-ASPP


@pytest.mark.parametrize("spatial_dims", DIMS)
@pytest.mark.parametrize("pool_norm", [None, ("group", {"num_groups": 1})])
def test_min_aspp_train_batch_one(spatial_dims, pool_norm):
    torch.manual_seed(0)
    block = MinASPP(spatial_dims, 8, 4, pool_norm=pool_norm).train()
    x = torch.randn(1, 8, *([8] * spatial_dims), requires_grad=True)
    out = block(x)
    assert out.shape == (1, 4, *([8] * spatial_dims))
    out.square().mean().backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    for name, param in block.named_parameters():
        assert param.grad is not None and torch.isfinite(param.grad).all(), name


def test_min_aspp_branches():
    block = MinASPP(2, 8, 4, dilations=(2, 3))
    assert [branch.conv.dilation for branch in block.atrous] == [(2, 2), (3, 3)]
    assert [branch.conv.padding for branch in block.atrous] == [(2, 2), (3, 3)]
    assert block.project.conv.in_channels == 4 * 4
    assert not any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in block.pool.modules())
    with pytest.raises(ValueError):
        MinASPP(2, 8, 4, pool_norm="batch")


# TorchScript and ONNX


def _cases(spatial_dims):
    s = [8] * spatial_dims
    half = [4] * spatial_dims
    return [
        ("gsconv", GSConv(spatial_dims, 3, 8), (torch.randn(1, 3, *s),)),
        ("gsconv_gated_stride2", GSConv(spatial_dims, 3, 8, strides=2, gated=True), (torch.randn(1, 3, *s),)),
        ("eca", ECA(spatial_dims, 16), (torch.randn(1, 16, *s),)),
        ("cbam", CBAM(spatial_dims, 16), (torch.randn(1, 16, *s),)),
        ("attention_gate", AttentionGate(spatial_dims, 6, 10), (torch.randn(1, 6, *s), torch.randn(1, 10, *half))),
        (
            "attention_gate_same_grid",
            AttentionGate(spatial_dims, 6, 10, gating_stride=1),
            (torch.randn(1, 6, *s), torch.randn(1, 10, *s)),
        ),
        ("min_aspp", MinASPP(spatial_dims, 8, 4, pool_norm=("group", {"num_groups": 1})), (torch.randn(1, 8, *s),)),
        ("double_conv", DoubleConv(spatial_dims, 3, 8), (torch.randn(1, 3, *s),)),
        (
            "double_conv_gsconv_cbam",
            DoubleConv(
                spatial_dims, 3, 8, unit=lambda i, o: GSConv(spatial_dims, i, o), attention=CBAM(spatial_dims, 8)
            ),
            (torch.randn(1, 3, *s),),
        ),
        ("residual_block_se", ResidualAttentionBlock(spatial_dims, 3, 8, attention="se"), (torch.randn(1, 3, *s),)),
    ]


CASE_NAMES = [name for name, _, _ in _cases(2)]


def _case(spatial_dims, name):
    torch.manual_seed(0)
    for case_name, module, inputs in _cases(spatial_dims):
        if case_name == name:
            _randomize_norm_stats(module)
            return module.eval(), inputs
    raise KeyError(name)


@pytest.mark.parametrize("spatial_dims", DIMS)
@pytest.mark.parametrize("name", CASE_NAMES)
def test_torchscript_matches_eager(spatial_dims, name):
    module, inputs = _case(spatial_dims, name)
    scripted = torch.jit.script(module)
    with torch.no_grad():
        torch.testing.assert_close(scripted(*inputs), module(*inputs), rtol=0, atol=1e-6)


@pytest.mark.parametrize("name", CASE_NAMES)
def test_onnx_export_matches_torch(name):
    module, inputs = _case(2, name)
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(module, inputs, buffer, dynamo=False, opset_version=17)
    session = ort.InferenceSession(buffer.getvalue(), providers=["CPUExecutionProvider"])
    feeds = {arg.name: tensor.numpy() for arg, tensor in zip(session.get_inputs(), inputs, strict=True)}
    result = torch.from_numpy(session.run(None, feeds)[0])
    with torch.no_grad():
        torch.testing.assert_close(result, module(*inputs), rtol=0, atol=1e-4)
