"""
End-to-end time of one 3D series through a bundle's clinical inference (``inference.json``, slice by slice) with
torch fp32, ONNX fp32 and the static int8 models, side by side in one run; writes a table into
docs/quantization.md (section ``benchmark_series``) unless ``--no-doc``.

The network is the bundle's ``network_def`` at its shipped (paper) widths, untrained (seed 0): timing does not
depend on the weights. It is exported with ``export_bundle`` (static int8 calibrated on ``--calibration`` demo
images at the series' in-plane size) into a work folder, and the series (a synthetic volume of ``--shape``, NIfTI)
is segmented by each model in interleaved rounds (``--rounds``), each run a fresh ``ConfigWorkflow`` of the
bundle's configs: loading, the slice-wise sliding-window inferer with ``spatial_size`` = the in-plane size,
postprocessing and the NIfTI mask writer. Every run reads the same file; the median over rounds is reported.

    python scripts/benchmark_series.py                                  # brain bundle, 256 x 256 x 150
    python scripts/benchmark_series.py --shape 256 256 40 --rounds 1    # a quick look
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import torch
from monai.bundle import ConfigParser, ConfigWorkflow
from scipy.ndimage import gaussian_filter

from custom_networks.data import demo
from custom_networks.deploy.bundle_export import export_bundle
from custom_networks.deploy.int8_models import INT8_MODEL_FILES, int8_model_for_this_cpu
from custom_networks.profiling import cpu_description, replace_section
from custom_networks.runtime.locate import bundles_dir

REPO = Path(__file__).resolve().parents[1]
DOC = REPO / "docs" / "quantization.md"


def synthetic_series(path: Path, shape: tuple[int, int, int], seed: int = 0) -> Path:
    """A smooth random volume with 1 mm x 1 mm x 3 mm voxels, as uint16 NIfTI."""
    volume = gaussian_filter(np.random.default_rng(seed).normal(size=shape), sigma=(4, 4, 1))
    volume = (volume - volume.min()) / np.ptp(volume) * 1000
    nib.save(nib.Nifti1Image(volume.astype(np.uint16), np.diag([1.0, 1.0, 3.0, 1.0])), path)
    return path


def untrained_bundle(bundle: Path, work: Path, window: list[int]) -> Path:
    """A copy of ``bundle``'s configs whose ``models/model.pt`` is its network, seeded, at the shipped widths."""
    root = work / "bundle"
    shutil.copytree(bundle / "configs", root / "configs")
    parser = ConfigParser()
    parser.read_config(root / "configs" / "inference.json")
    parser.update({"spatial_size": window})
    torch.manual_seed(0)
    (root / "models").mkdir()
    torch.save(parser.get_parsed_content("network_def").state_dict(), root / "models" / "model.pt")
    return root


def segment(root: Path, series: Path, output: Path, model: Path, window: list[int], threads: int) -> float:
    """Seconds for one run of the bundle's inference on ``series`` with ``model`` (a .pt or .onnx file)."""
    configs = [str(root / "configs" / "inference.json")]
    overrides = {"bundle_root": str(root), "dataset_dir": str(series), "output_dir": str(output),
                 "device": "$torch.device('cpu')", "spatial_size": window}
    if model.suffix == ".onnx":
        configs.append(str(root / "configs" / "inference_onnx.json"))
        overrides.update(onnx_model=str(model), onnx_num_threads=threads)
    start = time.perf_counter()
    workflow = ConfigWorkflow(config_file=configs, meta_file=str(root / "configs" / "metadata.json"),
                              logging_file=False, workflow_type="infer", **overrides)
    workflow.initialize()
    workflow.run()
    workflow.finalize()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bundle", type=Path, default=bundles_dir() / "brain_tumor_mri_gsconv_eca_unet")
    parser.add_argument("--shape", type=int, nargs=3, default=(256, 256, 150), help="columns rows slices")
    parser.add_argument("--rounds", type=int, default=2, help="interleaved rounds over the models (default 2)")
    parser.add_argument("--threads", type=int, default=2, help="torch and onnxruntime threads (default 2)")
    parser.add_argument("--calibration", type=int, default=8, help="calibration images (default 8)")
    parser.add_argument("--no-doc", action="store_true", help="print the table only")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    window = list(args.shape[:2])
    with tempfile.TemporaryDirectory(prefix="benchmark_series_") as tmp:
        work = Path(tmp)
        root = untrained_bundle(args.bundle, work, window)
        demo.write_brain_tumor_png(work / "data", n_cases=args.calibration + 4, size=window[0], seed=0)
        export = export_bundle(root, calibration_samples=args.calibration, dataset_dir=work / "data",
                               overrides={"spatial_size": window}, min_int8_agreement=0.0)
        series = synthetic_series(work / "series.nii.gz", tuple(args.shape))
        models = {"torch fp32": root / "models" / "model.pt", "ONNX fp32": export.onnx,
                  "static int8, int8 weights (VNNI / ARM)": root / "models" / INT8_MODEL_FILES["int8"],
                  "static int8, uint8 weights (x86 without VNNI)": root / "models" / INT8_MODEL_FILES["uint8"]}
        times: dict[str, list[float]] = {name: [] for name in models}
        for round_number in range(args.rounds):
            for name, model in models.items():
                seconds = segment(root, series, work / "out", model, window, args.threads)
                times[name].append(seconds)
                print(f"round {round_number + 1}: {name}: {seconds:.1f} s", flush=True)
        picked = Path(int8_model_for_this_cpu(root / "models")).name
    base = statistics.median(times["torch fp32"])
    lines = [
        f"Written by `python scripts/benchmark_series.py` ({time.strftime('%Y-%m-%d %H:%M')}): "
        f"{args.bundle.name} at its shipped widths, untrained, one {' x '.join(map(str, args.shape))} series "
        f"(NIfTI) through `inference.json` slice by slice, window {window[0]} x {window[1]}, median of "
        f"{args.rounds} interleaved round(s). CPU: {cpu_description()}; {args.threads} threads; 1-minute load "
        f"average {os.getloadavg()[0]:.2f} at the end. This CPU runs `{picked}` by default.",
        "",
        "| model | seconds per series | ms per slice | vs torch fp32 |",
        "|---|---:|---:|---:|",
    ]
    for name, values in times.items():
        seconds = statistics.median(values)
        lines.append(f"| {name} | {seconds:.1f} | {1000 * seconds / args.shape[2]:.0f} | {seconds / base:.2f}x |")
    table = "\n".join(lines)
    print(table)
    if not args.no_doc:
        replace_section(DOC, "benchmark_series", "## End to end: one 3D series\n\n" + table)


if __name__ == "__main__":
    main()
