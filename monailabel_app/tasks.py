"""MONAI Label infer and train tasks read from a bundle's own ``inference.json`` and ``train.json``.

MONAI Label's ``BundleInferTask`` and ``BundleTrainTask`` do the work; these subclasses add what this project's
bundles need: config overrides (e.g. the network widths of given weights) applied to both tasks, and an infer
post-processing that is the bundle's ``label_transforms`` (softmax and argmax) without its ``file_writers`` (MONAI
Label writes the returned label itself, with the input's geometry), the run's model file, its SHA-256 and whether it
is the bundle's demo weights in every infer answer, and training from labels saved on 3D volumes
(:mod:`monailabel_app.slices`) with the labels it had to leave out, and the reason of a failed run, in the train
task's status.
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from monai.bundle import ConfigParser
from monai.config import KeysCollection
from monai.transforms import MapTransform
from monailabel.tasks.infer.bundle import BundleConstants as InferConstants
from monailabel.tasks.infer.bundle import BundleInferTask
from monailabel.tasks.train.bundle import BundleTrainTask

from custom_networks.clinical.errors import one_line
from custom_networks.errors import InputError, find_input_error
from custom_networks.runtime.bundle_run import prepare_bundle
from monailabel_app.slices import slice_training_pairs

__all__ = [
    "IMAGE_2D_SUFFIXES",
    "POSTPROCESSING_KEY",
    "ProjectBundleInferTask",
    "ProjectBundleTrainTask",
    "SqueezeChannelOf2Dd",
    "apply_overrides",
    "demo_weights_sha256",
]

logger = logging.getLogger(__name__)

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


def demo_weights_sha256(bundle: Path) -> str | None:
    """SHA-256 of the demo weights ``bundle`` ships (``None`` if it ships none): weights with this hash are demo
    weights wherever they were copied to."""
    try:
        return prepare_bundle(bundle, model="torch", demo=True, device="cpu").weights_sha256
    except InputError:
        return None


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

    Every answer also says what ran (``params``): ``model_file``, ``weights_sha256`` and ``demo_weights`` (the
    weights are the bundle's shipped demo weights: a pipeline check, not for clinical use).

    Args:
        path: the bundle folder MONAI Label serves.
        conf: the server's ``--conf`` pairs.
        overrides: ``{config id: value}`` set on ``inference.json`` (e.g. the widths of the weights).
        demo_sha256: SHA-256 of the bundle's demo weights (:func:`demo_weights_sha256`), ``None`` if it has none.
    """

    def __init__(self, path: str, conf: dict[str, str], overrides: Mapping[str, Any],
                 demo_sha256: str | None = None) -> None:
        # read by _load_bundle_config, which BundleInferTask.__init__ calls
        self.overrides = dict(overrides)
        self.demo_sha256 = demo_sha256
        super().__init__(path, conf, const=_ProjectInferConstants())

    def __call__(self, request, callbacks=None) -> tuple:
        label, answer = super().__call__(request, callbacks)
        return label, {**answer, **self.what_ran()}

    def what_ran(self) -> dict[str, Any]:
        """The model file this task runs, its SHA-256 (the bundle runtime's), and whether it is the demo weights."""
        run = prepare_bundle(self.bundle_path, model="torch", weights=Path(self.bundle_path) / "models" / "model.pt",
                             device="cpu")
        return {"model_file": str(run.model_file), "weights_sha256": run.weights_sha256,
                "demo_weights": run.weights_sha256 == self.demo_sha256}

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
    writes the new ``models/model.pt``, which the next inference loads. Labels saved on 3D volumes are cut into 2D
    samples first (:func:`~monailabel_app.slices.slice_training_pairs`, files in ``slices_dir``); the labels left
    out are named in the run's result (``left_out``, the last line of the train status ``details``), and a failed
    run ends with its one-line reason there.

    Args:
        path: the bundle folder MONAI Label serves.
        conf: the server's ``--conf`` pairs.
        overrides: ``{config id: value}`` set on ``train.json`` (and on ``inference.json``, whose preprocessing
            loads the volumes to slice).
        slices_dir: where the 2D samples of 3D labels are written (emptied at each run).
    """

    def __init__(self, path: str, conf: dict[str, str], overrides: Mapping[str, Any], slices_dir: Path) -> None:
        self.overrides = dict(overrides)
        self.slices_dir = Path(slices_dir)
        self.left_out: list[str] = []
        super().__init__(path, conf)

    def _load_bundle_config(self, path: str, config: str) -> ConfigParser:
        return apply_overrides(super()._load_bundle_config(path, config), self.overrides)

    def _update_overrides(self, overrides: dict[str, Any]) -> dict[str, Any]:
        # the run re-reads train.json, so the app's overrides go in with MONAI Label's (which win); data loading
        # in the training process itself, as MONAI Label already runs training in a process of its own
        for key, value in {**self.overrides, "num_workers": 0}.items():
            overrides.setdefault(key, value)
        return overrides

    def _inference_loader(self) -> tuple[Callable[[str], Any], int]:
        """The bundle's inference ``preprocessing`` of one image path, and the axis its inferer slices along."""
        parser = ConfigParser()
        parser.read_config(str(Path(self.bundle_path) / "configs" / "inference.json"))
        parser["bundle_root"] = self.bundle_path
        apply_overrides(parser, {k: v for k, v in self.overrides.items() if k in parser})
        preprocessing = parser.get_parsed_content("preprocessing")
        return (lambda path: preprocessing({"image": path})["image"]), int(parser.get_parsed_content("slice_axis"))

    def _fetch_datalist(self, request, datastore) -> list[dict[str, str]]:
        datalist = super()._fetch_datalist(request, datastore)
        shutil.rmtree(self.slices_dir, ignore_errors=True)
        load, slice_axis = self._inference_loader()
        sliced = slice_training_pairs(datalist, load, slice_axis, self.slices_dir)
        self.left_out = sliced.left_out
        for reason in sliced.left_out:
            logger.warning(f"left out of this run: {reason}")
        if not sliced.pairs:
            raise InputError(f"no usable labels among {len(datalist)} in the datastore")
        logger.info(f"{len(datalist) - len(sliced.left_out)} labels as {len(sliced.pairs)} 2D training samples")
        return sliced.pairs

    def __call__(self, request, datastore) -> dict[str, Any]:
        self.left_out = []
        try:
            result = super().__call__(request, datastore)
        except Exception as error:
            logger.exception("training failed")
            cause = find_input_error(error) or _innermost(error)
            reason = one_line(cause) if isinstance(cause, InputError) else f"{type(cause).__name__}: {one_line(cause)}"
            left_out = f" (left out: {'; '.join(self.left_out)})" if self.left_out else ""
            # the train status keeps the last lines of the run's output: this one line says why it failed
            raise RuntimeError(f"training {Path(self.bundle_path).name} failed: {reason}{left_out}") from None
        return {**(result or {}), "left_out": self.left_out}


def _innermost(error: BaseException) -> BaseException:
    """The first error of ``error``'s cause chain (MONAI's config parser wraps the one that says what happened)."""
    while error.__cause__ is not None:
        error = error.__cause__
    return error
