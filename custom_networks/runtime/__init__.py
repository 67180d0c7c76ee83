"""The bundle runtime: the one place that knows how a bundle runs, called by every way in.

- :mod:`~custom_networks.runtime.locate`: where the bundles are (shipped in the package, or the checkout's).
- :mod:`~custom_networks.runtime.overrides`: config overrides checked against the bundle's config stack.
- :mod:`~custom_networks.runtime.bundle_run`: :func:`prepare_bundle` resolves config stack, model kind and file
  (int8 per CPU), weights hash and device into a :class:`BundleRun`, which builds the bundle's workflow.
- :mod:`~custom_networks.runtime.segmenter`: :class:`Segmenter`, the workflow built once for case after case.

The Python API (:func:`custom_networks.segment`), ``attention-unets``, the PACS jobs, the MONAI Label app and the
ablation runner all go through these. Importing this package loads neither torch nor MONAI.
"""

from custom_networks.runtime.bundle_run import (
    DEMO_CONFIG,
    DEMO_WEIGHTS,
    MODEL_CHOICES,
    MODEL_FILES,
    BundleRequest,
    BundleRun,
    build_workflow,
    check_device,
    demo_network_overrides,
    prepare_bundle,
)
from custom_networks.runtime.locate import BUNDLES_DIR_ENV, bundle_folder, bundle_names, bundles_dir
from custom_networks.runtime.overrides import check_overrides, config_ids
from custom_networks.runtime.segmenter import OUTPUT_KINDS, Segmenter, SegmentOutcome, output_kind

__all__ = [
    "BUNDLES_DIR_ENV",
    "DEMO_CONFIG",
    "DEMO_WEIGHTS",
    "MODEL_CHOICES",
    "MODEL_FILES",
    "OUTPUT_KINDS",
    "BundleRequest",
    "BundleRun",
    "SegmentOutcome",
    "Segmenter",
    "build_workflow",
    "bundle_folder",
    "bundle_names",
    "bundles_dir",
    "check_device",
    "demo_network_overrides",
    "check_overrides",
    "config_ids",
    "output_kind",
    "prepare_bundle",
]
