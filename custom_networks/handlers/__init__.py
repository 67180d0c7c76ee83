"""Ignite handlers the bundles need that MONAI lacks."""

from custom_networks.handlers.metrics_report import MetricsReportSaver
from custom_networks.handlers.training_curves import TrainingCurvesSaver

__all__ = ["MetricsReportSaver", "TrainingCurvesSaver"]
