"""A bundle's inference workflow built once, its model loaded once, segmenting one case after another.

``python -m monai.bundle run`` builds the workflow for one ``dataset_dir`` and loads the model when the run starts;
a service (a PACS job, an AI node receiving series) segments cases one by one as they arrive. So the workflow is
built once with its ``handlers`` reduced to the ``stats_handler`` id, the ``checkpoint_loader`` id of the bundle's
config is called once by hand, and each case is handed to the same evaluator as a new one-case dataset: the
preprocessing, inferer, network, postprocessing and writers are the bundle's own, so a case gives here exactly the
files a folder run gives.

Example::

    segmenter = Segmenter(prepare_bundle("brain_tumor_mri_gsconv_eca_unet", demo=True), Path("out"))
    outcome = segmenter.segment(Path("series_folder"))
    outcome.files["seg"], outcome.segments, outcome.seconds
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

from custom_networks.runtime.bundle_run import BundleRun

__all__ = ["OUTPUT_KINDS", "SegmentOutcome", "Segmenter", "output_kind"]

# how the bundles' writers end their file names -> the kind of output (mask, DICOM SEG, overlay mosaic)
OUTPUT_KINDS = {"_seg.dcm": "seg", "_sr.dcm": "sr", "_sc.dcm": "secondary_capture", "_overlay.png": "overlay",
                "_seg.nii.gz": "mask", "_seg.png": "mask"}


def output_kind(path: str | Path) -> str:
    """The kind of output file ``path`` is, from how the bundle's writers name it (``"other"`` if none)."""
    name = Path(path).name.lower()
    return next((kind for end, kind in OUTPUT_KINDS.items() if name.endswith(end)), "other")


@dataclass(frozen=True)
class SegmentOutcome:
    """What the bundle made of one case.

    Args:
        ok: the case was segmented.
        message: one line, for a failure.
        files: output kind (``"seg"``, ``"sr"``, ``"secondary_capture"``, ``"mask"``, ``"overlay"``) to path.
        segments: the bundle's measurements per segment (label, voxels, volume_ml, mean_intensity).
        seconds: ``decode`` (loading and preprocessing), ``network`` (the inferer), ``seg_encoding`` (the SEG
            writer) and ``postprocessing`` (the other writers).
    """

    ok: bool
    message: str = ""
    files: dict[str, Path] = field(default_factory=dict)
    segments: tuple[dict, ...] = ()
    seconds: dict[str, float] = field(default_factory=dict)


class Segmenter:
    """The inference workflow of ``run`` with its model loaded, segmenting one case per :meth:`segment`.

    Args:
        run: the resolved bundle (:func:`~custom_networks.runtime.bundle_run.prepare_bundle`).
        output_dir: where the bundle's writers put their files.
        save_overlays: write the overlay mosaic too.
    """

    def __init__(self, run: BundleRun, output_dir: Path, save_overlays: bool = True) -> None:
        from ignite.engine import Events
        from monai.engines.utils import IterationEvents

        self.run = run
        self.output_dir = Path(output_dir)
        self.workflow = run.workflow(
            output_dir=str(self.output_dir),
            save_overlays=save_overlays,
            # the cases come one at a time, not from a dataset_dir; the weights load once, below
            **{"dataset#data": [], "handlers": ["@stats_handler"]},
        )
        parser = self.workflow.parser
        self.dataset = parser.get_parsed_content("dataset")
        self.recorder = parser.get_parsed_content("recorder")
        self.evaluator = parser.get_parsed_content("evaluator")
        if "checkpoint_loader" in parser and run.model == "torch":
            parser.get_parsed_content("checkpoint_loader")(self.evaluator)
        self.loaded_at = time.time()
        self._marks: dict[str, float] = {}
        self._seconds: dict[str, float] = {}
        for event, name in ((Events.GET_BATCH_STARTED, "get_batch_started"),
                            (Events.GET_BATCH_COMPLETED, "get_batch_completed"),
                            (IterationEvents.FORWARD_COMPLETED, "forward_completed"),
                            (Events.ITERATION_COMPLETED, "iteration_completed")):
            self.evaluator.add_event_handler(event, self._mark, name)

    def _mark(self, _engine, name: str) -> None:
        now = time.perf_counter()
        spans = {"get_batch_completed": ("get_batch_started", "decode"),
                 "forward_completed": ("get_batch_completed", "network"),
                 "iteration_completed": ("forward_completed", "postprocessing")}
        if name in spans and spans[name][0] in self._marks:
            stage = spans[name][1]
            self._seconds[stage] = self._seconds.get(stage, 0.0) + now - self._marks[spans[name][0]]
        self._marks[name] = now

    def segment(self, case: Path) -> SegmentOutcome:
        """Segment the case ``case`` (a file, or a folder holding one case such as a DICOM series); a bad case is
        a failed outcome with its one-line reason. Errors of the network or writers propagate."""
        from custom_networks.clinical.cases import STATUS_OK, cases_datalist, discover_cases

        self.recorder.take_outcomes()
        self.dataset.data = cases_datalist(discover_cases(case))
        self._marks.clear()
        self._seconds.clear()
        # ignite keeps the length of the last epoch; a case that failed to load left it at 0 (MONAI then skips)
        self.evaluator.state.epoch_length = None
        self.evaluator.run()
        outcomes = self.recorder.take_outcomes()
        if len(outcomes) != 1:
            return SegmentOutcome(False, f"{case}: the bundle recorded {len(outcomes)} outcomes for one case")
        outcome = outcomes[0]
        seconds = {**self._seconds, **outcome.seconds}
        # the SEG writer runs inside the postprocessing and times itself: count it once
        seconds["postprocessing"] = max(seconds.get("postprocessing", 0.0) - seconds.get("seg_encoding", 0.0), 0.0)
        seconds = {stage: round(value, 4) for stage, value in seconds.items()}
        if outcome.status != STATUS_OK:
            return SegmentOutcome(False, outcome.message, seconds=seconds)
        files = {output_kind(path): Path(path) for path in outcome.outputs}
        return SegmentOutcome(True, "", files, outcome.segments, seconds)
