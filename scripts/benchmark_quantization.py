"""
Size, CPU latency and accuracy of each bundle's network as fp32 torch, fp32 onnxruntime, dynamic int8 and static
int8 ONNX; writes the tables into docs/quantization.md.

Two phases, each storing its numbers in <work>/results.json so they can run at different times:

- ``accuracy``: writes a demo dataset per task (128 x 128, split 0.6 / 0.2 / 0.2 by patient), trains every bundle
  briefly at reduced widths through ``python -m monai.bundle run`` (two at a time, one thread each), exports it
  with ``export_bundle`` (static model calibrated on 32 training images), then segments the held-out "testing"
  split with the bundle's validation preprocessing and sliding-window inferer through each of the four models:
  Dice and IoU of the foreground, and the share of pixels whose label equals the fp32 torch label.
- ``speed``: the bundle's network at its full (paper) widths, untrained (seeded), exported the same way (static
  model calibrated on 8 demo training images at 256 x 256): file sizes, and median latency of one 256 x 256 image,
  batch 1, on ``--threads`` threads, the four variants timed in interleaved rounds. Run it when the machine is
  otherwise idle; the load average is recorded.

    python scripts/benchmark_quantization.py                    # both phases, about 40 minutes on 2 cores
    python scripts/benchmark_quantization.py --phases speed     # timing only (reuses stored accuracy numbers)
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import onnxruntime
import torch
from monai.bundle import ConfigParser
from monai.metrics import DiceMetric, MeanIoU
from monai.networks.utils import one_hot

from custom_networks.data import demo
from custom_networks.data.datalist import build_datalist, write_datalist
from custom_networks.deploy.bundle_export import export_bundle
from custom_networks.deploy.onnx_network import OnnxRuntimeNetwork
from custom_networks.profiling import cpu_description, median_latency, replace_section
from custom_networks.runtime.locate import bundle_folder
from custom_networks.runtime.overrides import bundle_cli_value

REPO = Path(__file__).resolve().parents[1]
VARIANTS = ("fp32 torch", "fp32 ORT", "dynamic int8", "static int8")
FILES = {"fp32 torch": "model.pt", "fp32 ORT": "model.onnx", "dynamic int8": "model_int8_dynamic.onnx",
         "static int8": "model_int8_static.onnx"}
# demo task, overrides of the brief training (reduced widths; SC-UNeXt's paper widths are already small)
REDUCED = [8, 16, 32, 64]
BUNDLES = {
    "brain_tumor_mri_gsconv_eca_unet": ("brain_tumor", {"network_def#features": REDUCED, "spatial_size": [128, 128]}),
    "lgg_mri_cbam_unet": ("lgg", {"network_def#features": REDUCED, "spatial_size": [128, 128]}),
    "chest_xray_lung_ag_min_aspp_unet": ("montgomery", {"network_def#features": REDUCED, "spatial_size": [96, 96]}),
    "isic2018_skin_sc_unext": ("isic2018", {"spatial_size": [96, 96]}),
    "lgg_mri_attention_res_unet": ("lgg", {"network_def#features": REDUCED, "spatial_size": [128, 128]}),
}
TRAINING = {"learning_rate": 0.003, "batch_size": 4, "num_workers": 0}
# paper 003 (Keras Attention Res-UNet, dynamic range quantization with TensorFlow Lite)
PAPER = {"size_mb": (127, 32), "latency_s": (0.3143, 0.1973), "miou_drop": 0.0004}


def write_demo_task(task: str, root: Path) -> Path:
    """A 128 x 128 demo dataset in the task's public layout with a 0.6 / 0.2 / 0.2 datalist."""
    if not (root / "datalist.json").is_file():
        if task == "brain_tumor":
            demo.write_brain_tumor_png(root, n_cases=40, size=128)
        elif task == "lgg":
            demo.write_lgg_tif(root, n_patients=10, slices_per_patient=8, size=128)
        elif task == "montgomery":
            demo.write_montgomery_cxr(root, n=40, size=128)
        else:
            demo.write_isic2018(root, n=40, sizes=((96, 128), (128, 128)))
        write_datalist(build_datalist(root, val_fraction=0.2, test_fraction=0.2, seed=0), root / "datalist.json")
    return root


