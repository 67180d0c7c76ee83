"""Metrics beyond MONAI's: a Hausdorff distance whose mean over no measurable case is nan, not 0."""

from custom_networks.metrics.hausdorff_distance import HausdorffDistanceNaNMetric

__all__ = ["HausdorffDistanceNaNMetric"]
