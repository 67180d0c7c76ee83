"""Behaviour shared by every network: shapes, gradients, baselines, TorchScript, ONNX, errors, configs."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
import torch
from monai.bundle import ConfigParser
from monai.networks.blocks import Convolution

import custom_networks
from custom_networks import NETWORKS, ClassicUNet

# Tiny widths keep every case fast; the divisor is what each network needs of the spatial size.
UNEXT_TINY = (4, 8, 12, 16, 24)
TINY = {
    "GSConvECAUNet": ({"features": (8, 16, 32)}, 4),
    "GSConvECAUNet-shortcut": ({"features": (8, 16, 32), "gsconv_shortcut": True}, 4),
    "CBAMUNet": ({"features": (8, 16, 32)}, 4),
    "AGMinASPPUNet": ({"features": (8, 16, 32)}, 4),
    "AGMinASPPUNet-shortcut": ({"features": (8, 16, 32), "gsconv_shortcut": True}, 4),
    "AttentionResUNet": ({"features": (8, 16, 32), "attention": "ag"}, 4),
    "AttentionResUNet-se": ({"features": (8, 16, 32), "attention": "se"}, 4),
    "AttentionResUNet-cbam": ({"features": (8, 16, 32), "attention": "cbam"}, 4),
    "UNeXt": ({"features": UNEXT_TINY}, 32),
    "SCUNeXt": ({"features": UNEXT_TINY}, 32),
    "ClassicUNet": ({"features": (8, 16, 32)}, 4),
    "ResidualUNet": ({"features": (8, 16, 32)}, 4),
}


def build(case: str, spatial_dims: int, in_channels: int = 2, out_channels: int = 3) -> torch.nn.Module:
    torch.manual_seed(0)
    kwargs, _ = TINY[case]
    return NETWORKS[case.split("-")[0]](spatial_dims, in_channels, out_channels, **kwargs)


def spatial_size(case: str, spatial_dims: int) -> tuple[int, ...]:
    # two multiples, so the deepest map is 2 pixels wide and batch norm sees more than one value in train mode
    return (2 * TINY[case][1],) * spatial_dims


def test_registry_lists_the_papers_networks():
    assert set(NETWORKS.names) == {
        "GSConvECAUNet", "CBAMUNet", "AGMinASPPUNet", "SCUNeXt", "UNeXt", "AttentionResUNet", "ClassicUNet",
        "ResidualUNet",
    }
    for name, cls in NETWORKS:
        assert getattr(custom_networks, name) is cls
        assert NETWORKS.components[name].description


@pytest.mark.parametrize("batch", [1, 2])
@pytest.mark.parametrize("spatial_dims", [2, 3])
@pytest.mark.parametrize("case", list(TINY))
def test_shape_and_finite_gradients(case, spatial_dims, batch):
    net = build(case, spatial_dims).train()
    x = torch.randn(batch, 2, *spatial_size(case, spatial_dims))
    y = net(x)
    assert y.shape == (batch, 3, *x.shape[2:])
    y.square().mean().backward()
    for name, param in net.named_parameters():
        assert param.grad is not None, f"{name} got no gradient"
        assert torch.isfinite(param.grad).all(), f"{name} has a non-finite gradient"


@pytest.mark.parametrize(
    "cls, switches_off",
    [
        (custom_networks.GSConvECAUNet, {"use_gsconv": False, "use_eca": False}),
        (custom_networks.CBAMUNet, {"use_cbam": False}),
        (custom_networks.AGMinASPPUNet, {"conv_block": "standard", "use_aspp": False, "use_attention_gate": False}),
    ],
)
def test_switches_off_give_the_plain_unet(cls, switches_off):
    def count(net):
        return sum(p.numel() for p in net.parameters())

    plain = count(ClassicUNet(2, 3, 1))
    assert count(cls(2, 3, 1, **switches_off)) == plain
    assert count(cls(2, 3, 1)) != plain


@pytest.mark.parametrize("spatial_dims", [2, 3])
@pytest.mark.parametrize("case", ["GSConvECAUNet", "AGMinASPPUNet"])
def test_gsconv_shortcut_gives_the_head_inputs_no_activation_switched_off(case, spatial_dims):
    """The failure the shortcut answers (issue 22): the head's inputs are the last block's ReLU outputs, so where
    the block switches them off the head sees zeros; with the shortcut a linear path reaches the head."""
    share_of_zeros = {}
    for shortcut in (False, True):
        torch.manual_seed(spatial_dims)
        net = build_layer_case(case, {"gsconv_shortcut": shortcut}, spatial_dims).train()
        seen = {}
        net.head.register_forward_pre_hook(lambda module, inputs, seen=seen: seen.__setitem__("x", inputs[0]))
        net(torch.randn(2, 2, *([8] * spatial_dims)))
        share_of_zeros[shortcut] = (seen["x"] == 0).float().mean().item()
        blocks = [*net.encoder, *net.decoder] + ([] if case == "AGMinASPPUNet" else [net.bottleneck])
        assert all((block.shortcut is not None) == shortcut for block in blocks)
    assert share_of_zeros[False] > 0.3  # ReLU after batch norm: about half are 0
    assert share_of_zeros[True] == 0.0


@pytest.mark.parametrize("case, switches_off", [
    ("GSConvECAUNet", {"use_gsconv": False, "use_eca": False}),
    ("AGMinASPPUNet", {"conv_block": "standard", "use_aspp": False, "use_attention_gate": False}),
])
def test_gsconv_shortcut_is_no_part_of_the_plain_unet(case, switches_off):
    """The bundles set ``gsconv_shortcut``; with GSConv off their baselines must stay the plain U-Net."""
    torch.manual_seed(0)
    baseline = ClassicUNet(2, 2, 3, features=(8, 16, 32))
    plain = NETWORKS[case](2, 2, 3, features=(8, 16, 32), gsconv_shortcut=True, **switches_off)
    assert module_layout(plain) == module_layout(baseline)


# (variant, its switches off, the baseline it must then be, widths to try, spatial multiple)
BASELINES = {
    "GSConvECAUNet": ({"use_gsconv": False, "use_eca": False}, "ClassicUNet", [(4, 8, 16), (6, 12, 24, 48)], None),
    "CBAMUNet": ({"use_cbam": False}, "ClassicUNet", [(4, 8, 16), (6, 12, 24, 48)], None),
    "AGMinASPPUNet": (
        {"conv_block": "standard", "use_aspp": False, "use_attention_gate": False},
        "ClassicUNet",
        [(4, 8, 16), (6, 12, 24, 48)],
        None,
    ),
    "AttentionResUNet": ({"attention": None}, "ResidualUNet", [(4, 8, 16), (6, 12, 24, 48)], None),
    # against UNeXt-S's own widths as well as tiny ones
    "SCUNeXt": (
        {"sc_skip": False, "use_cbam": False, "pyramid_fusion": False},
        "UNeXt",
        [UNEXT_TINY, (8, 16, 32, 64, 128)],
        32,
    ),
}
# (index into the widths, seed, options shared by variant and baseline)
BASELINE_RUNS = [(0, 0, {}), (1, 1, {}), (0, 2, {"norm": None, "dropout": 0.2})]


def module_layout(net: torch.nn.Module) -> list[tuple[str, type, str]]:
    """Every submodule's name, class and constructor summary: equal lists mean the same network structure."""
    return [(name, type(m), m.extra_repr()) for name, m in net.named_modules() if name]


