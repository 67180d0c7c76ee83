"""Train named network variants on the MNI152 lesion set with the learning probe and write what each measured.

One JSON per variant (curve, block statistics at the snapshot steps, best Dice, seconds, machine) in --output.
Every variant starts from its bundle's plain baseline's initial weights (same seed) wherever the two share a layer,
so that the switches are the only difference. Run variants as separate processes (one thread each) to compare them
side by side on one machine:

    python scripts/diagnose_learning.py --variants plain cbam_paper --steps 300 --output /tmp/diagnosis
    python scripts/diagnose_learning.py --list

The variants are the bundles' networks with switches set (``VARIANTS`` below); see docs/ablations.md for the
diagnosis they served.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

from custom_networks.atomic_files import atomic_path
from custom_networks.experiments.learning_probe import bundle_network, lesion_set, share_initial_weights, train_probe
from custom_networks.experiments.provenance import machine, versions
from custom_networks.experiments.studies import BASELINE, STUDIES

# name: (bundle, network switches, learning rate); the cbam_* and gsconv_* candidates are the paper's form
# (multiplicative gates; GSConv blocks without a shortcut) with one thing changed; cbam_residual, gsconv_eca_shortcut
# and ag_min_aspp_shortcut are the bundles' defaults since their version 0.2.0
PAPER_CBAM = {"use_cbam": True, "residual_gates": False}
PAPER_GSCONV_ECA = {"use_gsconv": True, "use_eca": True, "gsconv_shortcut": False}
VARIANTS: dict[str, tuple[str, dict, float]] = {
    "plain": ("lgg_mri_cbam_unet", {"use_cbam": False}, 1e-3),
    "cbam_paper": ("lgg_mri_cbam_unet", PAPER_CBAM, 1e-3),
    "cbam_residual": ("lgg_mri_cbam_unet", {"use_cbam": True, "residual_gates": True}, 1e-3),
    "plain_lr3e-4": ("lgg_mri_cbam_unet", {"use_cbam": False}, 3e-4),
    "cbam_lr3e-4": ("lgg_mri_cbam_unet", PAPER_CBAM, 3e-4),
    "cbam_lr3e-3": ("lgg_mri_cbam_unet", PAPER_CBAM, 3e-3),
    "plain_no_norm": ("lgg_mri_cbam_unet", {"use_cbam": False, "norm": None}, 1e-3),
    "cbam_no_norm": ("lgg_mri_cbam_unet", {**PAPER_CBAM, "norm": None}, 1e-3),
    "cbam_gate_conv_bias": ("lgg_mri_cbam_unet", {**PAPER_CBAM, "norm_spatial_gate": False}, 1e-3),
    "cbam_channel_only": ("lgg_mri_cbam_unet", {**PAPER_CBAM, "cbam_gates": ["channel"]}, 1e-3),
    "cbam_spatial_only": ("lgg_mri_cbam_unet", {**PAPER_CBAM, "cbam_gates": ["spatial"]}, 1e-3),
    "cbam_not_last": ("lgg_mri_cbam_unet", {**PAPER_CBAM, "gate_last_block": False}, 1e-3),
    "gsconv_eca": ("brain_tumor_mri_gsconv_eca_unet", PAPER_GSCONV_ECA, 1e-3),
    "gsconv_eca_shortcut": ("brain_tumor_mri_gsconv_eca_unet", {**PAPER_GSCONV_ECA, "gsconv_shortcut": True}, 1e-3),
    "gsconv_eca_lr3e-3": ("brain_tumor_mri_gsconv_eca_unet", PAPER_GSCONV_ECA, 3e-3),
    "gsconv_eca_swish": ("brain_tumor_mri_gsconv_eca_unet", {**PAPER_GSCONV_ECA, "act": "swish"}, 1e-3),
    "gsconv_eca_leaky": (
        "brain_tumor_mri_gsconv_eca_unet", {**PAPER_GSCONV_ECA, "act": ["leakyrelu", {"negative_slope": 0.1}]}, 1e-3
    ),
    "gsconv_only": ("brain_tumor_mri_gsconv_eca_unet", {**PAPER_GSCONV_ECA, "use_eca": False}, 1e-3),
    "eca_only": ("brain_tumor_mri_gsconv_eca_unet", {"use_gsconv": False, "use_eca": True}, 1e-3),
    "ag_min_aspp": ("chest_xray_lung_ag_min_aspp_unet", {"gsconv_shortcut": False}, 1e-3),
    "ag_min_aspp_shortcut": ("chest_xray_lung_ag_min_aspp_unet", {"gsconv_shortcut": True}, 1e-3),
    "ag_min_aspp_standard_conv": ("chest_xray_lung_ag_min_aspp_unet", {"conv_block": "standard"}, 1e-3),
    "residual_unet": ("lgg_mri_attention_res_unet", {"attention": None}, 1e-3),
    "attention_res_unet": ("lgg_mri_attention_res_unet", {}, 1e-3),
    "unext_s": ("isic2018_skin_sc_unext", {"sc_skip": False, "use_cbam": False, "pyramid_fusion": False}, 1e-3),
    "sc_unext": ("isic2018_skin_sc_unext", {}, 1e-3),
}


def _run_variant(name: str, seed: int, data, args: argparse.Namespace) -> None:
    bundle, switches, rate = VARIANTS[name]
    torch.manual_seed(seed)
    baseline = bundle_network(bundle, _baseline_switches(bundle), features=args.features)
    torch.manual_seed(seed)
    network = bundle_network(bundle, switches, features=args.features)
    share_initial_weights(network, baseline)  # only the switches differ from the baseline run of this seed
    result = train_probe(
        network, data, steps=args.steps, learning_rate=rate, seed=seed, eval_every=args.eval_every,
        snapshot_steps=tuple(args.snapshots),
        progress=lambda step, scores, name=name: print(
            f"{name} step {step}: Dice {scores.dice:.3f}, foreground probability on lesion"
            f" {scores.lesion_probability:.3f}, within 3 px of it {scores.rim_probability:.3f},"
            f" elsewhere {scores.background_probability:.3f}",
            flush=True,
        ),
    )
    record = {
        "variant": name, "bundle": bundle, "switches": switches, "learning_rate": rate,
        "features": args.features, "size": args.size, "data_seed": args.data_seed, "seed": seed,
        "steps": args.steps, "threads": args.threads, "best_dice": result.best_dice, "seconds": result.seconds,
        "curve": result.curve, "block_stats": result.block_stats, "machine": machine(), "versions": versions(),
    }
    with atomic_path(args.output / f"{name}_seed{seed}.json") as path:
        path.write_text(json.dumps(record, indent=1))
    print(f"{name}: best Dice {result.best_dice:.3f} in {result.seconds:.0f} s", flush=True)


def _baseline_switches(bundle: str) -> dict:
    return next(study.variant(BASELINE).network for study in STUDIES.values() if study.bundle == bundle)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variants", nargs="+", default=["plain", "cbam_paper"], help="names from --list")
    parser.add_argument("--list", action="store_true", help="print the variants and exit")
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--eval-every", type=int, default=25)
    parser.add_argument("--snapshots", type=int, nargs="*", default=[0, 50, 150], help="steps with block statistics")
    parser.add_argument("--features", type=int, nargs="+", default=[8, 16, 32, 64, 128])
    parser.add_argument("--size", type=int, default=128, help="slice size in pixels")
    parser.add_argument("--data-seed", type=int, default=5, help="seed of the generated lesion set")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0], help="seeds of weights, batches and flips")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per variant")
    parser.add_argument("--output", type=Path, help="folder for <variant>_seed<seed>.json (required to run)")
    args = parser.parse_args(argv)
    if args.list:
        for name, (bundle, switches, rate) in VARIANTS.items():
            print(f"{name}: {bundle} {switches} lr {rate}")
        return 0
    if args.output is None:
        print("error: --output: required to run variants", file=sys.stderr)
        return 2
    unknown = [name for name in args.variants if name not in VARIANTS]
    if unknown:
        print(f"error: --variants: unknown {', '.join(unknown)} (see --list)", file=sys.stderr)
        return 2
    torch.set_num_threads(args.threads)
    data = lesion_set(args.data_seed, size=args.size)
    args.output.mkdir(parents=True, exist_ok=True)
    for seed in args.seeds:
        for name in args.variants:
            _run_variant(name, seed, data, args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
