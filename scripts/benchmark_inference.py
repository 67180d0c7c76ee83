"""Time clinical inference per case: load + preprocess, network, postprocess + write.

Cases (sizes are options): a 256 x 256 x 150 brain MR volume (the sample study's generator) as a DICOM series and
as NIfTI, through the brain tumour bundle (2D GSConv-ECA U-Net at the paper's widths, slice by slice), and a 2048 x
2048 12-bit MONOCHROME1 chest radiograph (DICOM CR) through the chest X-ray bundle. The networks are untrained
(time does not depend on the weights). Every step uses the objects the bundle's ``inference.json`` builds
(``preprocessing``, ``inferer``, ``network``, ``postprocessing``), run as ``SupervisedEvaluator`` runs them:

- load + preprocess: ``preprocessing`` (reading and checking the files) plus the inferer's own work around the
  network (per-slice normalization and resizing, sliding-window bookkeeping, stacking): the inferer's time minus
  the network's;
- network: the network's forward passes (timed by a wrapper around the module);
- postprocess + write: ``postprocessing`` (softmax, argmax, NIfTI mask, DICOM SEG, overlays, outcome record).

Results go to ``docs/benchmarks.md`` (section ``benchmark_inference``) with the CPU and the machine's load.

Example: python scripts/benchmark_inference.py
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
import torch
from monai.bundle import ConfigParser
from monai.data import decollate_batch, list_data_collate
from PIL import Image

from custom_networks.clinical import cases_datalist, discover_cases
from custom_networks.clinical.dicom_writer import write_radiograph, write_series
from custom_networks.data.demo import write_shenzhen_cxr
from custom_networks.data.sample_study import make_sample_study
from custom_networks.profiling import cpu_description, replace_section
from custom_networks.runtime.locate import bundles_dir

REPO = Path(__file__).resolve().parents[1]
MR_SPACING = (0.9, 0.9, 1.0)


class TimedNetwork(torch.nn.Module):
    """The network, adding the wall time of every forward pass to ``seconds``."""

    def __init__(self, network: torch.nn.Module) -> None:
        super().__init__()
        self.network = network
        self.seconds = 0.0
        self.calls = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        start = time.perf_counter()
        out = self.network(x)
        self.seconds += time.perf_counter() - start
        self.calls += 1
        return out


@dataclass
class Timing:
    bundle: str
    case: str
    shape: tuple[int, ...]
    load: float
    slice_work: float
    network: float
    network_calls: int
    post: float

    @property
    def total(self) -> float:
        return self.load + self.slice_work + self.network + self.post

    @property
    def other_share(self) -> float:
        return 1.0 - self.network / self.total


def write_cases(folder: Path, mr_shape: tuple[int, int, int], cxr_size: int) -> dict[str, Path]:
    """The MR volume as a DICOM series folder and as NIfTI, and the radiograph, each in its own dataset folder."""
    study = make_sample_study(shape=mr_shape, spacing=MR_SPACING, seed=7)
    mr = folder / "mr"
    write_series(mr / "mr_series", study.image, spacing=MR_SPACING, origin=study.lps_affine[:3, 3], shuffle_seed=1)
    nib.save(nib.Nifti1Image(study.image, study.ras_affine), mr / "mr_volume.nii.gz")
    pair = write_shenzhen_cxr(folder / "cxr_png", n=1, size=cxr_size, seed=0)[0]
    grey = np.asarray(Image.open(pair["image"]), dtype=np.float32)
    pixels = np.round(4095.0 - grey / 255.0 * 4095.0).astype(np.uint16)  # MONOCHROME1: bright = low values
    write_radiograph(folder / "cxr" / "chest_pa.dcm", pixels, "MONOCHROME1", imager_pixel_spacing=(0.15, 0.15))
    return {"brain_tumor_mri_gsconv_eca_unet": mr, "chest_xray_lung_ag_min_aspp_unet": folder / "cxr"}


def bundle_parts(bundles: Path, bundle: str, output_dir: Path) -> ConfigParser:
    configs = bundles / bundle / "configs"
    parser = ConfigParser()
    parser.read_config(configs / "inference.json")
    parser.read_meta(configs / "metadata.json")
    parser.update(
        {"output_dir": str(output_dir), "summary_dir": str(output_dir), "device": "cpu", "save_overlays": True}
    )
    return parser


def time_case(parser: ConfigParser, network: TimedNetwork, item: dict) -> Timing:
    """Run one case through the bundle's parts as ``SupervisedEvaluator`` does, timing each part."""
    preprocessing, inferer = parser.get_parsed_content("preprocessing"), parser.get_parsed_content("inferer")
    postprocessing = parser.get_parsed_content("postprocessing")
    start = time.perf_counter()
    batch = list_data_collate([preprocessing(item)])
    loaded_at = time.perf_counter()
    network.seconds, network.calls = 0.0, 0
    with torch.inference_mode():
        batch["pred"] = inferer(batch["image"], network)
    inferred_at = time.perf_counter()
    for output in decollate_batch(batch):
        postprocessing(output)
    done_at = time.perf_counter()
    return Timing(
        bundle=parser["bundle_name"],
        case=item["case"],
        shape=tuple(batch["image"].shape[1:]),
        load=loaded_at - start,
        slice_work=(inferred_at - loaded_at) - network.seconds,
        network=network.seconds,
        network_calls=network.calls,
        post=done_at - inferred_at,
    )


