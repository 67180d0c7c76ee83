"""Series per hour of the PACS batch job (``attention-unets pacs-batch``) on this machine, with the time per stage.

A real Orthanc (``tests/orthanc_server.py``: Debian's ``orthanc`` + ``orthanc-dicomweb`` on 127.0.0.1, a temporary
folder) holds ``--series`` studies per bundle: sample-like brain MR series (``--mr-shape``, the sample study's
generator) for the brain tumour bundle and chest radiographs (DX, ``--cxr-size`` square) for the chest X-ray bundle.
Each bundle runs the whole job over DICOMweb (query, retrieve, decode, network, SEG encoding, store, verify) with
its torch model and its static-int8 ONNX model, the local engine and, with Ray installed, 2 Ray workers of 1 thread
each (the same 2 cores as the local engine's 2 torch threads). ``--mr-shape`` may be given more than once: the brain
bundle then runs at each series size. The brain
bundle runs its shipped demo weights (``configs/demo.json`` widths); the chest bundle an untrained network at
``--chest-features`` (time per series does not depend on the weights). The int8 models are exported with
``custom_networks.deploy.export_bundle`` (calibrated on a small demo set) into the work folder.

The ratio end-to-end / network is the job's overhead: the batch's wall time (the query included) over the sum of
the network's time per series. Beside the stage table a capacity table gives, per row, series per hour per core
from the job's wall time (start-up included) and in steady state (excluding the one-time start: the workers running
at once times 3600 over the mean of a series' summed stage times), and the network's core-seconds per series (its
time times the threads it ran on), which is what a site sizes its hardware by. Results go to ``docs/benchmarks.md``
(section ``benchmark_pacs``, or ``--section``).

Examples:
    python scripts/benchmark_pacs.py --series 6
    python scripts/benchmark_pacs.py --series 8 --bundles brain_tumor_mri_gsconv_eca_unet --models torch int8 \\
        --mr-shape 128 128 24 --mr-shape 256 256 60 --no-push --section benchmark_pacs_capacity
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
from custom_networks.runtime import BundleRequest, demo_network_overrides  # noqa: E402
from custom_networks.runtime.locate import bundle_folder  # noqa: E402

from orthanc_server import OrthancServer, free_port, orthanc_available  # noqa: E402

BRAIN, CHEST = "brain_tumor_mri_gsconv_eca_unet", "chest_xray_lung_ag_min_aspp_unet"
# the sizing example of the capacity table: series a day and the share of the day the cores are busy with them
SIZING_SERIES_PER_DAY, SIZING_UTILISATION = 1000, 0.7
# the machine's 2 cores: the local engine runs 2 torch threads, Ray 2 workers of 1 thread, push mode 1 worker
CORES = 2
RAY_WORKERS, RAY_THREADS = 2, 1


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


def model_files(bundle: str, work: Path, chest_features: list[int], int8: bool) -> tuple[dict, dict[str, Path]]:
    """The bundle's config overrides and its torch and (when ``int8``, exported now) static-int8 model files."""
    root = work / f"{bundle}_root"
    (root / "models").mkdir(parents=True, exist_ok=True)
    if bundle == BRAIN:
        overrides = demo_network_overrides(BRAIN)
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
    models = {"torch": root / "models" / "model.pt"}
    if not int8:
        return overrides, models
    data = work / f"{bundle}_calibration"
    if task == "brain_tumor":
        demo.write_brain_tumor_png(data, n_cases=12, size=size)
    else:
        demo.write_montgomery_cxr(data, n=12, size=size)
    write_datalist(build_datalist(data, val_fraction=0.2, test_fraction=0.2, seed=0), data / "datalist.json")
    export_bundle(root, calibration_samples=8, dataset_dir=data, config_dir=bundle_folder(bundle) / "configs",
                  overrides=overrides, min_int8_agreement=0.0, held_out_samples=2)
    return overrides, {**models, "int8": root / "models" / "model_int8_static.onnx"}