def train(bundle: str, bundle_root: Path, dataset_dir: Path, epochs: int) -> float:
    """One brief training through the bundle CLI with one thread; returns its wall time in seconds."""
    overrides = {"bundle_root": str(bundle_root), "dataset_dir": str(dataset_dir), "train#trainer#max_epochs": epochs,
                 **TRAINING, **BUNDLES[bundle][1]}
    config = bundle_folder(bundle) / "configs" / "train.json"
    args = [sys.executable, "-m", "monai.bundle", "run", "--config_file", str(config)]
    for key, value in overrides.items():
        args += [f"--{key}", bundle_cli_value(value)]
    bundle_root.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    with open(bundle_root / "train.log", "w") as log:
        subprocess.run(args, cwd=bundle_root, stdout=log, stderr=subprocess.STDOUT, check=True,
                       env={**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"})
    return time.perf_counter() - start


def onnx_models(models: Path, threads: int) -> dict[str, OnnxRuntimeNetwork]:
    return {variant: OnnxRuntimeNetwork(models / FILES[variant], num_threads=threads) for variant in VARIANTS[1:]}


def evaluate(bundle: str, bundle_root: Path, dataset_dir: Path, threads: int) -> dict:
    """Dice, IoU and agreement with fp32 torch of every variant on the held-out split (evaluate.json's list)."""
    configs = bundle_folder(bundle) / "configs"
    parser = ConfigParser()
    parser.read_config([configs / "train.json", configs / "evaluate.json"])
    parser.update({"bundle_root": str(bundle_root), "dataset_dir": str(dataset_dir), **BUNDLES[bundle][1]})
    net = parser.get_parsed_content("network_def")
    net.load_state_dict(torch.load(bundle_root / "models" / "model.pt", map_location="cpu", weights_only=True))
    networks = {"fp32 torch": net.eval(), **onnx_models(bundle_root / "models", threads)}
    preprocessing = parser.get_parsed_content("validate#preprocessing")
    inferer = parser.get_parsed_content("validate#inferer")
    num_classes = parser.get_parsed_content("num_classes")
    data = [preprocessing(item) for item in parser.get_parsed_content("validate#dataset#data")]
    scores = {}
    reference: list[torch.Tensor] = []
    for variant, network in networks.items():
        dice, iou = DiceMetric(include_background=False), MeanIoU(include_background=False)
        agree = total = 0
        for i, item in enumerate(data):
            with torch.no_grad():
                label = inferer(item["image"][None].float(), network).argmax(dim=1, keepdim=True)
            truth = item["label"][None].long()
            dice(one_hot(label, num_classes), one_hot(truth, num_classes))
            iou(one_hot(label, num_classes), one_hot(truth, num_classes))
            if variant == "fp32 torch":
                reference.append(label)
            agree += int((label == reference[i]).sum())
            total += label.numel()
        scores[variant] = {"dice": float(dice.aggregate()), "iou": float(iou.aggregate()), "agreement": agree / total}
    return {"test_images": len(data), "scores": scores}


def accuracy_phase(args: argparse.Namespace, results: dict) -> None:
    work = args.work / "accuracy"
    datasets = {task: write_demo_task(task, args.work / "data" / task) for task, _ in BUNDLES.values()}
    jobs = {}
    with ThreadPoolExecutor(max_workers=2) as pool:
        for bundle in args.bundles:
            root = work / bundle
            if not (args.reuse_training and (root / "models" / "model.pt").is_file()):
                jobs[bundle] = pool.submit(train, bundle, root, datasets[BUNDLES[bundle][0]], args.epochs)
    for bundle in args.bundles:
        root, dataset_dir = work / bundle, datasets[BUNDLES[bundle][0]]
        export = export_bundle(root, dataset_dir=dataset_dir, config_dir=bundle_folder(bundle) / "configs",
                               overrides=BUNDLES[bundle][1], calibration_samples=32)
        entry = evaluate(bundle, root, dataset_dir, args.threads)
        entry.update(train_seconds=jobs[bundle].result() if bundle in jobs else None, epochs=args.epochs,
                     overrides=BUNDLES[bundle][1], calibration_samples=export.calibration_samples,
                     onnx_max_abs_diff=export.onnx_max_abs_diff)
        results.setdefault(bundle, {})["accuracy"] = entry
        print(bundle, json.dumps(entry["scores"]), flush=True)


def speed_phase(args: argparse.Namespace, results: dict) -> None:
    for bundle in args.bundles:
        task = BUNDLES[bundle][0]
        dataset_dir = write_demo_task(task, args.work / "data" / task)
        root = args.work / "speed" / bundle
        parser = ConfigParser()
        parser.read_config(bundle_folder(bundle) / "configs" / "inference.json")
        torch.manual_seed(0)
        net = parser.get_parsed_content("network_def").eval()
        (root / "models").mkdir(parents=True, exist_ok=True)
        torch.save(net.state_dict(), root / "models" / "model.pt")
        export_bundle(root, dataset_dir=dataset_dir, config_dir=bundle_folder(bundle) / "configs",
                      overrides={"spatial_size": [256, 256]}, calibration_samples=8)
        shape = (1, parser.get_parsed_content("in_channels"), 256, 256)
        networks = {"fp32 torch": net, **onnx_models(root / "models", args.threads)}
        # rounds interleave the variants, so that a change of the machine's load hits all of them alike
        rounds: dict[str, list[float]] = {variant: [] for variant in networks}
        loads = [os.getloadavg()[0]]
        for round_index in range(args.rounds):
            for variant, network in networks.items():
                warmup = args.warmup if round_index == 0 else 1
                rounds[variant].append(median_latency(network, shape, args.threads, warmup, args.repeats))
            loads.append(os.getloadavg()[0])
        latency = {variant: statistics.median(times) for variant, times in rounds.items()}
        entry = {
            "features": parser["network_def"].get("features"),
            "parameters": sum(p.numel() for p in net.parameters()),
            "size_bytes": {variant: (root / "models" / FILES[variant]).stat().st_size for variant in VARIANTS},
            "latency_s": latency,
            "latency_rounds_s": rounds,
            "load_average": [min(loads), max(loads)],
        }
        results.setdefault(bundle, {})["speed"] = entry
        print(bundle, json.dumps(latency), entry["load_average"], flush=True)
    results["speed_settings"] = {
        "cpu": cpu_description(), "threads": args.threads, "warmup": args.warmup, "repeats": args.repeats,
        "rounds": args.rounds, "torch": torch.__version__, "onnxruntime": onnxruntime.__version__,
        "date": time.strftime("%Y-%m-%d %H:%M"),
    }


TABLE_HEADER = [
    "| model | file | size (MB) | size ratio | latency (s) | latency ratio | Dice | IoU | pixels agreeing with fp32 |",
    "|---|---|---:|---:|---:|---:|---:|---:|---:|",
]
TARGETS_HEADER = [
    "| network | static size | static latency | static Dice drop | dynamic size | dynamic Dice drop |",
    "|---|---|---|---|---|---|",
]


def render(results: dict) -> str:
    settings = {key: "-" for key in ("cpu", "torch", "onnxruntime", "threads", "repeats", "rounds", "warmup", "date")}
    settings.update(results.get("speed_settings", {}))
    intro = (
        f"Written by `python scripts/benchmark_quantization.py`. Timing: {settings['cpu']}; torch {settings['torch']}, "
        f"onnxruntime {settings['onnxruntime']}, {settings['threads']} threads, batch 1, 1 x C x 256 x 256; the "
        f"variants are timed in {settings['rounds']} interleaved rounds of {settings['repeats']} passes (after "
        f"{settings['warmup']} warm-up passes in the first round, 1 in the others) and the median of the round medians "
        f"is reported ({settings['date']}). Size ratios are "
        "to the fp32 torch state dict (`model.pt`), latency ratios to fp32 torch."
    )
    lines, checks = ["## Measured tables", "", intro], []
    for bundle in BUNDLES:
        speed, accuracy = results.get(bundle, {}).get("speed"), results.get(bundle, {}).get("accuracy")
        if not (speed or accuracy):
            continue
        lines += ["", f"### {bundle}", ""]
        if speed:
            lines.append(
                f"Size and latency at the full widths {speed['features']} ({speed['parameters']:,} parameters, "
                f"untrained); 1-minute load average between {speed['load_average'][0]:.2f} and "
                f"{speed['load_average'][1]:.2f} while timing (2 cores)."
            )
        if accuracy:
            widths = accuracy["overrides"].get("network_def#features", "the full widths")
            lines.append(
                f"Dice / IoU / agreement at widths {widths}, trained {accuracy['epochs']} epochs on demo data with "
                f"{accuracy['overrides']['spatial_size'][0]} px windows, on {accuracy['test_images']} held-out images; "
                f"static model calibrated on {accuracy['calibration_samples']} training images; fp32 ONNX max |diff| "
                f"to torch {accuracy['onnx_max_abs_diff']:.1e}."
            )
        lines += ["", *TABLE_HEADER, *(_row(variant, speed, accuracy) for variant in VARIANTS)]
        if speed and accuracy:
            checks.append(_targets(bundle, speed, accuracy))
    targets = (
        "Static int8: size <= 0.27x, latency <= 0.6x fp32 torch, Dice drop <= 0.005. "
        "Dynamic int8: size <= 0.35x, Dice drop <= 0.005."
    )
    return "\n".join([*lines, "", "### Targets", "", targets, "", *TARGETS_HEADER, *checks])


def _row(variant: str, speed: dict | None, accuracy: dict | None) -> str:
    cells = [variant, f"`{FILES[variant]}`"]
    if speed:
        size, latency = speed["size_bytes"], speed["latency_s"]
        cells += [f"{size[variant] / 1e6:.1f}", f"{size[variant] / size['fp32 torch']:.3f}x",
                  f"{latency[variant]:.4f}", f"{latency[variant] / latency['fp32 torch']:.2f}x"]
    else:
        cells += ["-"] * 4
    if accuracy:
        score = accuracy["scores"][variant]
        cells += [f"{score['dice']:.4f}", f"{score['iou']:.4f}", f"{100 * score['agreement']:.2f} %"]
    else:
        cells += ["-"] * 3
    return "| " + " | ".join(cells) + " |"


def _targets(bundle: str, speed: dict, accuracy: dict) -> str:
    size, latency, scores = speed["size_bytes"], speed["latency_s"], accuracy["scores"]
    base_dice = scores["fp32 torch"]["dice"]
    measured = [
        (size["static int8"] / size["fp32 torch"], 0.27, "{:.3f}x"),
        (latency["static int8"] / latency["fp32 torch"], 0.6, "{:.2f}x"),
        (base_dice - scores["static int8"]["dice"], 0.005, "{:+.4f}"),
        (size["dynamic int8"] / size["fp32 torch"], 0.35, "{:.3f}x"),
        (base_dice - scores["dynamic int8"]["dice"], 0.005, "{:+.4f}"),
    ]
    cells = [f"{form.format(value)} {'met' if value <= limit else 'MISSED'}" for value, limit, form in measured]
    return f"| {bundle} | " + " | ".join(cells) + " |"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--phases", nargs="*", choices=("accuracy", "speed"), default=["accuracy", "speed"],
                        help="phases to run; none only rewrites the doc from the stored results")
    parser.add_argument("--bundles", nargs="+", choices=tuple(BUNDLES), default=list(BUNDLES))
    parser.add_argument("--work", type=Path, default=Path("/tmp/benchmark_quantization"),
                        help="demo data, trained bundles, exports and results.json")
    parser.add_argument("--epochs", type=int, default=12, help="training epochs of the accuracy phase")
    parser.add_argument("--reuse_training", action="store_true", help="keep checkpoints already in --work")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5, help="timed passes per round")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved timing rounds; the median is reported")
    parser.add_argument("--output", type=Path, default=REPO / "docs" / "quantization.md")
    args = parser.parse_args()
    store = args.work / "results.json"
    results = json.loads(store.read_text()) if store.is_file() else {}
    for phase in args.phases:
        (accuracy_phase if phase == "accuracy" else speed_phase)(args, results)
        args.work.mkdir(parents=True, exist_ok=True)
        store.write_text(json.dumps(results, indent=2))
    table = render(results)
    print(table)
    replace_section(args.output, "benchmark_quantization", table)
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
