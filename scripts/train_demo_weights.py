"""Train the demo weights of the brain tumour bundle on generated demo data and check them on the sample study.

Steps: write the Kaggle-layout demo brain tumour set (128 x 128 slices from the generator family of the sample
study) plus tumour-free slices of healthy sample-like heads (the Kaggle layout has a tumour in every slice; a
network that never saw a healthy slice marks a "tumour" in every slice of a volume), write the datalist, run the
bundle's ``train.json`` through ``python -m monai.bundle run`` with the network recorded in ``configs/demo.json``,
copy the best checkpoint to ``models/demo_model.pt``, then run the main job's command (``inference.json`` +
``demo.json``) on ``sample_data/`` and report the Dice of both masks against the sample study's known lesion. Fails
(exit 1) without copying when the validation Dice is below ``--min-dice``.

Example: python scripts/train_demo_weights.py --epochs 20
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import nibabel as nib
import numpy as np

from custom_networks.atomic_files import atomic_path
from custom_networks.data.datalist import build_datalist, write_datalist
from custom_networks.data.demo import write_brain_tumor_png
from custom_networks.data.sample_study import lesion_dice, write_lesion_free_slices
from custom_networks.runtime.bundle_run import demo_network_overrides
from custom_networks.runtime.locate import bundle_folder
from custom_networks.runtime.overrides import bundle_cli_value

BUNDLE = bundle_folder("brain_tumor_mri_gsconv_eca_unet")
# demo slices: the sample study's in-plane size, so that head and lesion sizes in pixels match
IMAGE_SIZE = 128


def bundle_run(configs: list[Path], overrides: dict, log: Path) -> str:
    """Run ``python -m monai.bundle run`` with its output going to ``log``; return the output, or stop on failure."""
    config_file = str(configs[0]) if len(configs) == 1 else json.dumps([str(c) for c in configs])
    command = [sys.executable, "-m", "monai.bundle", "run", "--config_file", config_file]
    for key, value in overrides.items():
        command += [f"--{key}", bundle_cli_value(value)]
    print(f"running {' '.join(command[1:5])} ... (log: {log})", flush=True)
    with open(log, "w") as stream:
        done = subprocess.run(command, check=False, cwd=log.parent, stdout=stream, stderr=subprocess.STDOUT)
    output = log.read_text()
    if done.returncode != 0:
        raise SystemExit(f"bundle run failed, exit {done.returncode}; end of {log}:\n{output[-3000:]}")
    return output


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bundle", type=Path, default=BUNDLE, help="bundle folder (default: the brain tumour bundle)")
    parser.add_argument("--work", type=Path, default=None, help="working folder (default: a temporary one)")
    parser.add_argument("--n-cases", type=int, default=120, help="demo images to generate (default 120)")
    parser.add_argument("--n-healthy", type=int, default=40, help="tumour-free slices to add (default 40)")
    parser.add_argument("--epochs", type=int, default=20, help="training epochs (default 20)")
    parser.add_argument("--learning-rate", type=float, default=3e-3, help="Adam learning rate (default 3e-3)")
    parser.add_argument("--batch-size", type=int, default=8, help="batch size (default 8)")
    parser.add_argument("--seed", type=int, default=1, help="seed of the demo images (default 1)")
    parser.add_argument("--min-dice", type=float, default=0.8, help="validation Dice required (default 0.8)")
    args = parser.parse_args(argv)

    configs = args.bundle / "configs"
    demo_network = demo_network_overrides(args.bundle)  # widths, switches and window the demo weights have
    work = args.work or Path(tempfile.mkdtemp(prefix="demo_weights_"))
    data, root = work / "data", work / "bundle_root"
    write_brain_tumor_png(data, n_cases=args.n_cases, size=IMAGE_SIZE, seed=args.seed)
    write_lesion_free_slices(data, first_index=args.n_cases + 1, n=args.n_healthy, seed=args.seed)
    datalist = build_datalist(data, val_fraction=0.2, test_fraction=0.1, seed=0)
    write_datalist(datalist, data / "datalist.json")
    splits = ", ".join(f"{len(datalist[split])} {split}" for split in ("training", "validation", "testing"))
    print(f"demo data: {data} ({splits})")

    overrides = {
        "bundle_root": str(root),
        "dataset_dir": str(data),
        **demo_network,
        "learning_rate": args.learning_rate,
        "batch_size": args.batch_size,
        "num_workers": 0,
        "train#trainer#max_epochs": args.epochs,
    }
    start = time.perf_counter()
    log = bundle_run([configs / "train.json"], overrides, work / "train.log")
    minutes = (time.perf_counter() - start) / 60
    best = re.findall(r"val_mean_dice best value: ([0-9.]+) at epoch: (\d+)", log)[-1]
    best_dice, best_epoch = float(best[0]), int(best[1])
    print(
        f"training: {args.epochs} epochs in {minutes:.1f} min; "
        f"best validation Dice {best_dice:.3f} (epoch {best_epoch})"
    )
    if best_dice < args.min_dice:
        raise SystemExit(f"validation Dice {best_dice:.3f} is below {args.min_dice}; demo weights not replaced")

    target = args.bundle / "models" / "demo_model.pt"
    with atomic_path(target) as temporary:
        shutil.copyfile(root / "models" / "model.pt", temporary)
    print(f"demo weights: {target} ({target.stat().st_size / 1e6:.2f} MB)")

    output = work / "sample_output"
    inference = {
        "bundle_root": str(args.bundle),
        "dataset_dir": str(args.bundle / "sample_data"),
        "output_dir": str(output),
        "summary_dir": str(output),
    }
    bundle_run([configs / "inference.json", configs / "demo.json"], inference, work / "inference.log")
    for mask in sorted(output.glob("*_seg.nii.gz")):
        print(f"sample study Dice, {mask.name}: {lesion_dice(np.asarray(nib.load(mask).dataobj)):.3f}")


if __name__ == "__main__":
    main()
