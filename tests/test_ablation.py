"""The ablation study: verdicts on made-up run tables whose answer is known, the study definitions, and a tiny
study through the command line that writes its CSV, plots and verdicts and, run again, trains nothing new."""

from __future__ import annotations

import csv
import json
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch
from monai.bundle import ConfigParser

from custom_networks.cli import main
from custom_networks.experiments.report import steps_to_reach
from custom_networks.experiments.runner import read_cases
from custom_networks.experiments.statistics import compare_paired, paired_differences, verdict
from custom_networks.experiments.studies import BASELINE, STOCK_NETWORKS, STUDIES, find_study, stock_network_def

from conftest import BUNDLES_DIR, make_demo_task, subprocess_env


def made_up(shift: float, noise: float, cases: int = 20, replicates: int = 3, seed: int = 0, base: float = 0.7):
    """Baseline and variant tables ``{replicate: {case: value}}``: variant = baseline + shift + N(0, noise)."""
    rng = np.random.default_rng(seed)
    baseline, variant = {}, {}
    for r in range(replicates):
        values = base + rng.uniform(-0.1, 0.1, cases)
        baseline[f"seed{r}"] = {f"case{c}": float(v) for c, v in enumerate(values)}
        variant[f"seed{r}"] = {f"case{c}": float(v + shift + rng.normal(0, noise)) for c, v in enumerate(values)}
    return variant, baseline


@pytest.mark.parametrize(
    "shift, noise, cases, expected, reason",
    [
        (0.10, 0.01, 20, "supported", "better"),  # a clear gain
        (-0.10, 0.01, 20, "not supported", "worse"),  # a clear loss
        (0.0, 0.002, 20, "not supported", "equivalent"),  # no difference, measured precisely
        (0.0, 0.15, 8, "inconclusive", "contains 0"),  # noise: too few cases to tell
    ],
)
def test_verdict_on_made_up_tables(shift, noise, cases, expected, reason):
    variant, baseline = made_up(shift, noise, cases)
    comparison = compare_paired(variant, baseline, "dice")
    assert comparison.verdict == expected and reason in comparison.reason, comparison
    assert (comparison.n_cases, comparison.n_replicates) == (cases, 3)
    assert comparison.ci_low <= comparison.mean_difference <= comparison.ci_high
    if expected == "supported":
        assert comparison.ci_low > 0.08 and comparison.p_value < 0.001
    # the interval is seeded: the same tables give the same interval
    assert compare_paired(variant, baseline, "dice") == comparison


def test_lower_is_better_for_hd95_and_pairs_only_shared_cases():
    variant, baseline = made_up(-5.0, 0.5, base=20.0)  # 5 px closer edges
    assert compare_paired(variant, baseline, "hd95").verdict == "supported"
    assert compare_paired(variant, baseline, "hd95").mean_difference == pytest.approx(5.0, abs=0.3)
    # a replicate only one side has, a case only one side has and a nan are left out of the pairs
    variant["seed9"] = {"case0": 1.0}
    variant["seed0"]["extra"] = 1.0
    baseline["seed1"]["case3"] = float("nan")
    differences, replicates = paired_differences(variant, baseline, "hd95")
    assert replicates == 3 and differences.size == 20


def test_verdict_thresholds():
    assert verdict(0.001, 0.009, margin=0.01)[0] == "not supported"  # a gain, but below the margin
    assert verdict(0.005, 0.03, margin=0.01)[0] == "supported"
    assert verdict(-0.03, -0.005, margin=0.01)[0] == "not supported"
    assert verdict(-0.02, 0.02, margin=0.01)[0] == "inconclusive"


def test_studies_cover_every_paper_and_switch():
    assert sorted(STUDIES) == ["000", "001", "002", "003", "004"]
    for study in STUDIES.values():
        assert (BUNDLES_DIR / study.bundle / "configs" / "train.json").is_file()
        names = [v.name for v in study.all_variants()]
        assert BASELINE in names and len(set(names)) == len(names) and names[-3:] == list(STOCK_NETWORKS)
        for claim in study.claims:
            assert claim.variant in names and claim.baseline in names
    assert len(find_study("004").variants) == 8  # paper 004's table 2: every combination of three switches
    assert find_study("2") is find_study("chest_xray_lung_ag_min_aspp_unet") is STUDIES["002"]
    assert stock_network_def("monai_basicunet", [8, 16, 32, 64])["features"] == [8, 16, 32, 64, 128, 8]


def test_stock_networks_build_at_study_widths():
    for name in STOCK_NETWORKS:
        parser = ConfigParser({"in_channels": 3, "num_classes": 2, "net": stock_network_def(name, [4, 8, 16])})
        net = parser.get_parsed_content("net")
        assert net(torch.zeros(1, 3, 32, 32)).shape == (1, 2, 32, 32)


def test_cases_drop_empty_labels_and_count_empty_predictions_as_the_diagonal(tmp_path):
    rows = {"test_mean_dice_raw.csv": ("0.8", "nan", "0.0"), "test_mean_iou_raw.csv": ("0.7", "nan", "0.0"),
            "test_hd95_raw.csv": ("2.5", "nan", "nan")}
    for name, values in rows.items():
        lines = ["filename,class0,mean"] + [f"{tmp_path}/images/{k}.png,{v},{v}" for k, v in enumerate(values)]
        (tmp_path / name).write_text("\n".join(lines) + "\n")
    cases = read_cases(tmp_path, tmp_path, hd95_fill=90.5)
    assert cases == {"dice": {"images/0.png": 0.8, "images/2.png": 0.0},
                     "iou": {"images/0.png": 0.7, "images/2.png": 0.0},
                     "hd95": {"images/0.png": 2.5, "images/2.png": 90.5}}


