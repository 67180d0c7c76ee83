"""``LoadClinicalImage(d)``: one loader for every clinical input a bundle accepts."""

from __future__ import annotations

import warnings
from collections.abc import Hashable, Mapping, Sequence
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import torch
from monai.config import KeysCollection, PathLike
from monai.data import MetaTensor, NibabelReader, PILReader
from monai.data.utils import affine_to_spacing
from monai.transforms import LoadImage, MapTransform, Transform
from monai.utils import MetaKeys, SpaceKeys
from PIL import Image

from custom_networks.clinical.dicom_files import read_header
from custom_networks.clinical.dicom_series import (
    DicomSeries,
    SeriesRules,
    discover_series,
    read_volume,
    select_series,
    sort_series,
)
from custom_networks.clinical.errors import CaseError, one_line
from custom_networks.clinical.meta import (
    FORM_DICOM_FILE,
    FORM_DICOM_FOLDER,
    FORM_IMAGE_FILE,
    FORM_NIFTI_FILE,
    INPUT_KIND_KEY,
    KIND_DICOM_RADIOGRAPH,
    KIND_DICOM_SERIES,
    KIND_IMAGE_2D,
    KIND_NIFTI,
    SOURCE_FILES_KEY,
)
from custom_networks.clinical.radiograph import is_radiograph, load_radiograph

__all__ = ["IMAGE_SUFFIXES", "NIFTI_SUFFIXES", "LoadClinicalImage", "LoadClinicalImaged", "grey_or_rgb", "input_form"]

NIFTI_SUFFIXES = (".nii", ".nii.gz")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")
_GREY_PIL_MODES = ("L", "I", "I;16", "F")


def input_form(path: PathLike) -> str:
    """What ``path`` is: a NIfTI file, a DICOM folder, a DICOM file or a 2D image file such as PNG/JPG/TIFF.

    Returns one ``FORM_*`` of :mod:`~custom_networks.clinical.meta`.
    """
    path = Path(path)
    if path.is_dir():
        return FORM_DICOM_FOLDER
    if not path.is_file():
        raise CaseError(path, "no such file or folder")
    name = path.name.lower()
    if name.endswith(NIFTI_SUFFIXES):
        return FORM_NIFTI_FILE
    if name.endswith(IMAGE_SUFFIXES):
        return FORM_IMAGE_FILE
    if name.endswith(".dcm") or pydicom.misc.is_dicom(path):
        return FORM_DICOM_FILE
    raise CaseError(
        path,
        "unrecognised input: expected a NIfTI file, a PNG/JPG/TIFF/BMP image, a DICOM file or a folder holding a "
        "DICOM series",
    )


def grey_or_rgb(image: Image.Image) -> Image.Image:
    """PILReader converter: keep greyscale modes, turn palette, alpha and CMYK images into L or RGB."""
    if image.mode in _GREY_PIL_MODES:
        return image
    return image.convert("L" if image.mode in ("1", "LA") else "RGB")