def randomize_norm_stats(net: torch.nn.Module) -> None:
    """Non-trivial running statistics, so that eval-mode outputs depend on every norm buffer."""
    for m in net.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 1.5)


@pytest.mark.parametrize("spatial_dims", [2, 3])
@pytest.mark.parametrize("widths_index, seed, options", BASELINE_RUNS)
@pytest.mark.parametrize("variant", list(BASELINES))
def test_switches_off_build_the_baseline_exactly(variant, widths_index, seed, options, spatial_dims):
    switches_off, baseline_name, widths, multiple = BASELINES[variant]
    features = widths[widths_index]
    torch.manual_seed(seed)
    baseline = NETWORKS[baseline_name](spatial_dims, 2, 3, features=features, **options)
    randomize_norm_stats(baseline)
    plain = NETWORKS[variant](spatial_dims, 2, 3, features=features, **switches_off, **options)
    assert module_layout(plain) == module_layout(baseline)
    plain.load_state_dict(baseline.state_dict(), strict=True)
    plain.eval()
    baseline.eval()
    x = torch.randn(2, 2, *([multiple or 2 ** (len(features) - 1)] * spatial_dims))
    with torch.no_grad():
        assert torch.equal(plain(x), baseline(x))


# every registered network with default arguments (tiny widths), plus the ablation settings of each switch
LAYER_CASES = [(name, {}) for name in TINY] + [
    ("GSConvECAUNet", {"use_gsconv": False}),
    ("GSConvECAUNet", {"use_eca": False}),
    ("CBAMUNet", {"use_cbam": False, "norm": "instance"}),
    ("AGMinASPPUNet", {"conv_block": "gated"}),
    ("AGMinASPPUNet", {"conv_block": "standard", "use_aspp": False, "use_attention_gate": False}),
    ("AttentionResUNet", {"attention": None}),
    ("SCUNeXt", {"sc_skip": False}),
    ("SCUNeXt", {"use_cbam": False, "norm": ("group", {"num_groups": 2})}),
]


