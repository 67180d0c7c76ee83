"""Series per hour of the PACS batch job (``attention-unets pacs-batch``) on this machine, with the time per stage.

A real Orthanc (``tests/orthanc_server.py``: Debian's ``orthanc`` + ``orthanc-dicomweb`` on 127.0.0.1, a temporary
folder) holds ``--series`` studies per bundle: sample-like brain MR series (``--mr-shape``, the sample study's
generator) for the brain tumour bundle and chest radiographs (DX, ``--cxr-size`` square) for the chest X-ray bundle.
Each bundle runs the whole job over DICOMweb (query, retrieve, decode, network, SEG encoding, store, verify) with
its torch model and its static-int8 ONNX model, the local engine and, with Ray installed, 2 Ray workers. The brain
bundle runs its shipped demo weights (``configs/demo.json`` widths); the chest bundle an untrained network at
``--chest-features`` (time per series does not depend on the weights). The int8 models are exported with
``custom_networks.deploy.export_bundle`` (calibrated on a small demo set) into the work folder.

The ratio end-to-end / network is the job's overhead: the batch's wall time (the query included) over the sum of
the network's time per series. Results go to ``docs/benchmarks.md`` (section ``benchmark_pacs``).

Example: python scripts/benchmark_pacs.py --series 6
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import requests
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))  # the Orthanc the tests use

from custom_networks.clinical.dicom_writer import Study, write_radiograph, write_series  # noqa: E402
from custom_networks.data import demo  # noqa: E402
from custom_networks.data.datalist import build_datalist, write_datalist  # noqa: E402
from custom_networks.data.sample_study import make_sample_study  # noqa: E402
from custom_networks.deploy.bundle_export import export_bundle  # noqa: E402
from custom_networks.pacs.client import QueryFilters  # noqa: E402
from custom_networks.pacs.connect import PacsConnection  # noqa: E402
from custom_networks.pacs.credentials import Credentials  # noqa: E402
from custom_networks.pacs.job import JobOptions, run_job  # noqa: E402
from custom_networks.pacs.processor import OutputOptions  # noqa: E402
from custom_networks.pacs.report import STAGES  # noqa: E402
from custom_networks.pacs.retry import RetryPolicy  # noqa: E402
from custom_networks.profiling import cpu_description, replace_section  # noqa: E402
from custom_networks.runtime import BundleRequest  # noqa: E402
from custom_networks.runtime.locate import bundle_folder  # noqa: E402

from orthanc_server import OrthancServer, free_port, orthanc_available  # noqa: E402

BRAIN, CHEST = "brain_tumor_mri_gsconv_eca_unet", "chest_xray_lung_ag_min_aspp_unet"


def write_studies(server: OrthancServer, root: Path, bundle: str, n: int, mr_shape, cxr_size: int) -> list[str]:
    """``n`` studies of one series each on the PACS; returns their StudyInstanceUIDs."""
    uids = []
    for k in range(n):
        study = Study()
        if bundle == BRAIN:
            image = make_sample_study(shape=mr_shape, seed=100 + k).image
            files = write_series(root / f"mr{k}", image, spacing=(0.9, 0.9, 5.0), study=study,
                                 description="AX T1", shuffle_seed=None).files
        else:
            rng = np.random.default_rng(k)
            pixels = rng.integers(0, 4095, (cxr_size, cxr_size)).astype(np.uint16)
            files = [write_radiograph(root / f"cxr{k}.dcm", pixels, modality="DX", study=study)]
        server.upload(files)
        uids.append(study.study_instance_uid)
    return uids


def model_files(bundle: str, work: Path, chest_features: list[int]) -> tuple[dict, dict[str, Path]]:
    """The bundle's config overrides and its torch and static-int8 model files for the benchmark."""
    root = work / f"{bundle}_root"
    (root / "models").mkdir(parents=True, exist_ok=True)
    if bundle == BRAIN:
        overrides = {key: value for key, value in json.loads((bundle_folder(BRAIN) / "configs" /
                                                              "demo.json").read_text()).items()
                     if key not in ("ckpt_path", "demo_weights")}
        shutil.copy(bundle_folder(BRAIN) / "models" / "demo_model.pt", root / "models" / "model.pt")
        task, size = "brain_tumor", 128
    else:
        from monai.bundle import ConfigParser

        overrides = {"network_def#features": chest_features, "spatial_size": [128, 128]}
        parser = ConfigParser()
        parser.read_config(str(bundle_folder(CHEST) / "configs" / "inference.json"))
        parser.update(overrides)
        torch.manual_seed(0)
        torch.save(parser.get_parsed_content("network_def").state_dict(), root / "models" / "model.pt")
        task, size = "montgomery", 128
    data = work / f"{bundle}_calibration"
    if task == "brain_tumor":
        demo.write_brain_tumor_png(data, n_cases=12, size=size)
    else:
        demo.write_montgomery_cxr(data, n=12, size=size)
    write_datalist(build_datalist(data, val_fraction=0.2, test_fraction=0.2, seed=0), data / "datalist.json")
    export_bundle(root, calibration_samples=8, dataset_dir=data, config_dir=bundle_folder(bundle) / "configs",
                  overrides=overrides, min_int8_agreement=0.0, held_out_samples=2)
    return overrides, {"torch": root / "models" / "model.pt", "int8": root / "models" / "model_int8_static.onnx"}


