"""``SliceWiseInferer``: a 2D network on 2D images and, slice by slice, on 3D volumes."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from monai.data import MetaTensor
from monai.inferers import Inferer
from monai.utils import convert_to_dst_type

__all__ = ["SliceWiseInferer"]


class SliceWiseInferer(Inferer):
    """Run a 2D network on every slice of a volume, each slice prepared exactly as a training image was.

    MONAI's ``SliceInferer`` runs a sliding window over native-size slices of a 3D volume; it cannot apply a
    per-slice transform, so intensity normalization would be computed over the whole volume, unlike training on
    single 2D images. Here ``slice_transform`` (e.g. the training ``Compose([NormalizeIntensity(), Resize(...)])``)
    is applied to every ``(C, H, W)`` slice on its own; the network output is resized back to the slice's size
    (``output_mode`` interpolation) and the slices are stacked in place. A 2D input ``(B, C, H, W)`` is one slice
    per batch item, so the same inferer serves 2D and 3D cases. Slices larger than the training size, or of a size
    the network does not accept, go through an inner ``inferer`` such as MONAI's ``SlidingWindowInferer``.

    Args:
        spatial_dim: spatial axis (0, 1 or 2) of a 3D input along which it is cut into slices.
        slice_transform: applied to each ``(C, H, W)`` slice before the network; ``None`` leaves slices unchanged.
        sw_batch_size: slices per network call.
        output_mode: interpolation of the network output back to the slice size (``"bilinear"`` for logits).
        inferer: runs the network on each batch of prepared slices (e.g. ``SlidingWindowInferer``); ``None`` calls
            the network directly.

    Shapes:
        input ``(B, C, H, W)`` or ``(B, C, X, Y, Z)``; output ``(B, C_out, *spatial)`` of the input's spatial size,
        a ``MetaTensor`` carrying the input's meta-data when the input is one.
    """

    def __init__(
        self,
        spatial_dim: int = 2,
        slice_transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
        sw_batch_size: int = 8,
        output_mode: str = "bilinear",
        inferer: Inferer | None = None,
    ) -> None:
        super().__init__()
        if spatial_dim not in (0, 1, 2):
            raise ValueError(f"spatial_dim must be 0, 1 or 2, got {spatial_dim}")
        self.spatial_dim = spatial_dim
        self.slice_transform = slice_transform
        self.sw_batch_size = sw_batch_size
        self.output_mode = output_mode
        self.inferer = inferer

    def __call__(
        self, inputs: torch.Tensor, network: Callable[..., torch.Tensor], *args: Any, **kwargs: Any
    ) -> torch.Tensor:
        """Run ``network(batch_of_slices, *args, **kwargs)`` over all slices of ``inputs``."""
        if inputs.ndim not in (4, 5):
            raise ValueError(f"expected (B, C, H, W) or (B, C, X, Y, Z) input, got shape {tuple(inputs.shape)}")
        plain = inputs.as_tensor() if isinstance(inputs, MetaTensor) else inputs
        # slices as (B, D, C, H, W) with D = 1 for 2D input
        slices = plain.unsqueeze(1) if plain.ndim == 4 else plain.movedim(2 + self.spatial_dim, 1)
        batch, depth = slices.shape[:2]
        flat = slices.reshape(batch * depth, *slices.shape[2:])
        outputs = []
        for start in range(0, flat.shape[0], self.sw_batch_size):
            chunk = flat[start : start + self.sw_batch_size]
            prepared = torch.stack([self._prepare(s) for s in chunk])
            if self.inferer is None:
                predicted = network(prepared, *args, **kwargs)
            else:
                predicted = self.inferer(prepared, network, *args, **kwargs)
            if predicted.shape[2:] != chunk.shape[2:]:
                predicted = F.interpolate(predicted, size=tuple(chunk.shape[2:]), mode=self.output_mode)
            outputs.append(predicted)
        stacked = torch.cat(outputs).reshape(batch, depth, -1, *flat.shape[2:])
        result = stacked.squeeze(1) if plain.ndim == 4 else stacked.movedim(1, 2 + self.spatial_dim)
        return convert_to_dst_type(result, inputs, dtype=result.dtype)[0]

    def _prepare(self, image: torch.Tensor) -> torch.Tensor:
        if self.slice_transform is None:
            return image
        prepared = self.slice_transform(image)
        return prepared.as_tensor() if isinstance(prepared, MetaTensor) else torch.as_tensor(prepared)
