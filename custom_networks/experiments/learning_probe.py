"""Does a network learn a small lesion? A short, instrumented training run on the MNI152 lesion set.

The ablation runner (``runner.py``) trains through each bundle's own ``train.json`` and answers "which variant is
better"; this probe answers the earlier question "does this network learn at all, and if not, where does the
signal die": it trains one network in memory on :mod:`custom_networks.data.lesion_slices` slices (DiceCE, Adam,
random flips, the same batches for every network given a seed) and records the validation Dice on slices with a
lesion, the foreground share the network predicts and its foreground probability on the lesion, next to it and
elsewhere (:class:`ValidationScores`), and per block the output's scale and the gradient reaching it, plus for
attention gates the gate's mean, the share of pixels it nearly closes (< 0.1) and its mean on lesion pixels, and the
share of the head's inputs that are 0 on the lesion. :func:`share_initial_weights` gives a paper network its
baseline's start, so that two runs differ by the switches alone.

Examples::

    >>> data = lesion_set(seed=5, n_train_patients=7, n_val_patients=3)
    >>> plain = bundle_network("lgg_mri_cbam_unet", {"use_cbam": False}, features=(8, 16, 32, 64, 128))
    >>> cbam = bundle_network("lgg_mri_cbam_unet", {}, features=(8, 16, 32, 64, 128))
    >>> share_initial_weights(cbam, plain)  # the same start for every layer the two share
    >>> train_probe(plain, data, steps=300, seed=0).best_dice, train_probe(cbam, data, steps=300, seed=0).best_dice
"""

from __future__ import annotations

import math
import time
from dataclasses import astuple, dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from monai.bundle import ConfigParser
from monai.losses import DiceCELoss

from custom_networks.data.lesion_slices import lesion_patient
from custom_networks.runtime.locate import bundle_folder

__all__ = [
    "LesionSet", "ProbeResult", "bundle_network", "lesion_set", "share_initial_weights", "train_probe",
    "ValidationScores", "validation_scores",
]


@dataclass
class LesionSet:
    """Slices as tensors: images (N, 3, S, S) z-scored per image inside the brain, masks (N, 1, S, S) in {0, 1}."""

    train_images: torch.Tensor
    train_masks: torch.Tensor
    val_images: torch.Tensor
    val_masks: torch.Tensor


@dataclass
class ProbeResult:
    """What one probe run measured.

    Attributes:
        curve: ``(step, dice, share, lesion_probability, background_probability, rim_probability)`` rows of
            :class:`ValidationScores` on the validation slices.
        block_stats: ``{step: {block: {"out_std": ..., "grad_norm": ..., "gate_mean": ..., "gate_closed": ...}}}``.
        best_dice: the highest validation Dice on the curve.
        seconds: training wall time.
    """

    curve: list[tuple[int, float, float]] = field(default_factory=list)
    block_stats: dict[int, dict[str, dict[str, float]]] = field(default_factory=dict)
    best_dice: float = 0.0
    seconds: float = 0.0


def _normalise(image: np.ndarray) -> np.ndarray:
    brain = image.sum(axis=-1) > 0
    out = np.zeros_like(image)
    for c in range(image.shape[-1]):
        values = image[..., c][brain]
        out[..., c] = np.where(brain, (image[..., c] - values.mean()) / (values.std() + 1e-6), 0.0)
    return out


def lesion_set(
    seed: int,
    n_train_patients: int = 7,
    n_val_patients: int = 3,
    slices_per_patient: int = 10,
    size: int = 128,
    source_size: int = 256,
) -> LesionSet:
    """Generate the lesion set at ``source_size`` and resize to ``size`` (split by patient, as for LGG).

    The defaults give 70 training and 30 validation slices of 128 px, the set issue 22 measured on.
    """
    rng = np.random.default_rng(seed)
    split = []
    for n_patients in (n_train_patients, n_val_patients):
        images, masks = [], []
        for _ in range(n_patients):
            for image, mask in lesion_patient(rng, slices_per_patient, source_size):
                images.append(_normalise(image).transpose(2, 0, 1))
                masks.append(mask[None].astype(np.float32))
        images_t = F.interpolate(torch.from_numpy(np.stack(images)), size=(size, size), mode="area")
        masks_t = (F.interpolate(torch.from_numpy(np.stack(masks)), size=(size, size), mode="area") >= 0.5).float()
        split += [images_t, masks_t]
    return LesionSet(*split)


