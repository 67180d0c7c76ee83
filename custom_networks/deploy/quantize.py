"""
Int8 quantization of exported ONNX models with onnxruntime, for CPU deployment (paper 003).

Two recipes: dynamic range quantization as in paper 003 (int8 weights, float activations, no calibration) and
static per-channel QDQ quantization calibrated on a few preprocessed training images.

torch's own quantization is deliberately not used. With torch 2.13 on x86 CPUs: ``quantize_dynamic`` with its
default mapping quantizes only Linear/LSTM (no module of a conv U-Net); dynamic ``Conv2d`` through a custom
mapping gives wrong results; and statically quantized ``ConvTranspose2d`` gives wrong results on the
x86/fbgemm/onednn engines whenever its input and output widths differ (every U-Net up-sampling layer).
"""

from __future__ import annotations

import itertools
import os
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from monai.utils import convert_to_numpy
from onnxruntime.quantization import (
    CalibrationDataReader,
    CalibrationMethod,
    QuantFormat,
    QuantType,
    quant_pre_process,
    quantize_dynamic,
    quantize_static,
)

from custom_networks.atomic_files import atomic_path

_WEIGHT_TYPES = {"int8": QuantType.QInt8, "uint8": QuantType.QUInt8}

__all__ = [
    "calibration_batches_from_dataset",
    "convs_reading_the_input",
    "quantize_dynamic_int8",
    "quantize_static_int8",
    "store_conv_transpose_weights_as_int8",
]


def quantize_dynamic_int8(fp32_path: str | os.PathLike, out_path: str | os.PathLike) -> Path:
    """
    Dynamic range quantization (paper 003's recipe): int8 weights, float activations, no calibration.

    The model first goes through onnxruntime's ``quant_pre_process`` (shape inference and graph optimisation,
    e.g. batch norm folded into the convs; symbolic shape inference is skipped, it stops with "Incomplete
    symbolic shape inference" on the dynamic spatial axes), then ``quantize_dynamic``: Conv and MatMul
    weights are stored as 8-bit with one scale per tensor and activations are quantized on the fly at run
    time (``DynamicQuantizeLinear`` + ``ConvInteger``). onnxruntime has no integer ConvTranspose, so
    ``quantize_dynamic`` leaves the up-sampling weights in float; they are then stored as int8 as well (one
    scale per output channel) and dequantized by a ``DequantizeLinear`` node in front of each ConvTranspose,
    which runs in float: weight-only int8, as paper 003's dynamic range quantization does for every weight.
    Without that step the GSConv-ECA U-Net, whose transposed convs hold 17 % of its weights, stayed at 0.375x
    of its fp32 size.

    Weights are unsigned (``QUInt8``), chosen by measurement: on a 33.5 M-parameter ``AttentionResUNet`` at
    1 x 1 x 256 x 256, 2 threads, AVX-512 VNNI Xeon, onnxruntime 1.23, interleaved runs, median of 12:
    ``QInt8`` weights 10.5 s, ``QUInt8`` weights 2.1 s, fp32 1.3 s; same file size, outputs within 4e-3 of
    fp32 either way. Even with ``QUInt8`` the dynamic model is slower than the fp32 one there
    (``ConvInteger`` takes about four fifths of its time): it is the small-file option, the static model is
    the fast one.

    Args:
        fp32_path: fp32 ONNX model (e.g. from ``export_onnx``).
        out_path: destination of the int8 model; written under a temporary name and renamed.

    Returns:
        ``out_path`` as a ``Path``.
    """
    out_path = Path(out_path)
    with tempfile.TemporaryDirectory(prefix="quantize_dynamic_") as workdir:
        prepared = _pre_process(fp32_path, Path(workdir))
        with atomic_path(out_path) as partial:
            quantize_dynamic(prepared, partial, weight_type=QuantType.QUInt8)
            model = onnx.load(str(partial))
            store_conv_transpose_weights_as_int8(model)
            onnx.save(model, str(partial))
    return out_path