def run_once(server: OrthancServer, work: Path, bundle: str, model: str, weights: Path, overrides: dict,
             studies: list[str], engine: str, size: str) -> dict:
    """One whole job; returns series/hour, the mean seconds per stage and the overhead ratios."""
    name = f"{bundle}_{size}_{model}_{engine}"
    job = work / name
    connection = PacsConnection(server.dicomweb_url, Credentials(server.username, server.password),
                                retry=RetryPolicy(attempts=3, initial_delay_s=0.5))
    request = BundleRequest(bundle, model=model, weights=str(weights), device="cpu", overrides=overrides)
    options = JobOptions(connection, request, OutputOptions(str(job / "work" / "results")),
                         QueryFilters(study_uids=tuple(studies)), job / "jobs.sqlite", job / "report", job / "work",
                         engine=engine, workers=RAY_WORKERS, threads_per_worker=RAY_THREADS)
    start = time.perf_counter()
    status = run_job(options)
    wall = time.perf_counter() - start
    summary = json.loads((job / "report" / "series.json").read_text())
    rows = summary["series"]
    done = [row for row in rows if row["outcome"] == "done"]
    if status != 0 or len(done) != len(studies):
        raise SystemExit(f"{name}: exit {status}, {len(done)} of {len(studies)} series done; see {job / 'report'}")
    at_once, threads = (RAY_WORKERS, RAY_THREADS) if engine == "ray" else (1, CORES)
    return summarise(done, wall, summary["run"]["query_seconds"], bundle=bundle, size=size, model=model,
                     engine=engine, at_once=at_once, threads=threads)


def summarise(done: list[dict], wall: float, query_s: float, *, at_once: int, threads: int, **row) -> dict:
    """A result row from the report's series rows: series/h from the wall time, the mean seconds per stage, the
    overhead ratios, and the capacity figures: series/h per core from the wall time and in steady state (``at_once``
    series in flight, each taking its summed stage times; the one-time start-up left out) and the network's
    core-seconds per series (its seconds times ``threads``)."""
    stages = {stage: float(np.mean([series["seconds"].get(stage, 0.0) for series in done])) for stage in STAGES}
    network_total = sum(series["seconds"].get("network", 0.0) for series in done)
    busy = [sum(series["seconds"].get(stage, 0.0) for stage in STAGES) for series in done]
    steady = at_once * 3600 / float(np.mean(busy))
    return {**row, "series": len(done), "wall_s": wall, "series_per_hour": len(done) / wall * 3600,
            "query_s": query_s, "stages": stages, "per_series_ratio": sum(busy) / network_total,
            "job_ratio": wall * at_once / network_total, "at_once": at_once, "threads": threads,
            "per_core_per_hour": len(done) / wall * 3600 / CORES, "steady_per_core_per_hour": steady / CORES,
            "startup_s": max(wall - query_s - sum(busy) / at_once, 0.0),
            "network_core_s": stages["network"] * threads}


