"""ONNX export, int8 quantization (dynamic and static QDQ) and the onnxruntime network wrapper."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from monai.data import Dataset
from monai.inferers import SlidingWindowInferer
from monai.losses import DiceCELoss
from monai.transforms import Lambdad

from custom_networks.deploy.onnx_export import OnnxMismatchError, check_onnx_against_torch, export_onnx
from custom_networks.deploy.onnx_network import OnnxRuntimeNetwork
from custom_networks.deploy.quantize import (
    calibration_batches_from_dataset,
    quantize_dynamic_int8,
    quantize_static_int8,
    store_conv_transpose_weights_as_int8,
)
from custom_networks.nets.ag_min_aspp_unet import AGMinASPPUNet
from custom_networks.nets.attention_res_unet import AttentionResUNet
from custom_networks.nets.cbam_unet import CBAMUNet
from custom_networks.nets.gsconv_eca_unet import GSConvECAUNet
from custom_networks.nets.sc_unext import SCUNeXt
from custom_networks.nets.unext import UNeXt

# tiny widths; the second entry is the multiple every spatial size must be
TINY = {
    "GSConvECAUNet": (lambda dims: GSConvECAUNet(dims, 1, 2, features=(8, 16, 32)), 4),
    "CBAMUNet": (lambda dims: CBAMUNet(dims, 1, 2, features=(8, 16, 32)), 4),
    "AGMinASPPUNet": (lambda dims: AGMinASPPUNet(dims, 1, 2, features=(8, 16, 32)), 4),
    "SCUNeXt": (lambda dims: SCUNeXt(dims, 1, 2), 32),
    "UNeXt": (lambda dims: UNeXt(dims, 1, 2, size="s"), 32),
    "AttentionResUNet": (lambda dims: AttentionResUNet(dims, 1, 2, features=(8, 16, 32)), 4),
}


@pytest.fixture(autouse=True, scope="module")
def one_torch_thread():
    # with two threads, torch's OpenMP workers spin-wait; when other jobs share the two cores a training step
    # then takes ten times longer, one thread keeps this file fast on a busy machine
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def build(name: str, spatial_dims: int = 2) -> torch.nn.Module:
    """A tiny network whose batch-norm running statistics are no longer the identity (0 mean, 1 variance)."""
    torch.manual_seed(0)
    make, multiple = TINY[name]
    net = make(spatial_dims).train()
    with torch.no_grad():
        for _ in range(3):
            net(torch.randn(4, 1, *(2 * multiple,) * spatial_dims) * 2 + 1)
    return net.eval()


@pytest.mark.parametrize("name", list(TINY))
def test_exported_fp32_matches_torch_at_two_batch_and_spatial_sizes(name, tmp_path):
    net = build(name)
    multiple = TINY[name][1]
    path = export_onnx(net, tmp_path / "model.onnx", spatial_dims=2, in_channels=1, example_spatial_size=2 * multiple)
    assert path == tmp_path / "model.onnx"
    assert [p.name for p in tmp_path.iterdir()] == ["model.onnx"]  # no temporary file left behind
    torch.manual_seed(1)
    inputs = [torch.randn(b, 1, *size) for b in (1, 3) for size in ((2 * multiple,) * 2, (3 * multiple, multiple))]
    assert check_onnx_against_torch(net, path, inputs, atol=1e-4) <= 1e-4


@pytest.mark.parametrize("name", ["CBAMUNet", "AttentionResUNet"])
def test_the_check_scales_with_the_logits_and_compares_labels(name, tmp_path):
    """Logits of magnitude ~100 (a trained network's) round by more than an absolute 1e-4 may allow; the check's
    tolerance follows the output's scale. A model that computes something else is refused in one line."""
    net = build(name)
    with torch.no_grad():
        net.head.weight.mul_(300.0)
        net.head.bias.mul_(300.0)
    path = export_onnx(net, tmp_path / "model.onnx", spatial_dims=2, in_channels=1, example_spatial_size=32)
    torch.manual_seed(2)
    inputs = [torch.randn(2, 1, 32, 32), torch.randn(1, 1, 48, 64)]
    with torch.no_grad():
        scale = max(float(net(x).abs().max()) for x in inputs)
    assert scale > 50
    assert check_onnx_against_torch(net, path, inputs) <= 1e-4 * scale

    swapped = build(name)
    with torch.no_grad():
        swapped.head.weight.copy_(net.head.weight.flip(0))
        swapped.head.bias.copy_(net.head.bias.flip(0))
    with pytest.raises(OnnxMismatchError) as refused:
        check_onnx_against_torch(swapped, path, inputs)
    assert str(refused.value).startswith(f"ONNX model {path}, input shape (2, 1, 32, 32): max |onnx - torch|")
    assert "\n" not in str(refused.value)
    with pytest.raises(OnnxMismatchError, match=r"labels agree on .* below 100.00%"):
        check_onnx_against_torch(swapped, path, inputs, rtol=1e9, min_label_agreement=1.0)


def test_export_3d_and_io_names(tmp_path):
    net = build("AttentionResUNet", spatial_dims=3).train()
    path = export_onnx(net, tmp_path / "sub" / "model3d.onnx", spatial_dims=3, in_channels=1, example_spatial_size=8)
    assert net.training  # the caller's mode is restored
    graph = onnx.load(str(path)).graph
    assert [i.name for i in graph.input] == ["image"] and [o.name for o in graph.output] == ["pred"]
    dims = [d.dim_param or d.dim_value for d in graph.input[0].type.tensor_type.shape.dim]
    assert dims == ["batch", 1, "spatial_0", "spatial_1", "spatial_2"]
    check_onnx_against_torch(net, path, [torch.randn(2, 1, 8, 12, 16), torch.randn(1, 1, 16, 8, 8)])


def test_check_against_torch_reports_the_difference(tmp_path):
    net = build("CBAMUNet")
    path = export_onnx(net, tmp_path / "model.onnx", 2, 1, 16)
    with torch.no_grad():
        net.head.bias += 0.01
    expected = r"model\.onnx, input shape \(1, 1, 16, 16\): max \|onnx - torch\| = 0\.01 > "
    with pytest.raises(OnnxMismatchError, match=expected):
        check_onnx_against_torch(net, path, torch.randn(1, 1, 16, 16))


def blobs(count: int, seed: int, size: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
    """Bright discs (label 1) of random radius and place on Gaussian noise."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    labels = np.zeros((count, 1, size, size), np.float32)
    for label in labels:
        for _ in range(rng.integers(1, 4)):
            cy, cx = rng.uniform(8, size - 8, 2)
            label[0][(yy - cy) ** 2 + (xx - cx) ** 2 < rng.uniform(4, 10) ** 2] = 1
    images = labels * rng.uniform(0.6, 1.2, (count, 1, 1, 1)) + rng.normal(0, 0.35, labels.shape)
    return torch.from_numpy(images.astype(np.float32)), torch.from_numpy(labels)


@pytest.fixture(scope="module", params=["AttentionResUNet", "SCUNeXt"])
def trained_models(request, tmp_path_factory):
    """A tiny network trained on the blob task, exported to fp32 ONNX and quantized both ways."""
    torch.manual_seed(0)
    if request.param == "AttentionResUNet":
        net = AttentionResUNet(2, 1, 2, features=(8, 16, 32, 64), attention="ag")
    else:
        net = SCUNeXt(2, 1, 2)
    images, labels = blobs(256, seed=0)
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-2)
    loss_function = DiceCELoss(to_onehot_y=True, softmax=True)
    net.train()
    for step in range(60):
        batch = slice(8 * (step % 32), 8 * (step % 32) + 8)
        optimizer.zero_grad()
        loss_function(net(images[batch]), labels[batch]).backward()
        optimizer.step()
    net.eval()
    folder = tmp_path_factory.mktemp(request.param)
    fp32 = export_onnx(net, folder / "model.onnx", 2, 1, 64)
    dynamic = quantize_dynamic_int8(fp32, folder / "model_int8_dynamic.onnx")
    calibration = calibration_batches_from_dataset([{"image": image} for image in images], max_samples=16)
    static = quantize_static_int8(fp32, folder / "model_int8_static.onnx", calibration)
    return net, {"fp32": fp32, "dynamic": dynamic, "static": static}


def test_trained_network_segments_the_blobs(trained_models):
    net, _ = trained_models
    images, labels = blobs(16, seed=1)
    with torch.no_grad():
        pred = net(images).argmax(1, keepdim=True).float()
    dice = 2 * (pred * labels).sum() / (pred.sum() + labels.sum())
    assert dice > 0.8  # the prediction is not constant, so pixel agreement below is meaningful


@pytest.mark.parametrize("kind", ["dynamic", "static"])
def test_int8_agrees_with_fp32_and_is_smaller(trained_models, kind):
    _, paths = trained_models
    images, _ = blobs(16, seed=1)  # held out: training used seed 0
    fp32 = OnnxRuntimeNetwork(paths["fp32"], num_threads=1)(images).argmax(1)
    int8 = OnnxRuntimeNetwork(paths[kind], num_threads=1)(images).argmax(1)
    agreement = (fp32 == int8).float().mean().item()
    assert agreement >= 0.99, f"{kind} int8 agrees with fp32 on {agreement:.2%} of pixels"
    # int8 weights; at these tiny widths the added quantize/dequantize nodes still weigh a quarter of the file
    assert paths[kind].stat().st_size < 0.75 * paths["fp32"].stat().st_size


def test_quantized_graphs_follow_the_recipes(trained_models):
    _, paths = trained_models
    for path in paths.values():
        io = onnx.load(str(path)).graph
        assert {v.type.tensor_type.elem_type for v in [*io.input, *io.output]} == {onnx.TensorProto.FLOAT}

    dynamic = onnx.load(str(paths["dynamic"])).graph
    assert "ConvInteger" in {node.op_type for node in dynamic.node}
    assert onnx.TensorProto.UINT8 in {init.data_type for init in dynamic.initializer}
    dynamic_initializers = {init.name: init for init in dynamic.initializer}
    transposed = [node for node in dynamic.node if node.op_type == "ConvTranspose"]
    assert transposed and not any(node.input[1] in dynamic_initializers for node in transposed)  # all via int8

    static = onnx.load(str(paths["static"])).graph
    initializers = {init.name: init for init in static.initializer}
    weight_scales = [
        initializers[node.input[1]]
        for node in static.node
        if node.op_type == "DequantizeLinear"
        and initializers.get(node.input[0]) is not None
        and initializers[node.input[0]].data_type == onnx.TensorProto.INT8
    ]
    assert weight_scales and any(len(scale.dims) == 1 and scale.dims[0] > 1 for scale in weight_scales)  # per channel
    activation_zero_points = [initializers[node.input[2]] for node in static.node if node.op_type == "QuantizeLinear"]
    assert activation_zero_points
    assert {zp.data_type for zp in activation_zero_points} == {onnx.TensorProto.UINT8}


def test_onnxruntime_network_in_sliding_window_inferer(tmp_path):
    net = build("AttentionResUNet")
    path = export_onnx(net, tmp_path / "model.onnx", 2, 1, 16)
    onnx_net = OnnxRuntimeNetwork(path, num_threads=1).to("cpu").eval()
    assert list(onnx_net.parameters()) == [] and onnx_net.state_dict() == {}
    inferer = SlidingWindowInferer(roi_size=(32, 32), sw_batch_size=3, overlap=0.25, mode="gaussian")
    torch.manual_seed(2)
    image = torch.randn(2, 1, 72, 52)
    with torch.no_grad():
        expected = inferer(image, net)
    actual = inferer(image, onnx_net)
    assert actual.shape == expected.shape == (2, 2, 72, 52)
    assert actual.device == image.device and actual.dtype == torch.float32
    torch.testing.assert_close(actual, expected, atol=1e-4, rtol=0)


def test_onnxruntime_network_file_errors(tmp_path):
    missing = tmp_path / "absent.onnx"
    with pytest.raises(FileNotFoundError, match=r"^ONNX model file not found: .*absent\.onnx$"):
        OnnxRuntimeNetwork(missing)
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(b"this is not a protobuf\n" * 10)
    with pytest.raises(ValueError, match=r"broken\.onnx") as error:
        OnnxRuntimeNetwork(broken)
    assert "\n" not in str(error.value)


def test_calibration_batches_from_monai_dataset():
    data = [{"image": np.full((1, 4, 6), i, np.uint8)} for i in range(50)]
    dataset = Dataset(data, transform=Lambdad("image", lambda x: x * 2))
    batches = calibration_batches_from_dataset(dataset, max_samples=32)
    assert len(batches) == 32
    assert all(b.shape == (1, 1, 4, 6) and b.dtype == np.float32 for b in batches)
    values = [float(b.flat[0]) for b in batches]
    assert values[0] == 0 and values[-1] == 98 and values == sorted(set(values))  # spread over the whole list

    assert len(calibration_batches_from_dataset(dataset[:5])) == 5
    crops = [[{"image": torch.zeros(1, 4, 4)}, {"image": torch.ones(1, 4, 4)}] for _ in range(3)]
    assert len(calibration_batches_from_dataset(crops, max_samples=5)) == 5
    assert len(calibration_batches_from_dataset(iter(data), max_samples=4)) == 4


def test_static_quantization_needs_calibration_data(tmp_path):
    path = export_onnx(build("CBAMUNet"), tmp_path / "model.onnx", 2, 1, 16)
    with pytest.raises(ValueError, match="calibration"):
        quantize_static_int8(path, tmp_path / "int8.onnx", [])
    assert not (tmp_path / "int8.onnx").exists()


def test_conv_transpose_weights_stored_as_int8_dequantize_to_the_weights():
    torch.manual_seed(0)
    layer = torch.nn.ConvTranspose2d(6, 4, kernel_size=2, stride=2).eval()
    with torch.no_grad():
        layer.weight[:, 2] = 0.0  # an all-zero output channel must not divide by zero
    model = onnx.helper.make_model(
        onnx.helper.make_graph(
            [onnx.helper.make_node("ConvTranspose", ["x", "w", "b"], ["y"], strides=[2, 2])],
            "up",
            [onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, 6, 5, 7])],
            [onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1, 4, 10, 14])],
            [onnx.numpy_helper.from_array(layer.weight.detach().numpy(), "w"),
             onnx.numpy_helper.from_array(layer.bias.detach().numpy(), "b")],
        ),
        opset_imports=[onnx.helper.make_opsetid("", 17)],
        ir_version=8,
    )
    assert store_conv_transpose_weights_as_int8(model) == 1
    onnx.checker.check_model(model)
    initializers = {init.name: onnx.numpy_helper.to_array(init) for init in model.graph.initializer}
    assert "w" not in initializers and initializers["w_int8"].dtype == np.int8
    scale = initializers["w_scale"]
    assert scale.shape == (4,) and scale[2] == 1.0
    dequantized = initializers["w_int8"] * scale.reshape(1, -1, 1, 1)
    assert np.abs(dequantized - layer.weight.detach().numpy()).max() <= scale.max() / 2 + 1e-7
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    x = torch.randn(1, 6, 5, 7)
    with torch.no_grad():
        expected = layer(x).numpy()
    np.testing.assert_allclose(session.run(None, {"x": x.numpy()})[0], expected, atol=0.02)
