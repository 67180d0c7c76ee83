"""Active learning that asks the model: the next image to label is the one it is least sure of.

MONAI Label's model-based strategies (``Epistemic``) need a scoring task that runs dropout many times over whole
volumes and a network built with dropout; this project's networks have none. :class:`FlipDisagreement` uses
test-time augmentation instead: the bundle segments a few slices of each unlabelled image as they are and mirrored
(then mirrored back); where the two predictions differ the model is unsure. The image with the largest mean
difference of the class probabilities is the next sample. The bundle's preprocessing, inferer and network (its
``checkpoint_loader`` loading the weights) come from the project's runtime (:func:`prepare_bundle`); only a few
evenly spaced slices of a volume are scored, so a request costs a few network calls per image.

Example: ``GET /activelearning/flip_disagreement`` with ``{"model": "brain_tumor_mri_gsconv_eca_unet"}``.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path

import numpy as np
import torch
from ignite.engine import Engine
from monailabel.interfaces.datastore import Datastore
from monailabel.interfaces.tasks.strategy import Strategy

from custom_networks.clinical.errors import one_line
from custom_networks.errors import InputError, closest
from custom_networks.runtime.bundle_run import prepare_bundle

__all__ = ["FlipDisagreement", "flip_disagreement", "load_bundle_network"]

logger = logging.getLogger(__name__)


def flip_disagreement(image: torch.Tensor, network: Callable, inferer: Callable, slice_axis: int,
                      slices: int = 3) -> float:
    """Mean total-variation distance between the class probabilities of ``image`` and of its mirror image
    (mirrored back), over ``slices`` evenly spaced slices of a volume: 0 when mirroring changes nothing, 1 when
    every pixel changes class with certainty.

    Args:
        image: channel-first ``(C, H, W)`` or ``(C, X, Y, Z)``, preprocessed by the bundle.
        network, inferer: the bundle's (``inferer(batch, network)`` gives logits).
        slice_axis: spatial axis a volume is cut along; the mirror is the first other spatial axis.
        slices: at most this many slices of a volume are scored.
    """
    batch = torch.as_tensor(image)[None].float()
    in_plane = 2
    if batch.ndim == 5:
        depth = batch.shape[2 + slice_axis]
        chosen = torch.as_tensor(np.unique(np.linspace(0, depth - 1, min(slices, depth)).round().astype(int)))
        batch = batch.index_select(2 + slice_axis, chosen)
        in_plane = 2 + (1 if slice_axis == 0 else 0)
    with torch.no_grad():
        plain = torch.softmax(torch.as_tensor(inferer(batch, network)).float(), dim=1)
        mirrored = inferer(torch.flip(batch, dims=[in_plane]), network)
        mirrored = torch.flip(torch.softmax(torch.as_tensor(mirrored).float(), dim=1), dims=[in_plane])
    return float(0.5 * (plain - mirrored).abs().sum(dim=1).mean())


def load_bundle_network(folder: Path, overrides: Mapping[str, object]) -> tuple[Callable, Callable, Callable, int]:
    """The bundle's inference ``network`` (eval mode, ``models/model.pt`` loaded by its own ``checkpoint_loader``),
    ``preprocessing`` of an image path, ``inferer`` and ``slice_axis``, built by the runtime on the CPU.

    Only these ids are parsed: the bundle's writers (highdicom) are not built, which the MONAI Label environment
    could not import; the ``checkpoint_loader`` handler is given an idle ignite ``Engine`` to attach to."""
    run = prepare_bundle(folder, model="torch", weights=folder / "models" / "model.pt", device="cpu",
                         overrides=overrides)
    with tempfile.TemporaryDirectory() as unused_outputs:
        parser = run.workflow(output_dir=unused_outputs, **{"dataset#data": [], "handlers": []}).parser
        network = parser.get_parsed_content("network")
        parser.get_parsed_content("checkpoint_loader")(Engine(lambda engine, batch: None))
        preprocessing = parser.get_parsed_content("preprocessing")
        return (network.eval(), lambda path: preprocessing({"image": path})["image"],
                parser.get_parsed_content("inferer"), int(parser.get_parsed_content("slice_axis")))


class FlipDisagreement(Strategy):
    """The unlabelled image whose segmentation changes most when it is mirrored (:func:`flip_disagreement`).

    Args:
        bundles: served bundle name -> its folder (``models/model.pt`` holds the weights), for the bundles with
            weights; the request's ``model`` picks one (default: the first).
        overrides: bundle name -> config overrides (the widths of the weights).
        slices: slices scored per volume.
    """

    def __init__(self, bundles: Callable[[], Mapping[str, Path]], overrides: Mapping[str, dict], slices: int = 3):
        super().__init__("The image the model is least sure of (segmentation vs mirrored segmentation)")
        self.bundles = bundles
        self.overrides = overrides
        self.slices = slices

    def _bundle(self, request: Mapping) -> tuple[str, Path]:
        bundles = self.bundles()
        if not bundles:
            raise InputError("flip_disagreement: no bundle has weights yet; give weights or train one first")
        name = request.get("model") or next(iter(bundles))
        if name not in bundles:
            hint = closest(name, list(bundles))
            raise InputError(f"model {name}: no served bundle with weights of that name"
                             f"{f'; did you mean {hint}?' if hint else ''}", parameter="model")
        return name, bundles[name]

    def __call__(self, request, datastore: Datastore):
        images = datastore.get_unlabeled_images(request.get("label_tag"), request.get("labels"))
        if not images:
            return None
        name, folder = self._bundle(request)
        network, load, inferer, slice_axis = load_bundle_network(folder, self.overrides.get(name, {}))
        scores = {}
        for image in sorted(images):
            try:
                scores[image] = flip_disagreement(load(datastore.get_image_uri(image)), network, inferer, slice_axis,
                                                  self.slices)
            except Exception as error:  # a bad image is not a reason to stop choosing among the others
                logger.warning(f"flip_disagreement: {image} not scored: {one_line(error)}")
        scored = {image: score for image, score in scores.items() if np.isfinite(score)}
        if not scored:
            return None
        chosen = max(scored, key=scored.get)
        logger.info(f"flip_disagreement ({name}): {chosen} ({scored[chosen]:.4f}) among {len(scored)} images")
        return {"id": chosen, "disagreement": scored[chosen], "model": name}
