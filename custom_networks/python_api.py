"""Segment images with a bundle from Python: ``segment(input, output, bundle=...)``.

The same run as ``attention-unets infer`` (which calls this) and ``python -m monai.bundle run``: the bundle's own
``inference.json`` stack, resolved by :func:`custom_networks.runtime.prepare_bundle`. ``input`` is a case file
(NIfTI, DICOM file, PNG/JPG/TIFF), a folder of cases (a DICOM series folder is one case), or an image in memory:
a ``nibabel`` image, or ``(array, affine)`` with a 4 x 4 RAS affine.

Example::

    from custom_networks import segment

    result = segment("study/", "masks/", bundle="brain_tumor_mri_gsconv_eca_unet", demo=True)
    for case in result.cases:
        print(case.case, case.ok, case.segments, case.files)

    result = segment((volume, affine), bundle="brain_tumor_mri_gsconv_eca_unet", demo=True)
    mask = result.cases[0].mask          # label values in the input's voxel grid
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from custom_networks.errors import InputError
from custom_networks.runtime import output_kind, prepare_bundle

__all__ = ["CaseResult", "SegmentationResult", "segment"]

ProgressCallback = Callable[[int, int, str], None]
"""Called as ``(cases done, cases in all, case name)`` after each case."""
_IN_MEMORY_NAME = "image.nii.gz"


@dataclass(frozen=True)
class CaseResult:
    """One case's outcome.

    Args:
        case: the case name (its file or folder name, as in the run summary).
        ok: whether it was segmented.
        message: the one-line reason, for a failure.
        mask: the label values in the input's voxel grid (a NIfTI mask's voxel order; rows x columns for a 2D
            image file); ``None`` for a failure.
        affine: the mask's affine (the input's; identity-like for 2D images).
        segments: per segment ``{"label", "voxels", "volume_ml", "mean_intensity", ...}``.
        files: output kind (``"mask"``, ``"seg"``, ``"sr"`` (the measurement report), ``"secondary_capture"``,
            ``"overlay"``) to the written file; empty without ``output``.
        seconds: seconds per stage of this case where the bundle timed them.
    """

    case: str
    ok: bool
    message: str = ""
    mask: np.ndarray | None = None
    affine: np.ndarray | None = None
    segments: tuple[dict, ...] = ()
    files: dict[str, Path] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class SegmentationResult:
    """What ran and what came of each case.

    Args:
        bundle, bundle_version: the bundle.
        model: the model kind that ran (``"torch"``, ``"onnx"``, ``"int8"``).
        model_file: its file; ``weights_sha256`` its SHA-256.
        demo: whether the demo weights ran (not for clinical use).
        summary: ``run_summary.json`` in ``output`` (``None`` without ``output``).
        cases: one result per case, in the run's order.
    """

    bundle: str
    bundle_version: str
    model: str
    model_file: Path
    weights_sha256: str
    demo: bool
    summary: Path | None
    cases: tuple[CaseResult, ...]

    @property
    def failed(self) -> tuple[CaseResult, ...]:
        return tuple(case for case in self.cases if not case.ok)


def _write_in_memory(image, folder: Path) -> Path:
    """Write an in-memory image (``nibabel`` image or ``(array, affine)``) as a NIfTI case in ``folder``."""
    import nibabel as nib

    if isinstance(image, tuple):
        if len(image) != 2:
            raise InputError("input: an image in memory is (array, affine)", parameter="input")
        array, affine = np.asarray(image[0]), np.asarray(image[1], dtype=float)
        if affine.shape != (4, 4):
            raise InputError(f"input: the affine has shape {affine.shape}, expected (4, 4)", parameter="input")
        image = nib.Nifti1Image(array, affine)
    path = folder / _IN_MEMORY_NAME
    nib.save(image, path)
    return path


def _load_mask(path: Path) -> tuple[np.ndarray, np.ndarray]:
    if path.name.lower().endswith(".png"):
        from PIL import Image

        with Image.open(path) as picture:
            # PNG masks are stored 0/255 as the public data sets store them (every 2D bundle has one label);
            # returned as the file's rows x columns, like the input image read with PIL
            return (np.asarray(picture) > 0).astype(np.uint8), np.eye(4)
    import nibabel as nib

    image = nib.load(path)
    return np.asarray(image.dataobj), image.affine


def _case_results(summary: dict, keep_files: bool) -> tuple[CaseResult, ...]:
    results = []
    for row in summary["cases"]:
        files = {output_kind(path): Path(path) for path in row["outputs"]}
        mask = affine = None
        if row["status"] == "ok" and "mask" in files:
            mask, affine = _load_mask(files["mask"])
        results.append(CaseResult(row["case"], row["status"] == "ok", row["message"], mask, affine,
                                  tuple(row["segments"]), files if keep_files else {}, dict(row.get("seconds", {}))))
    return tuple(results)


def segment(
    input,  # noqa: A002 - the name TotalSegmentator's and MONAI's users know
    output: str | os.PathLike | None = None,
    *,
    bundle: str | os.PathLike,
    model: str = "auto",
    weights: str | os.PathLike | None = None,
    device: str | None = None,
    demo: bool = False,
    overrides: Mapping[str, object] | None = None,
    overlays: bool = False,
    secondary_capture: bool = False,
    progress: ProgressCallback | None = None,
) -> SegmentationResult:
    """Segment ``input`` with ``bundle``; a bad case is a failed :class:`CaseResult`, the others go on.

    Args:
        input: a case file, a folder of cases, a ``nibabel`` image or ``(array, affine)``.
        output: folder for the masks, DICOM SEGs, overlays and ``run_summary.csv`` / ``.json``; ``None``: nothing
            is kept on disk (the masks come back in memory).
        bundle: a bundle folder, or the name of a shipped bundle.
        model: ``"auto"`` (int8 on the CPU when the export verified it for the checkpoint, else torch), ``"torch"``,
            ``"onnx"`` or ``"int8"``.
        weights: a model file instead of the bundle's.
        device: ``"auto"``/``None``, ``"cpu"``, ``"cuda"``, ``"cuda:N"``.
        demo: the bundle's demo weights (a pipeline check, not for clinical use).
        overrides: config id to value, checked against the bundle's configs.
        overlays: also write an overlay mosaic PNG per case.
        secondary_capture: for DICOM input, also write the overlay mosaic as a DICOM Secondary Capture (for PACS
            viewers that cannot show a SEG).
        progress: called after each case.

    Raises:
        InputError: bad options or input as a whole (no such file, unknown bundle or config id, missing model).
    """
    in_memory = not isinstance(input, (str, os.PathLike))
    if not in_memory and not Path(input).exists():
        raise InputError(f"input {input}: no such file or folder", parameter="input")
    run = prepare_bundle(bundle, model, weights, demo, device, overrides)
    with tempfile.TemporaryDirectory(prefix="attention-unets-") as scratch:
        scratch = Path(scratch)
        source = _write_in_memory(input, scratch) if in_memory else Path(input)
        target = Path(output) if output is not None else scratch / "output"
        workflow = run.workflow(dataset_dir=str(source.resolve()), output_dir=str(target.resolve()),
                                save_overlays=overlays, save_secondary_capture=secondary_capture)
        if progress is not None:
            _report_progress(workflow, progress)
        workflow.run()
        workflow.finalize()
        summary_file = target.resolve() / "run_summary.json"
        cases = _case_results(json.loads(summary_file.read_text()), keep_files=output is not None)
    return SegmentationResult(run.name, run.version, run.model, run.model_file, run.weights_sha256, run.demo,
                              summary_file if output is not None else None, cases)


def _report_progress(workflow, progress: ProgressCallback) -> None:
    from ignite.engine import Events

    total = len(workflow.parser.get_parsed_content("cases"))
    evaluator = workflow.parser.get_parsed_content("evaluator")

    @evaluator.on(Events.ITERATION_COMPLETED)
    def done(engine) -> None:
        progress(engine.state.iteration, total, str(engine.state.batch[0]["case"]))