def store_conv_transpose_weights_as_int8(model: onnx.ModelProto) -> int:
    """
    Replace each float ConvTranspose weight initializer of ``model`` by int8 values and a ``DequantizeLinear``.

    Symmetric quantization with one scale per output channel (axis 1 of the ``(C_in, C_out / groups, *k)``
    weight), zero point 0, values in [-127, 127]. The ConvTranspose itself still computes in float.

    Returns:
        the number of weights replaced.
    """
    graph = model.graph
    initializers = {init.name: init for init in graph.initializer}
    names = {
        node.input[1]
        for node in graph.node
        if node.op_type == "ConvTranspose"
        and node.input[1] in initializers
        and initializers[node.input[1]].data_type == onnx.TensorProto.FLOAT
    }
    dequantize_nodes = []
    for name in sorted(names):
        weight = onnx.numpy_helper.to_array(initializers[name])
        reduce_axes = tuple(axis for axis in range(weight.ndim) if axis != 1)
        scale = (np.abs(weight).max(axis=reduce_axes) / 127.0).astype(np.float32)
        scale[scale == 0] = 1.0
        shape = [1, -1] + [1] * (weight.ndim - 2)
        values = np.clip(np.round(weight / scale.reshape(shape)), -127, 127).astype(np.int8)
        graph.initializer.remove(initializers[name])
        graph.initializer.extend(
            [
                onnx.numpy_helper.from_array(values, f"{name}_int8"),
                onnx.numpy_helper.from_array(scale, f"{name}_scale"),
                onnx.numpy_helper.from_array(np.zeros(scale.shape, np.int8), f"{name}_zero_point"),
            ]
        )
        dequantize_nodes.append(
            onnx.helper.make_node(
                "DequantizeLinear",
                [f"{name}_int8", f"{name}_scale", f"{name}_zero_point"],
                [name],
                name=f"{name}_dequantize",
                axis=1,
            )
        )
    # the new nodes read initializers only, so placing them first keeps the node list topologically sorted
    nodes = [*dequantize_nodes, *graph.node]
    del graph.node[:]
    graph.node.extend(nodes)
    return len(dequantize_nodes)


def quantize_static_int8(
    fp32_path: str | os.PathLike,
    out_path: str | os.PathLike,
    calibration_batches: Iterable[Any],
    weight_type: str = "int8",
) -> Path:
    """
    Static int8 quantization: QDQ format, per-channel weight scales, uint8 activations, calibrated ranges.

    Activation ranges come from min/max calibration over ``calibration_batches`` (about 32 preprocessed
    training slices are enough; see ``calibration_batches_from_dataset``). The model first goes through
    onnxruntime's ``quant_pre_process`` (symbolic shape inference skipped for the dynamic axes). At load time
    onnxruntime fuses each DequantizeLinear -> op -> QuantizeLinear group into an integer kernel; ConvTranspose
    keeps int8 weights in the file but runs in float (onnxruntime CPU).

    The convolutions that read the model's input stay in float (``convs_reading_the_input``). They are the
    layer most sensitive to rounding: a handful of weights per filter (9 for a 3 x 3 conv on one channel), batch
    norm folded into them, on the raw image. Measured on the brain bundle's demo weights, unseen sample studies,
    slice by slice: with them in int8, 0.59 % of the slices' pixels change label against fp32 and the lesion Dice
    falls by up to 0.05 (seeds 1-7; most flips on the lesion-free top and bottom slices, where the network is
    unsure anyway); quantizing that conv alone causes 72 % of those flips, and rounding its weights and input to
    8 bits in float arithmetic reproduces them, so they are rounding, not an onnxruntime kernel fault. In float
    (a 1 -> 4 channel conv, about 0.1 % of the network's operations) the lesion Dice stays within 0.006 of fp32.
    See docs/quantization.md.

    ``weight_type`` picks the integer product onnxruntime computes. ``"int8"`` (uint8 x int8) is its fast x86
    combination, exact on CPUs with VNNI (``vpdpbusd``) and on ARM; on x86 CPUs without VNNI onnxruntime's
    AVX2 kernel adds pairs of uint8 x int8 products in int16 (``vpmaddubsw``), which saturates. ``"uint8"``
    (uint8 x uint8 weights with a zero point) takes a kernel that widens to int16 first and never saturates;
    ``custom_networks.deploy.int8_models.int8_model_for_this_cpu`` picks the right file at run time.

    Args:
        fp32_path: fp32 ONNX model (e.g. from ``export_onnx``).
        out_path: destination of the int8 model; written under a temporary name and renamed.
        calibration_batches: numpy arrays or tensors of shape (N, C, *S), each one model input; spatial sizes
            may differ between batches when the model has dynamic axes.
        weight_type: ``"int8"`` or ``"uint8"`` weights (see above).

    Returns:
        ``out_path`` as a ``Path``.

    Raises:
        ValueError: if ``calibration_batches`` is empty or ``weight_type`` is neither ``"int8"`` nor ``"uint8"``.
    """
    if weight_type not in _WEIGHT_TYPES:
        raise ValueError(f"weight_type must be one of {sorted(_WEIGHT_TYPES)}, got {weight_type!r}.")
    out_path = Path(out_path)
    input_name = _input_name(fp32_path)
    batches = [np.ascontiguousarray(convert_to_numpy(batch, dtype=np.float32)) for batch in calibration_batches]
    if not batches:
        raise ValueError("quantize_static_int8 needs at least one calibration batch, got none.")
    with tempfile.TemporaryDirectory(prefix="quantize_static_") as workdir:
        prepared = _pre_process(fp32_path, Path(workdir))
        with atomic_path(out_path) as partial:
            quantize_static(
                prepared,
                partial,
                _BatchReader(input_name, batches),
                quant_format=QuantFormat.QDQ,
                per_channel=True,
                activation_type=QuantType.QUInt8,
                weight_type=_WEIGHT_TYPES[weight_type],
                calibrate_method=CalibrationMethod.MinMax,
                nodes_to_exclude=convs_reading_the_input(onnx.load(str(prepared))),
            )
    return out_path