def test_steps_to_reach_tells_a_slow_start():
    fast = [{"curve": [[10, 0.6], [20, 0.7]]}, {"curve": [[10, 0.5], [20, 0.8]]}]
    slow = [{"curve": [[10, 0.0], [20, 0.7]]}, {"curve": [[10, 0.1], [20, 0.8]]}]
    assert steps_to_reach(fast) == 10 and steps_to_reach(slow) == 20
    assert np.isnan(steps_to_reach([{"curve": [[10, 0.1]]}]))


def test_help_loads_neither_torch_nor_monai():
    code = ("import sys, contextlib, io\nfrom custom_networks.cli import main\n"
            "with contextlib.redirect_stdout(io.StringIO()) as out:\n"
            "    try: main(['ablation', '--help'])\n    except SystemExit: pass\n"
            "assert '--sweep-learning-rates' in out.getvalue()\n"
            "print(sorted(name for name in ('torch', 'monai', 'numpy') if name in sys.modules))\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert done.stdout.strip() == "[]"


def test_bad_options_are_one_line(tmp_path, capsys):
    base = ["ablation", "--dataset-dir", str(tmp_path), "--output", str(tmp_path / "out")]
    assert main(base + ["--study", "007"]) == 2
    assert "unknown study '007'" in capsys.readouterr().err
    assert main(base + ["--study", "000", "--variants", "cbam"]) == 2
    assert "has no variant 'cbam'" in capsys.readouterr().err
    assert main(["ablation", "--study", "000", "--dataset-dir", str(tmp_path), "--output", str(BUNDLES_DIR)]) == 2
    assert "inside the repository" in capsys.readouterr().err


@pytest.mark.subprocess
def test_tiny_study_through_the_cli_resumes(tmp_path, capsys):
    task = make_demo_task(tmp_path, "brain_tumor", n=10, size=32)
    output = tmp_path / "study"
    argv = ["ablation", "--study", "000", "--dataset-dir", str(task.root), "--output", str(output),
            "--variants", "gsconv_eca", "plain", "--seeds", "0", "1", "--epochs", "1", "--widths", "4", "8", "16",
            "--spatial-size", "32", "--batch-size", "4", "--learning-rate", "1e-3", "--threads", "1"]
    script = shutil.which("attention-unets")
    assert script, "pip install -e . installs the attention-unets console script"
    done = subprocess.run([script, *argv], capture_output=True, text=True, timeout=300, env=subprocess_env())
    assert done.returncode == 0, done.stderr[-3000:]
    assert "trained 4 run(s), skipped 0" in done.stdout
    assert "GSConv + ECA segment better than U-Net (Dice higher): " in done.stdout

    study = output / "000"
    with open(study / "runs.csv", newline="") as file:
        rows = list(csv.DictReader(file))
    assert sorted((r["variant"], r["seed"]) for r in rows) == [("gsconv_eca", "0"), ("gsconv_eca", "1"),
                                                               ("plain", "0"), ("plain", "1")]
    for row in rows:
        assert 0.0 <= float(row["dice"]) <= 1.0 and int(row["steps"]) == 2 and len(json.loads(row["curve"])) == 1
    result = json.loads((study / "runs" / "plain" / "lr0.001" / "seed1" / "result.json").read_text())
    assert result["config"]["initialize"][-1] == "$monai.utils.set_determinism(seed=1)"
    assert result["versions"]["monai"] and result["machine"]["cpu_model"] and result["parameters"] > 0
    assert len(result["cases"]["dice"]) == len(task.datalist["testing"])
    for name in ("boxplots_shared.png", "curves_shared.png"):
        assert (study / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    verdicts = json.loads((study / "verdicts.json").read_text())["shared"]
    # the two claims on gsconv_eca get a verdict; the paper's form was not among the variants run
    assert [v["verdict"] in ("supported", "not supported", "inconclusive") for v in verdicts] == [True, True, False]
    assert verdicts[2]["variant"] == "gsconv_eca_paper_form" and verdicts[2]["verdict"] == "not run"
    assert "| gsconv_eca | 0.001 | 2 |" in (output / "report.md").read_text()

    # run again: every run is finished, so nothing is trained and no result file is rewritten
    results = sorted(study.glob("runs/*/*/*/result.json"))
    stamps = [path.stat().st_mtime_ns for path in results]
    assert main(argv) == 0
    assert "trained 0 run(s), skipped 4 finished run(s)" in capsys.readouterr().out
    assert [path.stat().st_mtime_ns for path in results] == stamps


def test_a_failed_run_is_recorded_and_the_others_go_on(tmp_path, capsys):
    task = make_demo_task(tmp_path, "brain_tumor", n=10, size=32)
    # odd widths: GSConv refuses them when the network is built, the plain U-Net takes them
    argv = ["ablation", "--study", "000", "--dataset-dir", str(task.root), "--output", str(tmp_path / "study"),
            "--variants", "gsconv_eca", "plain", "--seeds", "0", "--epochs", "1", "--spatial-size", "32",
            "--batch-size", "4", "--set", "network_def#features=[3,6]"]
    assert main(argv) == 1
    assert "trained 1 run(s), skipped 0 finished run(s), 1 failed" in capsys.readouterr().out
    runs = tmp_path / "study" / "000" / "runs"
    assert "even out_channels" in (runs / "gsconv_eca" / "lr0.0001" / "seed0" / "error.txt").read_text()
    assert not (runs / "gsconv_eca" / "lr0.0001" / "seed0" / "result.json").exists()
    assert (runs / "plain" / "lr0.0001" / "seed0" / "result.json").is_file()