def build_layer_case(case: str, options: dict, spatial_dims: int = 2) -> torch.nn.Module:
    kwargs, _ = TINY[case]
    return NETWORKS[case.split("-")[0]](spatial_dims, 2, 3, **{**kwargs, **options})


@pytest.mark.parametrize("case, options", LAYER_CASES)
def test_no_zero_dropout_and_no_bias_before_a_norm(case, options):
    norm_types = (
        torch.nn.modules.batchnorm._BatchNorm, torch.nn.modules.instancenorm._InstanceNorm, torch.nn.GroupNorm
    )
    for spatial_dims in (2, 3):
        net = build_layer_case(case, options, spatial_dims)
        for name, m in net.named_modules():
            if isinstance(m, torch.nn.modules.dropout._DropoutNd):
                assert m.p > 0, f"{name}: dropout with p = 0"
            if isinstance(m, Convolution) and hasattr(m, "adn") and hasattr(m.adn, "N"):
                assert m.conv.bias is None, f"{name}: conv with a bias before {type(m.adn.N).__name__}"
            if isinstance(m, torch.nn.Sequential):
                children = list(m.named_children())
                for (first, conv), (_, norm) in zip(children, children[1:], strict=False):
                    if isinstance(conv, torch.nn.modules.conv._ConvNd) and isinstance(norm, norm_types):
                        assert conv.bias is None, f"{name}.{first}: conv with a bias before {type(norm).__name__}"


@pytest.mark.parametrize("case", list(TINY))
def test_dropout_ratio_reaches_the_dropout_layers(case):
    net = build_layer_case(case, {"dropout": 0.3})
    ratios = {m.p for m in net.modules() if isinstance(m, torch.nn.modules.dropout._DropoutNd)}
    assert ratios == {0.3}


def test_classic_unet_matches_the_papers_yardstick():
    assert sum(p.numel() for p in ClassicUNet(2, 3, 1, norm=None).parameters()) == 31_031_745