def run_once(server: OrthancServer, work: Path, bundle: str, model: str, weights: Path, overrides: dict,
             studies: list[str], engine: str) -> dict:
    """One whole job; returns series/hour, the mean seconds per stage and the overhead ratio."""
    name = f"{bundle}_{model}_{engine}"
    job = work / name
    connection = PacsConnection(server.dicomweb_url, Credentials(server.username, server.password),
                                retry=RetryPolicy(attempts=3, initial_delay_s=0.5))
    request = BundleRequest(bundle, model=model, weights=str(weights), device="cpu", overrides=overrides)
    options = JobOptions(connection, request, OutputOptions(str(job / "work" / "results")),
                         QueryFilters(study_uids=tuple(studies)), job / "jobs.sqlite", job / "report", job / "work",
                         engine=engine, workers=2)
    start = time.perf_counter()
    status = run_job(options)
    wall = time.perf_counter() - start
    summary = json.loads((job / "report" / "series.json").read_text())
    rows = summary["series"]
    done = [row for row in rows if row["outcome"] == "done"]
    if status != 0 or len(done) != len(studies):
        raise SystemExit(f"{name}: exit {status}, {len(done)} of {len(studies)} series done; see {job / 'report'}")
    stages = {stage: float(np.mean([row["seconds"].get(stage, 0.0) for row in done])) for stage in STAGES}
    network_total = sum(row["seconds"].get("network", 0.0) for row in done)
    per_series = sum(sum(row["seconds"].get(stage, 0.0) for stage in STAGES) for row in done)
    return {"bundle": bundle, "model": model, "engine": engine, "series": len(done), "wall_s": wall,
            "series_per_hour": len(done) / wall * 3600, "query_s": summary["run"]["query_seconds"], "stages": stages,
            "per_series_ratio": per_series / network_total, "job_ratio": wall / network_total}