def run_push(server: OrthancServer, work: Path, bundle: str, model: str, weights: Path, overrides: dict,
             studies: list[str], complete_after: float, size: str, engine: str) -> dict:
    """The same series pushed by Orthanc (``/modalities/{id}/store``, as a routing rule sends them) to a push-mode
    AI node (``attention-unets pacs-listen``'s :class:`Listener`: one worker thread with the local engine, or one
    worker per Ray actor) that sends SEG and SR back by STOW-RS; the wall time runs from the push until the node has
    confirmed every result."""
    from custom_networks.pacs.listener import Listener, ListenerOptions
    from custom_networks.pacs.routing import rules_from_data

    job = work / f"{bundle}_{size}_{model}_push_{engine}"
    at_once, threads = (RAY_WORKERS, RAY_THREADS) if engine == "ray" else (1, CORES)
    rules = rules_from_data({"rules": [{"name": "all", "bundle": bundle, "model": model, "weights": str(weights),
                                        "device": "cpu", "overrides": overrides}]})
    port = free_port()
    options = ListenerOptions(ae_title="ATTUNETS_NODE", port=port, allowed_aets=(server.aet,), rules=rules,
                              spool=job / "spool", ledger=job / "jobs.sqlite", audit=job / "audit.jsonl",
                              complete_after=complete_after, send_to=server.dicomweb_url,
                              credentials=Credentials(server.username, server.password), report_dir=job / "report",
                              retry=RetryPolicy(attempts=3, initial_delay_s=0.5), engine=engine, workers=at_once,
                              threads_per_worker=RAY_THREADS if engine == "ray" else None)
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
    return summarise(done, wall, 0.0, bundle=bundle, size=size, model=model,
                     engine=f"push {engine} ({complete_after:g} s)", at_once=at_once, threads=threads)


def _label(r: dict) -> str:
    return f"{r['bundle'].split('_')[0]} {r['size']}"


def render(results: list[dict], args: argparse.Namespace, command: str, load: dict[str, str], note: str) -> str:
    header = ("| series | model | engine | series/h | query | " + " | ".join(STAGES)
              + " | per series / network | job / network |")
    lines = [
        f"## PACS batch job: series per hour ({args.series} series per size; {', '.join(_sizes(results))})",
        "",
        f"`{command}` on {cpu_description()}, torch {torch.__version__}, {torch.get_num_threads()} torch thread(s) "
        f"in the driver; Orthanc on 127.0.0.1 over DICOMweb. {_data_note(args)} Mean seconds per series and stage; "
        "series/h from the whole job's wall time (start, query, every series, report; Ray's start included for the "
        f"Ray rows). Load average (1 min) {load['before']} before, {load['after']} after (`uptime`). {note}",
        "",
        header,
        "|" + "---|" * (7 + len(STAGES)),
    ]
    for r in results:
        stages = " | ".join(f"{r['stages'][stage]:.3f}" for stage in STAGES)
        lines.append(f"| {_label(r)} | {r['model']} | {r['engine']} | {r['series_per_hour']:.0f} | "
                     f"{r['query_s']:.3f} | {stages} | {r['per_series_ratio']:.2f} | {r['job_ratio']:.2f} |")
    lines += [
        "",
        f"### Capacity per core ({CORES} cores)",
        "",
        "| series | model | engine | workers x threads | series/h per core (wall, start-up included) | "
        "series/h per core (steady state) | start-up s | network s / series | network core-s / series | "
        f"cores for {SIZING_SERIES_PER_DAY} series/day at {SIZING_UTILISATION:.0%} | load at its end |",
        "|---|---|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        lines.append(f"| {_label(r)} | {r['model']} | {r['engine']} | {r['at_once']} x {r['threads']} | "
                     f"{r['per_core_per_hour']:.0f} | {r['steady_per_core_per_hour']:.0f} | {r['startup_s']:.1f} | "
                     f"{r['stages']['network']:.2f} | {r['network_core_s']:.2f} | {cores_needed(r):.2f} | "
                     f"{r['load_after']:.1f} |")
    lines += ["", *_ray_against_local(results)]
    within = [f"{_label(r)} {r['model']} {r['engine']}" for r in results if r["per_series_ratio"] <= 1.15]
    largest = {}
    for r in results:
        other = {stage: value for stage, value in r["stages"].items() if stage != "network"}
        name = max(other, key=other.get)
        largest[name] = largest.get(name, 0) + 1
    lines += [
        "",
        "### Reading the PACS tables",
        "",
        f"Within the 1.15 target per series in this run: {', '.join(within) or 'none'}. The largest stage after the "
        f"network: {', '.join(f'{name} ({count} rows)' for name, count in sorted(largest.items()))}; "
        "`postprocessing` is the bundle's own writers besides the SEG (the NIfTI mask, the overlay picture the "
        "report shows, the measurements).",
        "",
        "The target is end-to-end at most 1.15x the network time alone. *per series / network* is the sum of a "
        "series' stages (retrieve, decode, network, SEG encoding, other writers, store, verify) over its network "
        "time: what the job adds per series. *job / network* is the whole job's wall time over the summed network "
        "time per worker (series run at once): it also carries what is done once (imports, building the workflow "
        "and loading the model, starting Ray and its actors, the query, the report), so it falls towards the "
        "per-series ratio as batches grow. "
        f"With {RAY_WORKERS} Ray workers each actor has one of the machine's {CORES} cores and {RAY_THREADS} torch "
        f"thread (`--threads-per-worker`); the local engine is one process with {CORES} torch threads.",
        "",
        "Capacity: *series/h per core (wall)* is the job's series per hour over its cores, start-up included; "
        "*steady state* leaves the one-time start out: the series in flight at once (Ray: one per worker; local and "
        "push local: one) times 3600 over the mean of a series' summed stage times, over the cores. *start-up s* is "
        "the wall time not spent on series (the job's wall time less the query and the summed series times over the "
        "series in flight): imports, Ray's start, the model loads. *network core-s / series* is the network's time "
        "times the threads it ran on: equal per core means an actor is as fast per core as the local engine. "
        "Sizing a site: cores = series per day / (24 h x series per hour per core x utilisation), with the "
        "steady-state figure of the row that matches the site's series and model, and the utilisation the cores may "
        f"be busy (the last column: {SIZING_SERIES_PER_DAY} series a day at {SIZING_UTILISATION:.0%}); the figures "
        "are per core of this CPU, so a CPU with other vector units (AVX-512, VNNI for int8) needs its own run.",
    ]
    if any(r["engine"].startswith("push") for r in results):
        lines += [
            "",
            "*push* rows: the same series pushed by Orthanc to `attention-unets pacs-listen` (local: one worker "
            f"thread; ray: `--engine ray --workers {RAY_WORKERS}`), results sent back by STOW-RS; the wall time runs "
            "from the push to the last confirmed result and includes the completion timeout (a series is complete "
            "when no instance has come for that long) once per batch, not per series, as series complete while "
            "earlier ones are processed.",
        ]
    return "\n".join(lines)