@pytest.mark.parametrize("spatial_dims", [2, 3])
@pytest.mark.parametrize("case", list(TINY))
def test_torchscript_matches_eager(case, spatial_dims):
    net = build(case, spatial_dims).eval()
    x = torch.randn(1, 2, *spatial_size(case, spatial_dims))
    scripted = torch.jit.script(net)
    with torch.no_grad():
        torch.testing.assert_close(scripted(x), net(x), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("case", list(TINY))
def test_onnx_export_matches_torch(case, tmp_path):
    net = build(case, 2).eval()
    x = torch.randn(1, 2, *spatial_size(case, 2))
    path = tmp_path / f"{case}.onnx"
    torch.onnx.export(
        net, (x,), str(path), dynamo=False, opset_version=17, input_names=["image"], output_names=["pred"],
        dynamic_axes={"image": {0: "batch", 2: "height", 3: "width"}, "pred": {0: "batch", 2: "height", 3: "width"}},
    )
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    # another batch size and spatial size than the traced ones: the axes really are dynamic
    other = torch.randn(2, 2, *(s * 2 for s in x.shape[2:]))
    for probe in (x, other):
        (onnx_out,) = session.run(None, {"image": probe.numpy()})
        with torch.no_grad():
            np.testing.assert_allclose(onnx_out, net(probe).numpy(), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("case", list(TINY))
def test_indivisible_size_names_size_and_multiple(case):
    net = build(case, 2).eval()
    multiple = TINY[case][1] if case.startswith(("UNeXt", "SCUNeXt")) else 4
    bad = (2 * multiple + 2, 2 * multiple)
    with pytest.raises(ValueError, match=rf"\[{bad[0]}, {bad[1]}\].*{multiple}"):
        net(torch.randn(1, 2, *bad))


@pytest.mark.parametrize(
    "name", ["GSConvECAUNet", "CBAMUNet", "AGMinASPPUNet", "SCUNeXt", "UNeXt", "AttentionResUNet", "ResidualUNet"]
)
def test_built_from_a_bundle_config(name):
    kwargs = {"features": [8, 16, 32]} if name not in ("SCUNeXt", "UNeXt") else {"features": list(UNEXT_TINY)}
    config = {
        "network_def": {
            "_target_": f"custom_networks.{name}", "spatial_dims": 2, "in_channels": 1, "out_channels": 2, **kwargs
        }
    }
    parser = ConfigParser(config)
    net = parser.get_parsed_content("network_def")
    assert isinstance(net, NETWORKS[name])
    assert net(torch.zeros(1, 1, 64, 64)).shape == (1, 2, 64, 64)


def test_attention_res_unet_override_picks_the_attention():
    parser = ConfigParser({"network_def": {"_target_": "custom_networks.AttentionResUNet", "spatial_dims": 2,
                                           "in_channels": 1, "out_channels": 2, "features": [8, 16, 32],
                                           "attention": "ag"}})
    parser["network_def#attention"] = "se"
    net = parser.get_parsed_content("network_def")
    assert any(type(m).__name__ == "ChannelSELayer" for m in net.modules())
    assert not any(type(m).__name__ == "AttentionGate" for m in net.modules())


@pytest.mark.parametrize("case, switch", [
    ("GSConvECAUNet", "gsconv_shortcut"), ("CBAMUNet", "residual_gates"), ("AGMinASPPUNet", "use_aspp"),
    ("SCUNeXt", "pyramid_fusion"),
])
def test_a_switch_given_as_a_string_is_refused_not_read_as_true(case, switch):
    """``python -m monai.bundle run --network_def#residual_gates false`` passes the string "false"."""
    with pytest.raises(ValueError, match=rf"{case}: {switch} must be True or False, got the str 'false'"):
        build_layer_case(case, {switch: "false"})


def test_unknown_switch_values_are_rejected():
    with pytest.raises(ValueError, match="attention"):
        custom_networks.AttentionResUNet(2, 1, 1, attention="transformer")
    with pytest.raises(ValueError, match="conv_block"):
        custom_networks.AGMinASPPUNet(2, 1, 1, conv_block="dilated")