def report(timings: list[Timing], loads: tuple[tuple[float, ...], tuple[float, ...]], seconds: float) -> str:
    header = (
        "| bundle | case | input (C, ...) | load + preprocess (s) | network (s) | network calls "
        "| postprocess + write (s) | total (s) | not network |"
    )
    lines = [
        "## Clinical inference: time per case",
        "",
        "`python scripts/benchmark_inference.py`: each case through its bundle's own `preprocessing`, `inferer`,",
        "`network` and `postprocessing` (untrained networks at the paper's widths, `save_overlays` on).",
        '"load + preprocess" is the preprocessing (file reading and checks) + the inferer\'s work around the network',
        '(per-slice normalization and resizing, sliding-window bookkeeping); "network" is the forward passes alone.',
        "",
        header,
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for t in timings:
        lines.append(
            f"| {t.bundle} | {t.case} | {' x '.join(map(str, t.shape))} | {t.load:.2f} + {t.slice_work:.2f} "
            f"| {t.network:.1f} | {t.network_calls} | {t.post:.2f} | {t.total:.1f} | {100 * t.other_share:.1f} % |"
        )
    load_start, load_end = (", ".join(f"{v:.1f}" for v in load) for load in loads)
    lines += [
        "",
        f"CPU: {cpu_description()}; torch {torch.__version__}, {torch.get_num_threads()} threads.",
        f"Machine load (1, 5, 15 min averages): {load_start} at the start, {load_end} at the end, on 2 cores shared",
        "with other jobs, so absolute times are slower than on an idle machine; the shares are the steadier figure.",
        f"Whole benchmark: {seconds / 60:.1f} min.",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output", type=Path, default=REPO / "docs" / "benchmarks.md", help="Markdown file to update")
    parser.add_argument("--work", type=Path, default=None, help="working folder (default: a temporary one)")
    parser.add_argument("--bundles", type=Path, default=bundles_dir(), help="folder of the bundles")
    parser.add_argument("--mr-shape", type=int, nargs=3, default=(256, 256, 150), help="MR volume (256 256 150)")
    parser.add_argument("--cxr-size", type=int, default=2048, help="radiograph rows and columns (2048)")
    args = parser.parse_args(argv)
    work = args.work or Path(tempfile.mkdtemp(prefix="benchmark_inference_"))
    started, loads_at_start = time.perf_counter(), os.getloadavg()
    datasets = write_cases(work / "inputs", tuple(args.mr_shape), args.cxr_size)
    torch.manual_seed(0)
    timings = []
    for bundle, dataset_dir in datasets.items():
        bundle_config = bundle_parts(args.bundles, bundle, work / "outputs" / bundle)
        network = TimedNetwork(bundle_config.get_parsed_content("network_def").eval())
        with torch.inference_mode():  # first call pays one-time allocation and kernel selection costs
            network(torch.zeros(1, bundle_config["in_channels"], *bundle_config["spatial_size"]))
        for item in cases_datalist(discover_cases(dataset_dir)):
            timing = time_case(bundle_config, network, item)
            timings.append(timing)
            print(
                f"{bundle} {item['case']}: load {timing.load:.2f} s + inferer {timing.slice_work:.2f} s, network "
                f"{timing.network:.1f} s ({timing.network_calls} calls), post {timing.post:.2f} s, "
                f"not network {100 * timing.other_share:.1f} %",
                flush=True,
            )
    text = report(timings, (loads_at_start, os.getloadavg()), time.perf_counter() - started)
    replace_section(args.output, "benchmark_inference", text)
    print(f"\nwritten to {args.output}:\n\n{text}")


if __name__ == "__main__":
    main()