def _sizes(results: list[dict]) -> list[str]:
    return list(dict.fromkeys(f"{_label(r)} {r['model']}" for r in results))


def _data_note(args: argparse.Namespace) -> str:
    notes = []
    if BRAIN in args.bundles:
        notes.append(f"Brain: {args.series} MR series per size (demo weights, demo.json widths).")
    if CHEST in args.bundles:
        notes.append(f"Chest: {args.series} DX radiographs of {args.cxr_size} x {args.cxr_size} (untrained network at "
                     f"features {args.chest_features}).")
    return " ".join(notes)


def cores_needed(r: dict, series_per_day: float = SIZING_SERIES_PER_DAY,
                 utilisation: float = SIZING_UTILISATION) -> float:
    """The sizing formula: cores = series per day / (24 h x series per hour per core x utilisation), with the
    row's steady-state series per hour per core."""
    return series_per_day / (24 * r["steady_per_core_per_hour"] * utilisation)


def _ray_against_local(results: list[dict]) -> list[str]:
    """One line per series size and model run by both engines: Ray's throughput over the local engine's."""
    lines = []
    for r in results:
        if r["engine"] != "ray":
            continue
        local = next((o for o in results if o["engine"] == "local" and (o["bundle"], o["size"], o["model"]) ==
                      (r["bundle"], r["size"], r["model"])), None)
        if local is not None:
            wall = r["series_per_hour"] / local["series_per_hour"]
            steady = r["steady_per_core_per_hour"] / local["steady_per_core_per_hour"]
            network = r["network_core_s"] / local["network_core_s"]
            lines.append(f"- {_label(r)} {r['model']}: Ray / local series per hour {wall:.2f} (wall, start-up "
                         f"included), {steady:.2f} (steady state); network core-s per series Ray / local "
                         f"{network:.2f}.")
    return lines


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--series", type=int, default=6, help="series (one study each) per bundle (default 6)")
    parser.add_argument("--mr-shape", type=int, nargs=3, action="append", metavar=("COLUMNS", "ROWS", "SLICES"),
                        help="MR series size; repeat for several sizes (default 128 128 24)")
    parser.add_argument("--cxr-size", type=int, default=1024, help="radiograph side in pixels (default 1024)")
    parser.add_argument("--chest-features", type=int, nargs="+", default=[8, 16, 32, 64])
    parser.add_argument("--bundles", nargs="+", default=[BRAIN, CHEST])
    parser.add_argument("--models", nargs="+", choices=("torch", "int8"), default=["torch", "int8"])
    parser.add_argument("--no-ray", action="store_true", help="skip the Ray rows")
    parser.add_argument("--no-push", action="store_true", help="skip the push-mode rows (pacs-listen)")
    parser.add_argument("--complete-after", type=float, default=2.0,
                        help="push mode: seconds without an instance that complete a series (default 2)")
    parser.add_argument("--output", type=Path, default=REPO / "docs" / "benchmarks.md")
    parser.add_argument("--section", default="benchmark_pacs", help="the section of --output the tables replace "
                        "(default benchmark_pacs)")
    args = parser.parse_args(argv)
    args.mr_shape = args.mr_shape or [[128, 128, 24]]
    if not orthanc_available():
        raise SystemExit("error: Orthanc is not installed (apt-get install orthanc orthanc-dicomweb)")
    try:
        import ray  # noqa: F401

        ray_ok = not args.no_ray
    except ImportError:
        ray_ok = False
    # the command as the docs show it: without --output (its default is the docs' file)
    given = list(argv if argv is not None else sys.argv[1:])
    if "--output" in given:
        del given[given.index("--output"):given.index("--output") + 2]
    command = " ".join(["python scripts/benchmark_pacs.py", *given])
    load = {"before": f"{os.getloadavg()[0]:.2f}"}
    note = "" if ray_ok else "Ray is not installed here: no Ray rows."
    results = []

    def record(result: dict) -> None:
        """Keep a row (with the load average at its end) and write the section so far: a run stopped at a time
        limit keeps the rows it measured."""
        result["load_after"] = os.getloadavg()[0]
        print(json.dumps(result), flush=True)
        results.append(result)
        load["after"] = f"{result['load_after']:.2f}"
        replace_section(args.output, args.section, render(results, args, command, load, note))

    with tempfile.TemporaryDirectory(prefix="benchmark_pacs_") as folder:
        work = Path(folder)
        with OrthancServer(work / "orthanc") as server:
            for bundle in args.bundles:
                overrides, models = model_files(bundle, work, args.chest_features, "int8" in args.models)
                shapes = args.mr_shape if bundle == BRAIN else [[args.cxr_size, args.cxr_size]]
                for shape in shapes:
                    size = "x".join(map(str, shape))
                    studies = write_studies(server, work / f"{bundle}_{size}_data", bundle, args.series,
                                            tuple(shape), args.cxr_size)
                    for model in args.models:
                        for engine in ["local", "ray"] if ray_ok else ["local"]:
                            record(run_once(server, work, bundle, model, models[model], overrides, studies, engine,
                                            size))
                        for engine in [] if args.no_push else ["local", "ray"] if ray_ok else ["local"]:
                            record(run_push(server, work, bundle, model, models[model], overrides, studies,
                                            args.complete_after, size, engine))
    print(f"wrote the {args.section} section of {args.output}")


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "2")
    main()
