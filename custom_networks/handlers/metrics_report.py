from __future__ import annotations

import logging
import math
import warnings
from pathlib import Path

from ignite.engine import Engine
from monai.handlers import MetricsSaver

__all__ = ["MetricsReportSaver"]

logger = logging.getLogger(__name__)


class MetricsReportSaver(MetricsSaver):
    """
    MONAI's ``MetricsSaver`` that says what it wrote: where the reports went, and which metric no case could
    measure (reported as nan) instead of NumPy's context-free "Mean of empty slice" warnings from the summary.

    Args: as ``monai.handlers.MetricsSaver``.
    """

    def __call__(self, engine: Engine) -> None:
        with warnings.catch_warnings():
            # NumPy's nanmean / nanstd / nanmedian over a metric with no finite value: explained below instead
            warnings.simplefilter("ignore", RuntimeWarning)
            super().__call__(engine)
        for name, value in engine.state.metrics.items():
            if isinstance(value, float) and math.isnan(value):
                logger.warning("%s: no case could be measured (e.g. every prediction or label empty); reported as nan",
                               name)
        logger.info("metrics of %d case(s) written to %s", len(self._filenames), Path(self.save_dir).resolve())