def run_push(server: OrthancServer, work: Path, bundle: str, model: str, weights: Path, overrides: dict,
             studies: list[str], complete_after: float) -> dict:
    """The same series pushed by Orthanc (``/modalities/{id}/store``, as a routing rule sends them) to a push-mode
    AI node (``attention-unets pacs-listen``'s :class:`Listener`, one worker) that sends SEG and SR back by
    STOW-RS; the wall time runs from the push until the node has confirmed every result."""
    from custom_networks.pacs.listener import Listener, ListenerOptions
    from custom_networks.pacs.routing import rules_from_data

    job = work / f"{bundle}_{model}_push"
    rules = rules_from_data({"rules": [{"name": "all", "bundle": bundle, "model": model, "weights": str(weights),
                                        "device": "cpu", "overrides": overrides}]})
    port = free_port()
    options = ListenerOptions(ae_title="ATTUNETS_NODE", port=port, allowed_aets=(server.aet,), rules=rules,
                              spool=job / "spool", ledger=job / "jobs.sqlite", audit=job / "audit.jsonl",
                              complete_after=complete_after, send_to=server.dicomweb_url,
                              credentials=Credentials(server.username, server.password), report_dir=job / "report",
                              retry=RetryPolicy(attempts=3, initial_delay_s=0.5))
    listener = Listener(options).start()
    try:
        requests.put(f"{server.url}/modalities/attunets-node", auth=server.auth, timeout=30,
                     json={"AET": "ATTUNETS_NODE", "Host": "127.0.0.1", "Port": port}).raise_for_status()
        start = time.perf_counter()
        server.push("attunets-node", [server.lookup(uid) for uid in studies])
        if not listener.wait_idle(timeout=3600):
            raise SystemExit(f"{job}: the push-mode node did not finish within an hour")
        wall = time.perf_counter() - start
    finally:
        listener.stop()
    rows = json.loads((job / "report" / "series.json").read_text())["series"]
    done = [row for row in rows if row["outcome"] == "done"]
    if len(done) != len(studies):
        raise SystemExit(f"{job}: {len(done)} of {len(studies)} series done; see {job / 'report'}")
    stages = {stage: float(np.mean([row["seconds"].get(stage, 0.0) for row in done])) for stage in STAGES}
    network_total = sum(row["seconds"].get("network", 0.0) for row in done)
    per_series = sum(sum(row["seconds"].get(stage, 0.0) for stage in STAGES) for row in done)
    return {"bundle": bundle, "model": model, "engine": f"push ({complete_after:g} s)", "series": len(done),
            "wall_s": wall, "series_per_hour": len(done) / wall * 3600, "query_s": 0.0, "stages": stages,
            "per_series_ratio": per_series / network_total, "job_ratio": wall / network_total}


