"""MONAI Label infer and train tasks read from a bundle's own ``inference.json`` and ``train.json``.

MONAI Label's ``BundleInferTask`` and ``BundleTrainTask`` do the work; these subclasses add what this project's
bundles need: config overrides (e.g. the network widths of given weights) applied to both tasks, and an infer
post-processing that is the bundle's ``label_transforms`` (softmax and argmax) without its ``file_writers`` (MONAI
Label writes the returned label itself, with the input's geometry).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from monai.bundle import ConfigParser
from monai.config import KeysCollection
from monai.transforms import MapTransform
from monailabel.tasks.infer.bundle import BundleConstants as InferConstants
from monailabel.tasks.infer.bundle import BundleInferTask
from monailabel.tasks.train.bundle import BundleTrainTask

__all__ = [
    "IMAGE_2D_SUFFIXES",
    "POSTPROCESSING_KEY",
    "ProjectBundleInferTask",
    "ProjectBundleTrainTask",
    "SqueezeChannelOf2Dd",
    "apply_overrides",
]

# config id this app fills with the bundle's ``label_transforms`` (the bundle's ``postprocessing`` also writes files
# next to the case, measures and records outcomes for the batch run summary, which a server has no use for)
POSTPROCESSING_KEY = "monailabel_postprocessing"
# 2D inputs whose label MONAI Label would otherwise write in the input's own format: a JPEG label is lossy (class
# values change) and TIFF readers differ, so their labels come back as PNG
IMAGE_2D_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")


def apply_overrides(parser: ConfigParser, overrides: Mapping[str, Any]) -> ConfigParser:
    """Set ``{config id: value}`` overrides (ids may be nested, ``network_def#features``) on ``parser``."""
    for key, value in overrides.items():
        parser[key] = value
    return parser


class SqueezeChannelOf2Dd(MapTransform):
    """Drop the channel of a 2D label, ``(1, H, W)`` -> ``(H, W)``, as MONAI Label's ``Restored`` does for 3D.

    MONAI Label's ``Restored`` removes the channel only from ``(1, H, W, D)``; its writer takes a 2D label
    without one (a PNG with a third axis fails to write).

    Args:
        keys: the label keys.
        ref_image: key of the input image, channel first: ``(C, H, W)`` marks a 2D case.
    """

    def __init__(self, keys: KeysCollection, ref_image: str) -> None:
        super().__init__(keys)
        self.ref_image = ref_image

    def __call__(self, data: Mapping) -> dict:
        d = dict(data)
        if d[self.ref_image].ndim != 3:
            return d
        for key in self.key_iterator(d):
            if d[key].ndim == 3 and d[key].shape[0] == 1:
                d[key] = d[key][0]
        return d


class _ProjectInferConstants(InferConstants):
    def key_postprocessing(self) -> Sequence[str]:
        return [POSTPROCESSING_KEY]


class ProjectBundleInferTask(BundleInferTask):
    """``BundleInferTask`` on a bundle folder (``configs/`` and ``models/model.pt``) with config overrides.

    Pre-processing and inferer are the bundle's own (``LoadClinicalImaged``; ``SliceWiseInferer``, which runs the
    2D network slice by slice on a volume); post-processing is the bundle's ``label_transforms``, then MONAI
    Label's ``Restored`` and :class:`SqueezeChannelOf2Dd`. The label is written as uint8 (class
    indices), in the input's format (NIfTI for NIfTI) or as PNG for 2D images, unless the request asks otherwise
    (``result_extension``, ``result_dtype``).

    Args:
        path: the bundle folder MONAI Label serves.
        conf: the server's ``--conf`` pairs.
        overrides: ``{config id: value}`` set on ``inference.json`` (e.g. the widths of the weights).
    """

    def __init__(self, path: str, conf: dict[str, str], overrides: Mapping[str, Any]) -> None:
        # read by _load_bundle_config, which BundleInferTask.__init__ calls
        self.overrides = dict(overrides)
        super().__init__(path, conf, const=_ProjectInferConstants())

    def _load_bundle_config(self, path: str, config: str) -> ConfigParser:
        parser = apply_overrides(super()._load_bundle_config(path, config), self.overrides)
        if "label_transforms" not in parser:
            raise ValueError(f"{path}: inference.json has no 'label_transforms' to post-process with")
        parser[POSTPROCESSING_KEY] = {"_target_": "Compose", "transforms": "@label_transforms"}
        return parser

    def post_transforms(self, data=None) -> list:
        return [*super().post_transforms(data), SqueezeChannelOf2Dd(self.key_pred, ref_image=self.key_image)]

    def writer(self, data: dict, extension: str | None = None, dtype: str | None = None) -> tuple:
        image = str(data.get("image_path") or "").lower()
        if extension is None and not data.get("result_extension") and image.endswith(IMAGE_2D_SUFFIXES):
            extension = ".png"
        if dtype is None and not data.get("result_dtype"):
            dtype = "uint8"
        return super().writer(data, extension=extension, dtype=dtype)


class ProjectBundleTrainTask(BundleTrainTask):
    """``BundleTrainTask`` on a bundle folder with the same config overrides as its infer task.

    MONAI Label runs ``train.json`` with its own overrides (data lists from the datastore, epochs, device,
    ``train#handlers`` with a ``CheckpointLoader`` of ``models/model.pt`` first); the bundle's ``CheckpointSaver``
    writes the new ``models/model.pt``, which the next inference loads.

    Args:
        path: the bundle folder MONAI Label serves.
        conf: the server's ``--conf`` pairs.
        overrides: ``{config id: value}`` set on ``train.json``.
    """

    def __init__(self, path: str, conf: dict[str, str], overrides: Mapping[str, Any]) -> None:
        self.overrides = dict(overrides)
        super().__init__(path, conf)

    def _load_bundle_config(self, path: str, config: str) -> ConfigParser:
        return apply_overrides(super()._load_bundle_config(path, config), self.overrides)

    def _update_overrides(self, overrides: dict[str, Any]) -> dict[str, Any]:
        # the run re-reads train.json, so the app's overrides go in with MONAI Label's (which win); data loading
        # in the training process itself, as MONAI Label already runs training in a process of its own
        for key, value in {**self.overrides, "num_workers": 0}.items():
            overrides.setdefault(key, value)
        return overrides