class LoadClinicalImage(Transform):
    """Load a clinical case as a channel-first ``MetaTensor`` whose affine places it as MONAI's readers do.

    Accepts a NIfTI file (MONAI ``NibabelReader``; a 4D file only when its 4th dimension holds exactly
    ``expected_channels`` > 1 channels, e.g. the three MR contrasts of the LGG bundles), a PNG/JPG/TIFF/BMP image
    (``PILReader``), a folder holding DICOM series
    (several series are resolved by ``modalities`` / ``series_description`` / ``prefer_most_slices``), a
    single-frame radiograph (CR/DX; MONOCHROME1 inverted) or a single DICOM slice.

    DICOM is read here rather than through ``PydicomReader`` or ``ITKReader``: ``PydicomReader`` orders slices by
    InstanceNumber and takes the slice spacing from the z coordinate alone; ``ITKReader`` chooses among series by
    its own rule and decodes with GDCM's codecs; neither reports gaps, duplicates or mixed orientation, lists the
    slice files in order, or handles MONOCHROME1. The array layout and RAS affine are the same as theirs.

    Meta-data added: ``clinical_input_kind`` (``nifti``, ``dicom_series``, ``dicom_radiograph``, ``image_2d``)
    and, for DICOM, ``dicom_source_files``: the source paths in slice order (for a SEG to reference).

    Args:
        modalities: accepted DICOM Modality values (of the series of a folder, or of a single DICOM file); empty
            accepts any.
        series_description: regular expression a chosen series' SeriesDescription must contain.
        prefer_most_slices: among several matching series take the one with most slices.
        expected_channels: the number of channels the bundle's network takes; other counts are rejected.
        dtype: data type of the returned image.

    Raises:
        CaseError: ``"<path>: <reason>"`` for every input that cannot be used safely.
    """

    def __init__(
        self,
        modalities: Sequence[str] = (),
        series_description: str | None = None,
        prefer_most_slices: bool = True,
        expected_channels: int | None = None,
        dtype: np.dtype | type = np.float32,
    ) -> None:
        self.rules = SeriesRules(tuple(modalities), series_description, prefer_most_slices)
        self.expected_channels = expected_channels
        self.dtype = dtype
        with warnings.catch_warnings():
            # LoadImage also builds every default reader; the GPU DICOM one warns that nvImageCodec is missing,
            # which concerns neither reader used here
            warnings.filterwarnings("ignore", message="NvImgCodecPydicomReader")
            self.nifti_loader = LoadImage(
                reader=NibabelReader(squeeze_non_spatial_dims=True),
                image_only=True,
                ensure_channel_first=True,
                dtype=dtype,
            )
            self.image_loader = LoadImage(
                reader=PILReader(converter=grey_or_rgb), image_only=True, ensure_channel_first=True, dtype=dtype
            )

    def __call__(self, path: PathLike) -> MetaTensor:
        path = Path(path)
        form = input_form(path)
        if form == FORM_NIFTI_FILE:
            image = self._load_nifti(path)
        elif form == FORM_IMAGE_FILE:
            image = self._load_with(self.image_loader, path, "image file")
            image.meta[INPUT_KIND_KEY] = KIND_IMAGE_2D
        elif form == FORM_DICOM_FOLDER:
            series = select_series(path, discover_series(path), self.rules)
            image = self._dicom_image(path, series)
        else:
            header = read_header(path)
            self._check_modality(path, header)
            series = DicomSeries(str(header.get("SeriesInstanceUID", "")), (path,), (header,))
            image = self._dicom_image(path, series)
        self._check_values(path, image)
        return image

    def _load_with(self, loader: LoadImage, path: Path, what: str) -> MetaTensor:
        try:
            return loader(str(path))
        except Exception as error:
            # LoadImage lists every reader's traceback; the last line is the reader's own complaint
            last = str(error).strip().splitlines()[-1] if str(error).strip() else type(error).__name__
            raise CaseError(path, f"truncated or corrupt {what} ({type(error).__name__}: {one_line(last)})") from error

    def _load_nifti(self, path: Path) -> MetaTensor:
        try:
            shape = nib.load(path).shape
        except Exception as error:
            raise CaseError(path, f"corrupt NIfTI header ({type(error).__name__}: {error})") from error
        spatial = tuple(s for i, s in enumerate(shape) if i < 3 or s != 1)
        channels = self.expected_channels or 1
        if len(spatial) > 3 and not (len(spatial) == 4 and channels > 1 and spatial[3] == channels):
            also = f" (or {channels} channels in the 4th dimension)" if channels > 1 else ""
            raise CaseError(
                path, f"{len(spatial)}D NIfTI (shape {tuple(shape)}): give one 2D or 3D image per file{also}"
            )
        image = self._load_with(self.nifti_loader, path, "NIfTI file")
        image.meta[INPUT_KIND_KEY] = KIND_NIFTI
        return image

    def _check_modality(self, path: Path, header: pydicom.Dataset) -> None:
        """A single DICOM file passes the same modality rule as the series of a folder."""
        modality = str(header.get("Modality", ""))
        if self.rules.modalities and modality.upper() not in {m.upper() for m in self.rules.modalities}:
            raise CaseError(path, f"modality {modality or '(missing)'} is not one of {list(self.rules.modalities)}")

    def _dicom_image(self, path: Path, series: DicomSeries) -> MetaTensor:
        """A radiograph (one projection image, also when alone in a folder) or a volume of slices."""
        if len(series.files) == 1 and is_radiograph(series.headers[0]):
            source = series.files[0]
            pixels, affine, extra = load_radiograph(source, series.headers[0])
            meta = {**extra, INPUT_KIND_KEY: KIND_DICOM_RADIOGRAPH, SOURCE_FILES_KEY: [str(source)]}
            return _meta_tensor(path, pixels.astype(self.dtype), affine, meta)
        geometry = sort_series(series)
        volume = read_volume(geometry, self.dtype)
        meta = {
            MetaKeys.SPACE: SpaceKeys.RAS,
            INPUT_KIND_KEY: KIND_DICOM_SERIES,
            SOURCE_FILES_KEY: [str(f) for f in geometry.files],
        }
        return _meta_tensor(path, volume[None], geometry.ras_affine, meta)

    def _check_values(self, path: Path, image: MetaTensor) -> None:
        if self.expected_channels is not None and image.shape[0] != self.expected_channels:
            raise CaseError(
                path, f"wrong number of channels: {image.shape[0]}, the bundle expects {self.expected_channels}"
            )
        non_finite = int((~torch.isfinite(image.as_tensor())).sum())
        if non_finite:
            raise CaseError(path, f"{non_finite} NaN or infinite voxel values")


def _meta_tensor(path: Path, array: np.ndarray, affine: np.ndarray, extra: dict) -> MetaTensor:
    """A channel-first MetaTensor with the meta-data keys MONAI's readers set."""
    meta = {
        "filename_or_obj": str(path),
        MetaKeys.ORIGINAL_AFFINE: affine,
        MetaKeys.SPATIAL_SHAPE: np.asarray(array.shape[1:]),
        MetaKeys.ORIGINAL_CHANNEL_DIM: float("nan"),
        "spacing": affine_to_spacing(affine, r=array.ndim - 1),
        **extra,
    }
    return MetaTensor(torch.as_tensor(np.ascontiguousarray(array)), affine=torch.as_tensor(affine), meta=meta)


class LoadClinicalImaged(MapTransform):
    """Dictionary version of :class:`LoadClinicalImage`: replaces each path under ``keys`` with the loaded image.

    Args:
        keys: keys of the paths to load.
        modalities, series_description, prefer_most_slices, expected_channels, dtype: as for
            :class:`LoadClinicalImage`.
        allow_missing_keys: do not raise for absent keys.
    """

    def __init__(
        self,
        keys: KeysCollection,
        modalities: Sequence[str] = (),
        series_description: str | None = None,
        prefer_most_slices: bool = True,
        expected_channels: int | None = None,
        dtype: np.dtype | type = np.float32,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.loader = LoadClinicalImage(modalities, series_description, prefer_most_slices, expected_channels, dtype)

    def __call__(self, data: Mapping[Hashable, PathLike]) -> dict[Hashable, MetaTensor]:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = self.loader(d[key])
        return d
