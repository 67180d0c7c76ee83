from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from monai.config import DtypeLike, KeysCollection, SequenceStr
from monai.data.meta_tensor import MetaTensor, get_spatial_ndim
from monai.transforms import Resize, Resized
from monai.transforms.spatial.functional import resize
from monai.utils import InterpolateMode, get_equivalent_dtype

__all__ = ["ResizeInPlane", "ResizeInPlaned"]


class ResizeInPlane(Resize):
    """
    Resize the first spatial dimensions (the image plane) to a fixed size and keep the others.

    A 2D network trained on images resized to (H, W) meets 2D images (C, h, w) and 3D volumes (C, h, w, d) at
    inference; the volume must become (C, H, W, d) so that a slice-by-slice inferer sees slices of the training
    size. MONAI's ``Resize`` needs ``spatial_size`` of the image's own rank (a 2D size raises on a volume, and a
    3D size with -1 turns a 2D image into a volume), so this class picks the size per input. Inverse (for
    ``Invertd``) is MONAI's: back to the original size.

    Args:
        spatial_size: the in-plane size, e.g. (256, 256).
        mode: interpolation mode, see ``monai.transforms.Resize``. Defaults to "area".
        align_corners: see ``monai.transforms.Resize``.
        anti_aliasing: see ``monai.transforms.Resize``.
        anti_aliasing_sigma: see ``monai.transforms.Resize``.
        dtype: data type for resampling computation. Defaults to float32.

    Input shape (C, h, w, *rest), output shape (C, *spatial_size, *rest).
    """

    def __init__(
        self,
        spatial_size: Sequence[int],
        mode: str = InterpolateMode.AREA,
        align_corners: bool | None = None,
        anti_aliasing: bool = False,
        anti_aliasing_sigma: Sequence[float] | float | None = None,
        dtype: DtypeLike | torch.dtype = torch.float32,
    ) -> None:
        super().__init__(
            spatial_size=tuple(spatial_size),
            mode=mode,
            align_corners=align_corners,
            anti_aliasing=anti_aliasing,
            anti_aliasing_sigma=anti_aliasing_sigma,
            dtype=dtype,
        )

    def __call__(
        self,
        img: torch.Tensor,
        mode: str | None = None,
        align_corners: bool | None = None,
        anti_aliasing: bool | None = None,
        anti_aliasing_sigma: Sequence[float] | float | None = None,
        dtype: DtypeLike | torch.dtype = None,
        lazy: bool | None = None,
    ) -> torch.Tensor:
        input_ndim = get_spatial_ndim(img)
        plane = tuple(self.spatial_size)
        if input_ndim < len(plane):
            raise ValueError(f"ResizeInPlane: image has {input_ndim} spatial dims, the plane size {plane} needs more.")
        current = img.peek_pending_shape() if isinstance(img, MetaTensor) else img.shape[1:]
        out_size = plane + tuple(int(s) for s in current[len(plane) :])
        return resize(  # type: ignore[no-any-return]
            img,
            out_size,
            self.mode if mode is None else mode,
            self.align_corners if align_corners is None else align_corners,
            get_equivalent_dtype(dtype or self.dtype or img.dtype, torch.Tensor),
            input_ndim,
            self.anti_aliasing if anti_aliasing is None else anti_aliasing,
            self.anti_aliasing_sigma if anti_aliasing_sigma is None else anti_aliasing_sigma,
            self.lazy if lazy is None else lazy,
            self.get_transform_info(),
        )


class ResizeInPlaned(Resized):
    """
    Dictionary-based wrapper of :py:class:`ResizeInPlane`; ``mode`` etc. may be given per key as in ``Resized``.

    Args:
        keys: keys of the items to resize.
        spatial_size: the in-plane size, e.g. (256, 256).
        mode: interpolation mode(s). Defaults to "area".
        align_corners: see ``monai.transforms.Resized``.
        anti_aliasing: see ``monai.transforms.Resized``.
        anti_aliasing_sigma: see ``monai.transforms.Resized``.
        dtype: data type(s) for resampling computation. Defaults to float32.
        allow_missing_keys: don't raise an exception if a key is missing.
    """

    def __init__(
        self,
        keys: KeysCollection,
        spatial_size: Sequence[int],
        mode: SequenceStr = InterpolateMode.AREA,
        align_corners: Sequence[bool | None] | bool | None = None,
        anti_aliasing: Sequence[bool] | bool = False,
        anti_aliasing_sigma: Sequence[Sequence[float] | float | None] | Sequence[float] | float | None = None,
        dtype: Sequence[DtypeLike | torch.dtype] | DtypeLike | torch.dtype = np.float32,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(
            keys,
            spatial_size=spatial_size,
            mode=mode,
            align_corners=align_corners,
            anti_aliasing=anti_aliasing,
            anti_aliasing_sigma=anti_aliasing_sigma,
            dtype=dtype,
            allow_missing_keys=allow_missing_keys,
        )
        # Resized keeps per-key options and the inverse; only the array transform differs.
        self.resizer = ResizeInPlane(spatial_size)
