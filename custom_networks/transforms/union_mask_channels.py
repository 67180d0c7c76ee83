from __future__ import annotations

from collections.abc import Hashable, Mapping

from monai.config import KeysCollection, NdarrayOrTensor
from monai.transforms import MapTransform, Transform
from monai.utils import TransformBackends, convert_to_tensor
from monai.utils.type_conversion import convert_to_dst_type

__all__ = ["UnionMaskChannels", "UnionMaskChannelsd"]


class UnionMaskChannels(Transform):
    """
    Binary union of the channels of a mask: a pixel is foreground (1) when any channel is at or above ``threshold``.

    Montgomery County chest X-rays come with two mask files, left and right lung, which ``LoadImage`` stacks
    as two channels; the lung field is their union. A single-channel 0/255 mask becomes a 0/1 mask, so the
    same transform serves every layout. MONAI's ``AsDiscrete(threshold=...)`` thresholds each channel
    separately and keeps the channel count.

    Args:
        threshold: a channel value at or above this marks foreground. Defaults to 0.5 (right for 0/1 and 0/255).

    Input shape (C, *spatial), output shape (1, *spatial) with values 0 and 1 in the input's dtype.
    """

    backend = [TransformBackends.TORCH]

    def __init__(self, threshold: float = 0.5) -> None:
        self.threshold = threshold

    def __call__(self, mask: NdarrayOrTensor) -> NdarrayOrTensor:
        mask_t = convert_to_tensor(mask, track_meta=True)
        union = (mask_t >= self.threshold).any(dim=0, keepdim=True).to(mask_t.dtype)
        out, *_ = convert_to_dst_type(union, mask)
        return out


class UnionMaskChannelsd(MapTransform):
    """
    Dictionary-based wrapper of :py:class:`UnionMaskChannels`.

    Args:
        keys: keys of the masks to merge.
        threshold: a channel value at or above this marks foreground. Defaults to 0.5.
        allow_missing_keys: don't raise an exception if a key is missing.
    """

    backend = UnionMaskChannels.backend

    def __init__(self, keys: KeysCollection, threshold: float = 0.5, allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)
        self.merger = UnionMaskChannels(threshold)

    def __call__(self, data: Mapping[Hashable, NdarrayOrTensor]) -> dict[Hashable, NdarrayOrTensor]:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = self.merger(d[key])
        return d