def bundle_network(bundle: str, switches: dict | None = None, features=None, **network_args) -> torch.nn.Module:
    """The bundle's own ``network_def`` for three input channels and two classes, with switches and widths set."""
    parser = ConfigParser()
    parser.read_config(str(bundle_folder(bundle) / "configs" / "inference.json"))
    settings = {"in_channels": 3, "out_channels": 2, **(switches or {}), **network_args}
    if features is not None:
        settings["features"] = list(features)
    for key, value in settings.items():
        parser[f"network_def#{key}"] = value
    return parser.get_parsed_content("network_def", instantiate=True)


def share_initial_weights(network: torch.nn.Module, donor: torch.nn.Module) -> int:
    """Give ``network`` the donor's initial values for every tensor both have (same name and shape); returns the count.

    A paper network and its plain baseline built from one seed still start from different weights, because the
    attention modules draw from the random stream before the shared layers do; the head alone can then start the
    two on opposite sides of the all-foreground / all-background split (docs/ablations.md, issue 22). Sharing the
    baseline's initial weights leaves the switches as the only difference between the two runs.
    """
    own = network.state_dict()
    shared = {
        name: value for name, value in donor.state_dict().items() if name in own and own[name].shape == value.shape
    }
    network.load_state_dict(shared, strict=False)
    return len(shared)


RIM_PIXELS = 3  # at 128 px the halo reaches 0.7 lesion radii (2.5-8 px) beyond the core


@dataclass
class ValidationScores:
    """What the network predicts on the validation slices.

    Attributes:
        dice: mean Dice of the argmax mask over the slices that have a lesion.
        share: predicted / true foreground share over all slices (1 is right; ~300 is "foreground everywhere").
        lesion_probability: mean softmax foreground probability on lesion pixels.
        background_probability: the same on every other pixel. A network whose lesion probability stays above
            the background's but below 0.5 is learning slowly; one whose two probabilities stay equal is not.
        rim_probability: the same on the pixels within ``RIM_PIXELS`` of a lesion (where the generator puts the
            unlabelled oedema-like halo); close to the lesion probability: the network has found the lesion
            with its halo but does not yet tell the two apart.
    """

    dice: float
    share: float
    lesion_probability: float
    background_probability: float
    rim_probability: float


def validation_scores(network: torch.nn.Module, images: torch.Tensor, masks: torch.Tensor) -> ValidationScores:
    """Score ``network`` (in eval mode, then back to train mode) on ``images`` against ``masks``."""
    network.eval()
    with torch.no_grad():
        probability = torch.cat([network(images[i : i + 16]).softmax(1)[:, 1:2] for i in range(0, len(images), 16)])
    network.train()
    predicted = (probability > 0.5).float()  # argmax of two classes
    has_lesion = masks.flatten(1).sum(1) > 0
    overlap = (predicted * masks).flatten(1).sum(1)
    total = predicted.flatten(1).sum(1) + masks.flatten(1).sum(1)
    lesion = masks.bool()
    near = F.max_pool2d(masks, 2 * RIM_PIXELS + 1, stride=1, padding=RIM_PIXELS).bool()
    return ValidationScores(
        dice=(2 * overlap / total.clamp_min(1))[has_lesion].mean().item(),
        share=predicted.mean().item() / max(masks.mean().item(), 1e-9),
        lesion_probability=probability[lesion].mean().item(),
        background_probability=probability[~lesion].mean().item(),
        rim_probability=probability[near & ~lesion].mean().item(),
    )


def _watched_blocks(network: torch.nn.Module) -> dict[str, torch.nn.Module]:
    return {
        name: module
        for name, module in network.named_modules()
        if name == "bottleneck" or (name.startswith(("encoder.", "decoder.")) and name.count(".") == 1)
    }


def _gate_maps(network: torch.nn.Module) -> dict[str, torch.nn.Module]:
    """Modules whose output passed through a sigmoid is an attention gate (CBAM spatial gate conv, AG psi)."""
    return {name: module for name, module in network.named_modules() if name.endswith(("spatial_gate.conv", ".psi"))}


