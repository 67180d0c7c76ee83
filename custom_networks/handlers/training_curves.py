from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from ignite.engine import Engine, Events
from matplotlib.figure import Figure
from monai.handlers import MetricLogger, from_engine

from custom_networks.atomic_files import atomic_path

__all__ = ["TrainingCurvesSaver"]


class TrainingCurvesSaver(MetricLogger):
    """
    Collect the training loss and the validation metrics, and write them as a PNG of curves when training ends.

    Built on MONAI's ``MetricLogger``, which gathers ``(iteration, loss)`` from the trainer and
    ``(iteration, value)`` per metric from the evaluator; this class only adds the figure, one panel per
    curve (loss first, then the metrics in the order they were first reported), so that metrics on
    different scales (Dice in [0, 1], Hausdorff distance in pixels) each keep a readable axis.

    Args:
        output_file: path of the PNG to write at ``Events.COMPLETED``; parent folders are created.
        evaluator: the validation engine whose metrics are plotted; None plots the loss only.
        loss_transform: maps the trainer's ``state.output`` to the loss value; None reads "loss" of the first
            item of MONAI's decollated output.
        metric_transform: maps a metric value from the engines' ``state.metrics`` to a number.
        title: figure title.

    Example (bundle config)::

        {"_target_": "custom_networks.handlers.TrainingCurvesSaver",
         "output_file": "$@output_dir + '/training_curves.png'", "evaluator": "@validate#evaluator"}
    """

    def __init__(
        self,
        output_file: str | Path,
        evaluator: Engine | None = None,
        loss_transform: Callable | None = None,
        metric_transform: Callable = lambda x: x,
        title: str = "Training curves",
    ) -> None:
        super().__init__(
            loss_transform=loss_transform or from_engine(["loss"], first=True),
            metric_transform=metric_transform,
            evaluator=evaluator,
        )
        self.output_file = Path(output_file)
        self.title = title

    def attach(self, engine: Engine) -> None:
        """Log the loss at every iteration of ``engine`` and write the figure when it completes."""
        super().attach(engine)
        engine.add_event_handler(Events.COMPLETED, self.save_figure)

    def save_figure(self, engine: Engine | None = None) -> Path:
        """Write the loss and metric curves collected so far to ``output_file`` and return its path."""
        series = {"loss": self.loss, **self.metrics}
        figure = Figure(figsize=(7.0, 2.4 * len(series)), layout="constrained")
        axes = figure.subplots(len(series), 1, sharex=True, squeeze=False)[:, 0]
        for axis, (name, points) in zip(axes, series.items(), strict=True):
            iterations = [iteration for iteration, _ in points]
            values = [float(value) for _, value in points]
            axis.plot(iterations, values, marker="o" if name != "loss" else None, markersize=3)
            axis.set_ylabel(name)
            axis.grid(alpha=0.3)
        axes[-1].set_xlabel("iteration")
        figure.suptitle(self.title)
        with atomic_path(self.output_file) as temporary:
            figure.savefig(temporary, dpi=100, format="png")
        return self.output_file
