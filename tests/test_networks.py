"""Behaviour shared by every network: shapes, gradients, baselines, TorchScript, ONNX, errors, configs."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
import torch

from monai.bundle import ConfigParser

import custom_networks
from custom_networks import NETWORKS, ClassicUNet

# Tiny widths keep every case fast; the divisor is what each network needs of the spatial size.
TINY = {
    "GSConvECAUNet": ({"features": (8, 16, 32)}, 4),
    "CBAMUNet": ({"features": (8, 16, 32)}, 4),
    "AGMinASPPUNet": ({"features": (8, 16, 32)}, 4),
    "AttentionResUNet": ({"features": (8, 16, 32), "attention": "ag"}, 4),
    "AttentionResUNet-se": ({"features": (8, 16, 32), "attention": "se"}, 4),
    "AttentionResUNet-cbam": ({"features": (8, 16, 32), "attention": "cbam"}, 4),
    "UNeXt": ({"size": "s"}, 32),
    "SCUNeXt": ({}, 32),
    "ClassicUNet": ({"features": (8, 16, 32)}, 4),
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
        "GSConvECAUNet", "CBAMUNet", "AGMinASPPUNet", "SCUNeXt", "UNeXt", "AttentionResUNet", "ClassicUNet"
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


@pytest.mark.parametrize("name", ["GSConvECAUNet", "CBAMUNet", "AGMinASPPUNet", "SCUNeXt", "UNeXt", "AttentionResUNet"])
def test_built_from_a_bundle_config(name):
    kwargs = {"features": [8, 16, 32]} if name not in ("SCUNeXt", "UNeXt") else {}
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


def test_unknown_switch_values_are_rejected():
    with pytest.raises(ValueError, match="attention"):
        custom_networks.AttentionResUNet(2, 1, 1, attention="transformer")
    with pytest.raises(ValueError, match="conv_block"):
        custom_networks.AGMinASPPUNet(2, 1, 1, conv_block="dilated")