def _snapshot(network: torch.nn.Module, batch: torch.Tensor, target: torch.Tensor, loss_fn) -> dict:
    """Per block: output std and the gradient norm reaching it; per gate: mean, share below 0.1 and, for gates at
    the mask's resolution, the mean on lesion pixels (the lesion is ~0.2 % of the pixels: a gate can shut it
    while its overall mean and closed share look normal); for the head: the share of its input values that are 0
    on lesion pixels and elsewhere (where all are 0 the prediction is the head's bias, whatever the image shows)."""
    outputs, gates, stats = {}, {}, {}
    handles = []
    for name, module in _watched_blocks(network).items():
        handles.append(module.register_forward_hook(lambda m, i, o, name=name: outputs.__setitem__(name, o)))
    for name, module in _gate_maps(network).items():
        handles.append(module.register_forward_hook(lambda m, i, o, name=name: gates.__setitem__(name, o.detach())))
    head_input = {}
    if isinstance(getattr(network, "head", None), torch.nn.Module):
        handles.append(network.head.register_forward_pre_hook(lambda m, i: head_input.__setitem__("x", i[0].detach())))
    logits = network(batch)
    for output in outputs.values():
        output.retain_grad()
    loss_fn(logits, target).backward()
    for handle in handles:
        handle.remove()
    for name, output in outputs.items():
        grad = output.grad
        stats[name] = {
            "out_std": output.detach().std().item(),
            "grad_norm": 0.0 if grad is None else grad.norm().item(),
        }
    for name, logit in gates.items():
        gate = torch.sigmoid(logit)
        stats[name] = {"gate_mean": gate.mean().item(), "gate_closed": (gate < 0.1).float().mean().item()}
        if gate.shape[-2:] == target.shape[-2:] and gate.shape[1] == 1:
            lesion = target.bool()
            stats[name] |= {"gate_lesion": gate[lesion].mean().item(), "gate_background": gate[~lesion].mean().item()}
    if "x" in head_input and head_input["x"].shape[-2:] == target.shape[-2:]:
        off = (head_input["x"] == 0).float().mean(dim=1, keepdim=True)  # share of the head's inputs that are 0
        lesion = target.bool()
        stats["head"] = {
            "inputs_off_lesion": off[lesion].mean().item(),
            "inputs_off_background": off[~lesion].mean().item(),
        }
    network.zero_grad(set_to_none=True)
    return stats


def train_probe(
    network: torch.nn.Module,
    data: LesionSet,
    steps: int = 300,
    batch_size: int = 8,
    learning_rate: float = 1e-3,
    seed: int = 0,
    eval_every: int = 25,
    snapshot_steps: tuple[int, ...] = (),
    progress=None,
) -> ProbeResult:
    """Train ``network`` for ``steps`` Adam steps with DiceCE and random flips; evaluate every ``eval_every``.

    Batches and flips are drawn from ``seed`` alone, so two networks trained with one seed see the same data
    in the same order. ``snapshot_steps`` lists the steps (0 = at initialisation) at which block statistics are
    taken (on training slices with a lesion); ``progress(step, scores)`` is called after every evaluation with the
    step's :class:`ValidationScores`.
    """
    generator = torch.Generator().manual_seed(seed)
    loss_fn = DiceCELoss(to_onehot_y=True, softmax=True)
    optimizer = torch.optim.Adam(network.parameters(), lr=learning_rate)
    network.train()
    result = ProbeResult()
    n = len(data.train_images)
    start = time.perf_counter()
    with_lesion = torch.nonzero(data.train_masks.flatten(1).amax(1) > 0).flatten()
    snapshot_index = with_lesion[torch.randperm(len(with_lesion), generator=torch.Generator().manual_seed(seed + 1))]
    snapshot_index = snapshot_index[:batch_size]
    for step in range(steps + 1):
        if step in snapshot_steps:
            index = snapshot_index
            result.block_stats[step] = _snapshot(network, data.train_images[index], data.train_masks[index], loss_fn)
        if step % eval_every == 0 or step == steps:
            scores = validation_scores(network, data.val_images, data.val_masks)
            result.curve.append((step, *astuple(scores)))
            if progress is not None:
                progress(step, scores)
        if step == steps:
            break
        index = torch.randint(0, n, (batch_size,), generator=generator)
        images, masks = data.train_images[index], data.train_masks[index]
        flips = torch.rand(2, generator=generator)
        dims = [d for d, flip in zip((2, 3), flips, strict=True) if flip < 0.5]
        if dims:
            images, masks = images.flip(dims), masks.flip(dims)
        optimizer.zero_grad(set_to_none=True)
        loss = loss_fn(network(images), masks)
        if not math.isfinite(loss.item()):
            raise FloatingPointError(f"loss is {loss.item()} at step {step}")
        loss.backward()
        optimizer.step()
    result.seconds = time.perf_counter() - start
    result.best_dice = max(row[1] for row in result.curve)
    return result
