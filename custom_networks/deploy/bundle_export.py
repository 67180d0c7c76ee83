"""Export a trained bundle's network to TorchScript, fp32 ONNX and three int8 ONNX models in its ``models/`` folder."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Mapping
from dataclasses import asdict, dataclass
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

from custom_networks.atomic_files import TEMP_PREFIX, atomic_path
from custom_networks.deploy.int8_models import INT8_MODEL_FILES, VERIFICATION_FILE
from custom_networks.deploy.onnx_export import check_onnx_against_torch, export_onnx
from custom_networks.deploy.onnx_network import OnnxRuntimeNetwork
from custom_networks.deploy.quantize import (
    calibration_batches_from_dataset,
    quantize_dynamic_int8,
    quantize_static_int8,
)
from custom_networks.errors import find_input_error
from custom_networks.file_hash import file_sha256

__all__ = ["BundleExport", "Int8Check", "export_bundle", "int8_label_agreement"]

# ids tried in order for the deterministic preprocessing of the bundle's validation data in train.json
_VALIDATION_PREPROCESSING_IDS = ("validate#preprocessing", "validate#dataset#transform")


@dataclass(frozen=True)
class Int8Check:
    """How an int8 model's labels compare with the fp32 model's on held-out images, and whether it was written.

    Attributes:
        agreement: share of voxels whose label (argmax over channels) is the fp32 model's.
        dice: Dice of the int8 and fp32 foreground (label > 0) masks; 1 when both are empty.
        images: number of held-out images compared.
        written: the agreement reached the threshold, so the model was written.
    """

    agreement: float
    dice: float
    images: int
    written: bool


@dataclass(frozen=True)
class BundleExport:
    """Files written by ``export_bundle``, how closely the fp32 ONNX model matched torch, and the int8 checks
    (an int8 model below the agreement threshold is not written: its path is None)."""

    torchscript: Path
    onnx: Path
    int8_dynamic: Path | None
    int8_static: Path | None
    int8_static_uint8_weights: Path | None
    onnx_max_abs_diff: float
    calibration_samples: int
    int8_checks: dict[str, Int8Check]

    def files(self) -> dict[str, Path]:
        files = {"torchscript": self.torchscript, "onnx": self.onnx, "int8_dynamic": self.int8_dynamic,
                 "int8_static": self.int8_static, "int8_static_uint8_weights": self.int8_static_uint8_weights}
        return {name: path for name, path in files.items() if path is not None}


def export_bundle(
    bundle_root: str | os.PathLike,
    calibration_samples: int = 32,
    dataset_dir: str | os.PathLike | None = None,
    config_dir: str | os.PathLike | None = None,
    overrides: Mapping[str, Any] | None = None,
    rtol: float = 1e-4,
    atol: float = 1e-5,
    min_int8_agreement: float = 0.99,
    held_out_samples: int = 16,
) -> BundleExport:
    """
    Write ``model.ts``, ``model.onnx``, ``model_int8_dynamic.onnx``, ``model_int8_static.onnx`` and
    ``model_int8_static_uint8_weights.onnx`` into ``<bundle_root>/models/`` from the trained checkpoint
    ``<bundle_root>/models/model.pt``, and ``int8_verification.json``: the checkpoint's SHA-256 and each int8
    model's agreement with fp32 (the command line runs int8 by default only for that checkpoint).

    The network is ``network_def`` of ``inference.json`` (with ``overrides``, e.g. ``{"network_def#features":
    [8, 16, 32]}`` for a network trained at reduced widths) loaded with the checkpoint. TorchScript goes the way
    of ``monai.bundle ckpt_export``: ``convert_to_torchscript`` (verified against the eager network) and
    ``save_net_with_metadata`` with the bundle's metadata and ``inference.json``. The ONNX model has dynamic batch
    and spatial axes and is checked against torch (within ``atol + rtol * output scale``, labels compared
too); the int8 models follow
    ``custom_networks.deploy.quantize`` (the two static ones differ in weight type; ``int8_models`` says which
    one a CPU runs exactly).

    Static quantization is calibrated on images of the training datalist of ``train.json``
    (``train#dataset#data``, under ``dataset_dir``) through the bundle's validation preprocessing
    (``validate#preprocessing``), each padded or centre-cropped to the bundle's ``spatial_size`` (else the
    metadata's input ``spatial_shape``): that is what the sliding-window inferer feeds the network (windows of
    ``spatial_size``, zero-padded when the image is smaller). The ONNX model is traced at that size too, and the
    first two of these images serve for the ONNX and TorchScript checks. Each int8 model is then compared with the
    fp32 ONNX model on up to ``held_out_samples`` images it was not calibrated on (the validation split, same
    preprocessing and window) and written only if its labels agree on at least ``min_int8_agreement`` of the
    voxels. Every file is written under a temporary name and renamed.

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
        min_int8_agreement: smallest share of held-out voxels on which an int8 model's labels must equal fp32's.
        held_out_samples: number of validation images the int8 models are checked on.

    Returns:
        the written paths, the largest ONNX-torch difference seen and the number of calibration images.

    Raises:
        FileNotFoundError: the checkpoint or ``dataset_dir`` is missing (one line naming it).
        ValueError: the training or validation datalist is unusable (one line naming the file, from the bundle's
            input checks), or it yields no image.
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
    calibration = _window_images(train, "train#dataset#data", roi_size, calibration_samples)
    held_out = _window_images(train, "validate#dataset#data", roi_size, held_out_samples)
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
    checks: dict[str, Int8Check] = {}
    with tempfile.TemporaryDirectory(prefix=TEMP_PREFIX, dir=models) as unverified:
        unverified = Path(unverified)
        candidates = {
            "int8_dynamic": quantize_dynamic_int8(onnx_path, unverified / "model_int8_dynamic.onnx"),
            **{
                f"int8_static{'' if weights == 'int8' else '_uint8_weights'}": quantize_static_int8(
                    onnx_path, unverified / name, calibration, weight_type=weights
                )
                for weights, name in INT8_MODEL_FILES.items()
            },
        }
        written: dict[str, Path | None] = {}
        for name, candidate in candidates.items():
            agreement, dice = int8_label_agreement(onnx_path, candidate, held_out)
            checks[name] = Int8Check(agreement, dice, len(held_out), agreement >= min_int8_agreement)
            final = models / candidate.name
            final.unlink(missing_ok=True)  # never leave an earlier export beside a refused one
            written[name] = final if checks[name].written else None
            if checks[name].written:
                os.replace(candidate, final)
    _write_verification(models / VERIFICATION_FILE, checkpoint, candidates, checks, min_int8_agreement)
    return BundleExport(torchscript, onnx_path, written["int8_dynamic"], written["int8_static"],
                        written["int8_static_uint8_weights"], max_diff, len(calibration), checks)


def _write_verification(
    path: Path, checkpoint: Path, candidates: dict[str, Path], checks: dict[str, Int8Check], threshold: float
) -> None:
    """What the export checked, for ``int8_models.verified_int8_model``: the checkpoint's hash and, per int8
    model file, its agreement and Dice with fp32 on the held-out images and whether it was written."""
    record = {
        "checkpoint": checkpoint.name,
        "checkpoint_sha256": file_sha256(checkpoint),
        "min_int8_agreement": threshold,
        "models": {candidates[name].name: asdict(check) for name, check in checks.items()},
    }
    with atomic_path(path) as partial:
        partial.write_text(json.dumps(record, indent=2) + "\n")


def int8_label_agreement(
    fp32_path: str | os.PathLike, int8_path: str | os.PathLike, images: list[np.ndarray]
) -> tuple[float, float]:
    """Share of voxels whose label (argmax over channels) the int8 model gives as the fp32 one does, and the
    Dice of their foreground (label > 0) masks, over ``images`` (each (1, C, *S))."""
    fp32, int8 = OnnxRuntimeNetwork(fp32_path), OnnxRuntimeNetwork(int8_path)
    same = total = overlap = foreground = 0
    for image in images:
        x = torch.from_numpy(image)
        expected, labels = fp32(x).argmax(dim=1), int8(x).argmax(dim=1)
        same += int((expected == labels).sum())
        total += expected.numel()
        overlap += int(((expected > 0) & (labels > 0)).sum())
        foreground += int((expected > 0).sum() + (labels > 0).sum())
    return same / total, 2.0 * overlap / foreground if foreground else 1.0


def _parser(config_dir: Path, config_name: str, overrides: Mapping[str, Any]) -> ConfigParser:
    parser = ConfigParser()
    parser.read_config(config_dir / config_name)
    parser.read_meta(config_dir / "metadata.json")
    parser.update(dict(overrides))
    return parser


def _window_images(
    train: ConfigParser, datalist_id: str, roi_size: tuple[int, ...], max_samples: int
) -> list[np.ndarray]:
    """Images of datalist ``datalist_id`` through the validation preprocessing, at the inferer's window size, as
    (1, C, *S)."""
    dataset_dir = Path(train.get_parsed_content("dataset_dir"))
    if not dataset_dir.is_dir():
        raise FileNotFoundError(f"{dataset_dir}: dataset_dir not found (pass dataset_dir / --dataset_dir).")
    try:
        items = train.get_parsed_content(datalist_id)
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
        raise ValueError(f"{dataset_dir}: the datalist {datalist_id} yields no image.")
    return images
