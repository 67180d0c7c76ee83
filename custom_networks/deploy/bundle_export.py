"""Export a trained bundle's network to TorchScript, fp32 ONNX and two int8 ONNX models in its ``models/`` folder."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.bundle import ConfigParser
from monai.data import Dataset
from monai.data.torchscript_utils import save_net_with_metadata
from monai.networks import convert_to_torchscript
from monai.transforms import Compose, ResizeWithPadOrCropd
from monai.utils import ensure_tuple_rep

from custom_networks.atomic_files import atomic_path
from custom_networks.deploy.onnx_export import check_onnx_against_torch, export_onnx
from custom_networks.deploy.quantize import (
    calibration_batches_from_dataset,
    quantize_dynamic_int8,
    quantize_static_int8,
)
from custom_networks.errors import find_input_error

__all__ = ["BundleExport", "export_bundle"]

# ids tried in order for the deterministic preprocessing of the bundle's validation data in train.json
_VALIDATION_PREPROCESSING_IDS = ("validate#preprocessing", "validate#dataset#transform")


@dataclass(frozen=True)
class BundleExport:
    """Files written by ``export_bundle`` and how closely the fp32 ONNX model matched torch."""

    torchscript: Path
    onnx: Path
    int8_dynamic: Path
    int8_static: Path
    onnx_max_abs_diff: float
    calibration_samples: int

    def files(self) -> dict[str, Path]:
        return {"torchscript": self.torchscript, "onnx": self.onnx, "int8_dynamic": self.int8_dynamic,
                "int8_static": self.int8_static}


def export_bundle(
    bundle_root: str | os.PathLike,
    calibration_samples: int = 32,
    dataset_dir: str | os.PathLike | None = None,
    config_dir: str | os.PathLike | None = None,
    overrides: Mapping[str, Any] | None = None,
    rtol: float = 1e-4,
    atol: float = 1e-5,
) -> BundleExport:
    """
    Write ``model.ts``, ``model.onnx``, ``model_int8_dynamic.onnx`` and ``model_int8_static.onnx`` into
    ``<bundle_root>/models/`` from the trained checkpoint ``<bundle_root>/models/model.pt``.

    The network is ``network_def`` of ``inference.json`` (with ``overrides``, e.g. ``{"network_def#features":
    [8, 16, 32]}`` for a network trained at reduced widths) loaded with the checkpoint. TorchScript goes the way
    of ``monai.bundle ckpt_export``: ``convert_to_torchscript`` (verified against the eager network) and
    ``save_net_with_metadata`` with the bundle's metadata and ``inference.json``. The ONNX model has dynamic batch
    and spatial axes and is checked against torch (within ``atol + rtol * output scale``, labels compared
too); the int8 models follow
    ``custom_networks.deploy.quantize``.

    Static quantization is calibrated on images of the training datalist of ``train.json``
    (``train#dataset#data``, under ``dataset_dir``) through the bundle's validation preprocessing
    (``validate#preprocessing``), each padded or centre-cropped to the bundle's ``spatial_size`` (else the
    metadata's input ``spatial_shape``): that is what the sliding-window inferer feeds the network (windows of
    ``spatial_size``, zero-padded when the image is smaller). The ONNX model is traced at that size too, and the
    first two of these images serve for the ONNX and TorchScript checks. Every file is written under a temporary
    name and renamed.

    Args:
        bundle_root: bundle folder holding ``models/model.pt``; the exports are written beside it.
        calibration_samples: number of training images used to calibrate the static int8 model.
        dataset_dir: dataset folder of the training datalist; None keeps the ``dataset_dir`` of train.json.
        config_dir: folder with ``inference.json``, ``train.json`` and ``metadata.json``; defaults to
            ``<bundle_root>/configs`` (a different folder suits a bundle trained with ``--bundle_root``
            elsewhere, as the tests do).
        overrides: config ids and values applied to both configs, as ``--id value`` on the bundle CLI.
        rtol: allowed difference of the fp32 ONNX (and TorchScript) outputs from torch, relative to the output's
            scale (float rounding grows with the logits of a trained network).
        atol: allowed absolute difference on top.

    Returns:
        the written paths, the largest ONNX-torch difference seen and the number of calibration images.

    Raises:
        FileNotFoundError: the checkpoint or ``dataset_dir`` is missing (one line naming it).
        ValueError: the training datalist is unusable (one line naming the file, from the bundle's input
            checks), or it yields no image.
        OnnxMismatchError: the fp32 ONNX model differs from torch beyond the tolerance or in its labels.
        AssertionError: the TorchScript module differs from torch beyond the tolerance (MONAI's check).
    """
    bundle_root = Path(bundle_root)
    config_dir = Path(config_dir) if config_dir is not None else bundle_root / "configs"
    models = bundle_root / "models"
    checkpoint = models / "model.pt"
    if not checkpoint.is_file():
        raise FileNotFoundError(f"{checkpoint}: checkpoint not found; train the bundle first (it saves it).")
    shared = {"bundle_root": str(bundle_root), **(overrides or {})}

    inference = _parser(config_dir, "inference.json", shared)
    image_format = inference["_meta_"]["network_data_format"]["inputs"]["image"]
    spatial_dims, in_channels = len(image_format["spatial_shape"]), int(image_format["num_channels"])
    window = image_format["spatial_shape"]
    if "spatial_size" in inference:
        window = inference.get_parsed_content("spatial_size")
    roi_size = ensure_tuple_rep(window, spatial_dims)
    net = inference.get_parsed_content("network_def").cpu()
    net.load_state_dict(torch.load(checkpoint, map_location="cpu", weights_only=True))
    net.eval()

    train = _parser(config_dir, "train.json", {**shared, **({"dataset_dir": str(dataset_dir)} if dataset_dir else {})})
    calibration = _calibration_images(train, roi_size, calibration_samples)
    checks = [torch.from_numpy(calibration[0]), torch.from_numpy(np.concatenate(calibration[:2]))]

    torchscript = models / "model.ts"
    cpu = torch.device("cpu")
    with torch.no_grad():
        scale = float(net(checks[0]).abs().max())
    scripted = convert_to_torchscript(
        net, verify=True, inputs=checks[:1], device=cpu, rtol=0.0, atol=atol + rtol * scale
    )
    extra_files = {"inference.json": json.dumps(ConfigParser.load_config_file(config_dir / "inference.json")).encode()}
    with atomic_path(torchscript) as partial, open(partial, "wb") as stream:
        save_net_with_metadata(scripted, stream, meta_values=inference["_meta_"], more_extra_files=extra_files)

    onnx_path = export_onnx(net, models / "model.onnx", spatial_dims, in_channels, roi_size)
    max_diff = check_onnx_against_torch(net, onnx_path, checks, rtol=rtol, atol=atol)
    dynamic = quantize_dynamic_int8(onnx_path, models / "model_int8_dynamic.onnx")
    static = quantize_static_int8(onnx_path, models / "model_int8_static.onnx", calibration)
    return BundleExport(torchscript, onnx_path, dynamic, static, max_diff, len(calibration))


def _parser(config_dir: Path, config_name: str, overrides: Mapping[str, Any]) -> ConfigParser:
    parser = ConfigParser()
    parser.read_config(config_dir / config_name)
    parser.read_meta(config_dir / "metadata.json")
    parser.update(dict(overrides))
    return parser


def _calibration_images(train: ConfigParser, roi_size: tuple[int, ...], max_samples: int) -> list[np.ndarray]:
    """Training images through the validation preprocessing, at the inferer's window size, as (1, C, *S)."""
    dataset_dir = Path(train.get_parsed_content("dataset_dir"))
    if not dataset_dir.is_dir():
        raise FileNotFoundError(f"{dataset_dir}: dataset_dir not found (pass dataset_dir / --dataset_dir).")
    try:
        items = train.get_parsed_content("train#dataset#data")
    except RuntimeError as error:
        # MONAI's config parser wraps the datalist check's BundleInputError; raise that one
        found = find_input_error(error)
        if found is None:
            raise
        raise found from None
    preprocessing_id = next((key for key in _VALIDATION_PREPROCESSING_IDS if key in train), None)
    if preprocessing_id is None:
        raise ValueError(f"train.json has none of the ids {', '.join(_VALIDATION_PREPROCESSING_IDS)}.")
    transform = Compose([train.get_parsed_content(preprocessing_id), ResizeWithPadOrCropd("image", roi_size)])
    images = calibration_batches_from_dataset(Dataset(items, transform), key="image", max_samples=max_samples)
    if not images:
        raise ValueError(f"{dataset_dir}: the training datalist yields no calibration image.")
    return images
