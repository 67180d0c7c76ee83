from __future__ import annotations

import torch
from monai.metrics import HausdorffDistanceMetric

__all__ = ["HausdorffDistanceNaNMetric"]


class HausdorffDistanceNaNMetric(HausdorffDistanceMetric):
    """
    MONAI's ``HausdorffDistanceMetric`` whose aggregate is nan when no case has a finite distance.

    A case whose prediction or label is empty has no Hausdorff distance (MONAI gives it nan and leaves it out
    of the mean), but when every case is like that MONAI's reduction returns 0, the best possible score: an
    untrained network that predicts nothing would read as perfect. Here that mean is nan.

    Args: as ``monai.metrics.HausdorffDistanceMetric``.
    """

    def aggregate(self, reduction=None):
        data = self.get_buffer()
        if isinstance(data, torch.Tensor) and data.numel() and not torch.isfinite(data).any():
            return torch.tensor(float("nan"), device=data.device)
        return super().aggregate(reduction)
