"""Export a segmentation network to ONNX for onnxruntime on CPU, and check the export against torch."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch
from monai.utils import ensure_tuple_rep

from custom_networks.atomic_files import atomic_path

__all__ = ["INPUT_NAME", "OUTPUT_NAME", "OnnxMismatchError", "check_onnx_against_torch", "export_onnx"]

INPUT_NAME = "image"
OUTPUT_NAME = "pred"


def export_onnx(
    net: torch.nn.Module,
    path: str | os.PathLike,
    spatial_dims: int,
    in_channels: int,
    example_spatial_size: int | Sequence[int],
    opset_version: int = 17,
) -> Path:
    """
    Export ``net`` in eval mode to an ONNX file with dynamic batch and spatial axes.

    Uses the legacy TorchScript-based exporter (``dynamo=False``): the dynamo exporter needs onnxscript, which
    is not a dependency of this package. The graph input is named ``"image"`` with shape
    (batch, in_channels, *spatial), the output ``"pred"`` with shape (batch, out_channels, *spatial); every
    axis but the channel one is dynamic. The file is written under a temporary name and renamed, so an
    interrupted export never leaves a truncated model at ``path``. The training mode of ``net`` is restored.

    Args:
        net: the network to export (on any device).
        path: destination ``.onnx`` file; its folder is created if missing.
        spatial_dims: number of spatial dimensions, 2 or 3.
        in_channels: input channels.
        example_spatial_size: spatial size of the tracing input (an int is repeated ``spatial_dims`` times); it
            must suit the network (e.g. divisible by its ``2**depth``).
        opset_version: ONNX opset. Defaults to 17.

    Returns:
        the path of the written model.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    size = ensure_tuple_rep(example_spatial_size, spatial_dims)
    device = next((p.device for p in net.parameters()), torch.device("cpu"))
    example = torch.randn(1, in_channels, *size, device=device)
    dynamic_axes = {0: "batch", **{2 + i: f"spatial_{i}" for i in range(spatial_dims)}}
    was_training = net.training
    net.eval()
    try:
        with atomic_path(path) as partial, torch.no_grad():
            torch.onnx.export(
                net,
                (example,),
                str(partial),
                input_names=[INPUT_NAME],
                output_names=[OUTPUT_NAME],
                dynamic_axes={INPUT_NAME: dynamic_axes, OUTPUT_NAME: dynamic_axes},
                opset_version=opset_version,
                dynamo=False,
            )
            onnx.checker.check_model(str(partial))
    finally:
        net.train(was_training)
    return path


class OnnxMismatchError(RuntimeError):
    """The exported ONNX model does not compute what the torch network computes; the message is one line."""


def check_onnx_against_torch(
    net: torch.nn.Module,
    path: str | os.PathLike,
    inputs: torch.Tensor | Sequence[torch.Tensor],
    rtol: float = 1e-4,
    atol: float = 1e-5,
    min_label_agreement: float = 0.999,
) -> float:
    """
    Run ``net`` (eval mode) and the ONNX model at ``path`` on the same inputs and compare the outputs.

    They agree when every ``|onnx - torch| <= atol + rtol * max|torch|`` (float rounding grows with the logits'
    scale, so a trained network with logits of 100 differs by more than an untrained one with logits of 0.1) and
    the labels (argmax over channels) are the same on at least ``min_label_agreement`` of the voxels.

    Args:
        net: the torch network the model was exported from.
        path: the ONNX model.
        inputs: one input tensor (B, C, *S) or several (e.g. different batch and spatial sizes).
        rtol: allowed difference relative to the largest torch output magnitude of each input.
        atol: allowed absolute difference on top (for outputs near 0).
        min_label_agreement: smallest share of voxels whose label must be the same.

    Returns:
        the largest absolute difference seen over all inputs.

    Raises:
        OnnxMismatchError: an output shape differs, a difference exceeds the tolerance, or the labels disagree;
            the message gives the file, the input shape and the figures.
    """
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    input_name = session.get_inputs()[0].name
    device = next((p.device for p in net.parameters()), torch.device("cpu"))
    was_training = net.training
    net.eval()
    worst = 0.0
    try:
        for x in [inputs] if isinstance(inputs, torch.Tensor) else inputs:
            with torch.no_grad():
                expected = net(x.to(device)).float().cpu().numpy()
            actual = session.run(None, {input_name: x.detach().float().cpu().numpy()})[0]
            where = f"ONNX model {path}, input shape {tuple(x.shape)}"
            if actual.shape != expected.shape:
                raise OnnxMismatchError(f"{where}: output shape {actual.shape} != torch {expected.shape}")
            diff = float(np.abs(actual - expected).max())
            scale = float(np.abs(expected).max())
            allowed = atol + rtol * scale
            if not diff <= allowed:
                raise OnnxMismatchError(
                    f"{where}: max |onnx - torch| = {diff:.3g} > {allowed:.3g} "
                    f"(atol {atol:g} + rtol {rtol:g} x output scale {scale:.3g})"
                )
            agreement = float(np.mean(actual.argmax(axis=1) == expected.argmax(axis=1)))
            if agreement < min_label_agreement:
                raise OnnxMismatchError(
                    f"{where}: labels agree on {agreement:.2%} of the voxels, below {min_label_agreement:.2%}"
                )
            worst = max(worst, diff)
    finally:
        net.train(was_training)
    return worst