def render(results: list[dict], args: argparse.Namespace, query_note: str) -> str:
    header = ("| bundle | model | engine | series/h | query | " + " | ".join(STAGES)
              + " | per series / network | job / network |")
    lines = [
        "## PACS batch job: series per hour",
        "",
        f"`python scripts/benchmark_pacs.py --series {args.series}` on {cpu_description()}, "
        f"torch {torch.__version__}, {torch.get_num_threads()} torch thread(s); Orthanc on 127.0.0.1 over DICOMweb. "
        f"Brain: {args.series} MR series of {' x '.join(map(str, args.mr_shape))} (demo weights, demo.json "
        f"widths); chest: {args.series} DX radiographs of {args.cxr_size} x {args.cxr_size} (untrained network at "
        f"features {args.chest_features}). Mean seconds per series and stage; series/h from the whole job's wall "
        f"time (start, query, every series, report; Ray's start included for the Ray rows); load average "
        f"{os.getloadavg()[0]:.1f} at the end (other jobs share the machine). {query_note}",
        "",
        header,
        "|" + "---|" * (7 + len(STAGES)),
    ]
    for r in results:
        stages = " | ".join(f"{r['stages'][stage]:.3f}" for stage in STAGES)
        lines.append(f"| {r['bundle'].split('_')[0]} | {r['model']} | {r['engine']} | {r['series_per_hour']:.0f} | "
                     f"{r['query_s']:.3f} | {stages} | {r['per_series_ratio']:.2f} | {r['job_ratio']:.2f} |")
    within = [f"{r['bundle'].split('_')[0]} {r['model']} {r['engine']}" for r in results
              if r["per_series_ratio"] <= 1.15]
    largest = {}
    for r in results:
        other = {stage: value for stage, value in r["stages"].items() if stage != "network"}
        name = max(other, key=other.get)
        largest[name] = largest.get(name, 0) + 1
    lines += [
        "",
        "### Reading the PACS table",
        "",
        f"Within the 1.15 target per series in this run: {', '.join(within) or 'none'}. The largest stage after the "
        f"network: {', '.join(f'{name} ({count} rows)' for name, count in sorted(largest.items()))}; "
        "`postprocessing` is the bundle's own writers besides the SEG (the NIfTI mask, the overlay picture the "
        "report shows, the measurements).",
        "",
        "The target is end-to-end at most 1.15x the network time alone. *per series / network* is the sum of a "
        "series' stages (retrieve, decode, network, SEG encoding, other writers, store, verify) over its network "
        "time: what the job adds per series. *job / network* is the whole job's wall time over the summed network "
        "time: it also carries what is done once (imports, building the workflow and loading the model, starting "
        "Ray and its actors, the query, the report), so it falls towards the per-series ratio as batches grow. "
        "With 2 Ray workers each actor has one of the machine's 2 cores and one torch thread "
        "(`--threads-per-worker`, default 1); the local engine is one process with 2 torch threads.",
        "",
        "*push* rows: the same series pushed by Orthanc to `attention-unets pacs-listen` (one worker), results sent "
        "back by STOW-RS; the wall time runs from the push to the last confirmed result and includes the completion "
        "timeout (a series is complete when no instance has come for that long) once per batch, not per series, "
        "as series complete while earlier ones are processed.",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--series", type=int, default=6, help="series (one study each) per bundle (default 6)")
    parser.add_argument("--mr-shape", type=int, nargs=3, default=[128, 128, 24], help="MR columns rows slices")
    parser.add_argument("--cxr-size", type=int, default=1024, help="radiograph side in pixels (default 1024)")
    parser.add_argument("--chest-features", type=int, nargs="+", default=[8, 16, 32, 64])
    parser.add_argument("--bundles", nargs="+", default=[BRAIN, CHEST])
    parser.add_argument("--models", nargs="+", default=["torch", "int8"])
    parser.add_argument("--no-ray", action="store_true", help="skip the Ray rows")
    parser.add_argument("--no-push", action="store_true", help="skip the push-mode rows (pacs-listen)")
    parser.add_argument("--complete-after", type=float, default=2.0,
                        help="push mode: seconds without an instance that complete a series (default 2)")
    parser.add_argument("--output", type=Path, default=REPO / "docs" / "benchmarks.md")
    args = parser.parse_args(argv)
    if not orthanc_available():
        raise SystemExit("error: Orthanc is not installed (apt-get install orthanc orthanc-dicomweb)")
    try:
        import ray  # noqa: F401

        ray_ok = not args.no_ray
    except ImportError:
        ray_ok = False
    results = []
    with tempfile.TemporaryDirectory(prefix="benchmark_pacs_") as folder:
        work = Path(folder)
        with OrthancServer(work / "orthanc") as server:
            for bundle in args.bundles:
                studies = write_studies(server, work / f"{bundle}_data", bundle, args.series, tuple(args.mr_shape),
                                        args.cxr_size)
                overrides, models = model_files(bundle, work, args.chest_features)
                for model in args.models:
                    engines = ["local", "ray"] if ray_ok and model == "torch" else ["local"]
                    for engine in engines:
                        result = run_once(server, work, bundle, model, models[model], overrides, studies, engine)
                        print(json.dumps(result), flush=True)
                        results.append(result)
                    if not args.no_push:
                        result = run_push(server, work, bundle, model, models[model], overrides, studies,
                                          args.complete_after)
                        print(json.dumps(result), flush=True)
                        results.append(result)
    note = "" if ray_ok else "Ray is not installed here: no Ray rows."
    replace_section(args.output, "benchmark_pacs", render(results, args, note))
    print(f"wrote the benchmark_pacs section of {args.output}")


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "2")
    main()