def convs_reading_the_input(model: onnx.ModelProto) -> list[str]:
    """Names of the Conv nodes of ``model`` that read one of its graph inputs."""
    inputs = {inp.name for inp in model.graph.input} - {init.name for init in model.graph.initializer}
    return [node.name for node in model.graph.node if node.op_type == "Conv" and node.input[0] in inputs]


def calibration_batches_from_dataset(
    dataset: Iterable[Any], key: str = "image", max_samples: int = 32
) -> list[np.ndarray]:
    """
    Calibration inputs for ``quantize_static_int8`` from a dataset of dicts.

    Works with a MONAI ``Dataset`` (or any indexable dataset, or a list of already preprocessed dicts) whose
    items hold a (C, *S) image under ``key``; items that are lists of dicts (as random-crop transforms with
    ``num_samples`` return) contribute each dict. Indexable datasets longer than ``max_samples`` are sampled
    at evenly spaced indices, so calibration sees the whole list and not only its first cases; other
    iterables are read from the start. Pass the bundle's validation preprocessing (deterministic), not its
    training augmentation.

    Args:
        dataset: items are dicts, or lists of dicts, with a (C, *S) array or tensor under ``key``.
        key: the image key. Defaults to ``"image"``.
        max_samples: most images returned. Defaults to 32.

    Returns:
        float32 numpy arrays of shape (1, C, *S).

    Raises:
        ValueError: if ``max_samples`` is less than 1.
    """
    if max_samples < 1:
        raise ValueError(f"max_samples must be at least 1, got {max_samples}.")
    items: Iterator[Any]
    if hasattr(dataset, "__len__") and hasattr(dataset, "__getitem__"):
        count = len(dataset)
        indices = np.unique(np.linspace(0, count - 1, min(count, max_samples)).round().astype(int)) if count else []
        items = (dataset[int(i)] for i in indices)
    else:
        items = iter(dataset)
    dicts = (d for item in items for d in (item if isinstance(item, (list, tuple)) else [item]))
    return [convert_to_numpy(d[key], dtype=np.float32)[None] for d in itertools.islice(dicts, max_samples)]


class _BatchReader(CalibrationDataReader):
    """Feeds a list of input arrays to onnxruntime's calibrator, one inference per array."""

    def __init__(self, input_name: str, batches: list[np.ndarray]) -> None:
        self.input_name = input_name
        self.batches = batches
        self.position = 0

    def get_next(self) -> dict[str, np.ndarray] | None:
        if self.position >= len(self.batches):
            return None
        self.position += 1
        return {self.input_name: self.batches[self.position - 1]}

    def rewind(self) -> None:
        self.position = 0


def _input_name(model_path: str | os.PathLike) -> str:
    graph = onnx.load(str(model_path), load_external_data=False).graph
    initializers = {init.name for init in graph.initializer}
    return next(inp.name for inp in graph.input if inp.name not in initializers)


def _pre_process(fp32_path: str | os.PathLike, workdir: Path) -> Path:
    prepared = workdir / "preprocessed.onnx"
    quant_pre_process(str(fp32_path), str(prepared), skip_symbolic_shape=True)
    return prepared
