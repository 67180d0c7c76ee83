"""README.md's install steps, its quick start and its "try it" recipe, read from README.md itself, against what
they promise.

- Install: what the commands, ``requirements/torch-cpu.txt`` and ``scripts/run_demo.sh`` ask pip for (its
  ``install_missing`` run with a stand-in ``python`` on PATH whose ``-m pip`` records its arguments: no index is
  reachable from a test, so nothing is resolved).
- Quick start: ``bash scripts/run_demo.sh demo_output`` is run, and its output checked, by
  ``test_clinical_bundles.py`` (``main_job``); ``bash .ci/run`` is not re-run (it runs this suite), only checked
  to install as README says and to end with README's test command.
- The "try it" recipe: its fenced block run as written in a copy of the repository, the data folder moved into the
  test's temporary folder, to the Dice bar README promises.
"""

from __future__ import annotations

import csv
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import REPO

README = REPO / "README.md"
REQUIREMENTS = REPO / "requirements" / "torch-cpu.txt"
RUN_DEMO = REPO / "scripts" / "run_demo.sh"
CPU_INDEX = "https://download.pytorch.org/whl/cpu"
TRY_IT_INTRO = "Try one on generated data"
TRY_IT_DATA = "/tmp/cxr_demo"
TRY_IT_BAR = 0.85  # README: "requires a test Dice above 0.85"
# stands in for python: nothing imports unless FAKE_TORCH is set (then torch does); "-m pip" records its arguments
FAKE_PYTHON = """#!/usr/bin/env bash
if [[ "$1" == "-m" && "$2" == "pip" ]]; then printf '%s\\n' "${*:3}" >> "$PIP_LOG"; exit 0; fi
if [[ "$1" == "-c" && "$2" == *"installed torch"* ]]; then echo "installed torch 2.13.0+cpu (CPU build)"; exit 0; fi
if [[ "$1" == "-c" && "$2" == "import torch" && -n "${FAKE_TORCH:-}" ]]; then exit 0; fi
exit 1
"""


def readme() -> str:
    return README.read_text()


def section(text: str, heading: str) -> str:
    """The text of the ``## heading`` section, up to the next ``## ``."""
    match = re.search(rf"^## {re.escape(heading)}\n(.*?)(?=^## |\Z)", text, re.M | re.S)
    assert match, f"README has no '## {heading}' section"
    return match.group(1)


def fenced_blocks(text: str, language: str = "bash") -> list[str]:
    return re.findall(rf"^```{language}\n(.*?)^```", text, re.M | re.S)


def commands(block: str) -> list[str]:
    """The block's commands: continuation lines joined, comments and blank lines dropped."""
    joined = re.sub(r"\\\n\s*", "", block)
    lines = [re.sub(r"\s+#.*$", "", line).strip() for line in joined.splitlines()]
    return [line for line in lines if line and not line.startswith("#")]


def torch_pin() -> str:
    pins = [line for line in REQUIREMENTS.read_text().splitlines() if line and not line.startswith("#")]
    assert len(pins) == 1 and re.fullmatch(r"torch==[0-9.]+", pins[0]), pins
    return pins[0]


def copy_repository(target: Path) -> Path:
    """The files a fresh clone has (tracked, or new and not ignored), copied to ``target``."""
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
        cwd=REPO,
        capture_output=True,
        check=True,
    ).stdout.decode()
    for name in filter(None, listed.split("\0")):
        source = REPO / name
        if source.is_file():
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target / name)
    return target


# --- install -----------------------------------------------------------------------------------------------------


def test_install_section_asks_for_the_pinned_torch_from_the_cpu_index_and_says_what_else_happens():
    install = section(readme(), "Install")
    assert commands(fenced_blocks(install)[0]) == [
        f"pip install -r requirements/torch-cpu.txt --index-url {CPU_INDEX}",
        'pip install -e ".[test,ray]"',
    ]
    prose = " ".join(install.split())
    assert f"`{torch_pin()}`" in prose
    assert "CUDA build" in prose and "nvidia-*" in prose  # what the public index gives without --index-url
    assert "torch.cuda.is_available()" in prose  # and that a CUDA build works too


def test_requirements_file_pins_torch_and_says_how_the_build_is_chosen():
    text = REQUIREMENTS.read_text()
    comments = " ".join(line.lstrip("# ") for line in text.splitlines() if line.startswith("#"))
    assert torch_pin() == "torch==2.13.0"
    assert "does NOT choose the CPU build" in comments
    assert f"--index-url {CPU_INDEX}" in comments and "TORCH_INDEX_URL" in comments


def run_install_missing(tmp_path: Path, **env: str) -> tuple[subprocess.CompletedProcess, list[str]]:
    """``source scripts/run_demo.sh; install_missing`` with the stand-in python first on PATH."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "python").write_text(FAKE_PYTHON)
    (bin_dir / "python").chmod(0o755)
    log = tmp_path / "pip.log"
    base = {k: v for k, v in os.environ.items() if k not in {"PYTHON", "TORCH_INDEX_URL", "FAKE_TORCH"}}
    done = subprocess.run(
        ["bash", "-c", f'source "{RUN_DEMO}" && install_missing'],
        cwd=tmp_path,
        env={**base, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}", "PIP_LOG": str(log), **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done, log.read_text().splitlines() if log.exists() else []


def test_run_demo_installs_the_cpu_build_from_torch_index_url(tmp_path):
    done, pip_calls = run_install_missing(tmp_path, TORCH_INDEX_URL=CPU_INDEX)
    quiet = "install --quiet --disable-pip-version-check"
    assert pip_calls == [f"{quiet} -r {REQUIREMENTS} --index-url {CPU_INDEX}", f"{quiet} -e {REPO}"]
    assert f"installing {torch_pin()} from {CPU_INDEX}" in done.stdout
    assert "installed torch 2.13.0+cpu (CPU build)" in done.stdout  # it asks torch which build it got


def test_run_demo_without_torch_index_url_says_pip_may_pick_the_cuda_build(tmp_path):
    done, pip_calls = run_install_missing(tmp_path)
    assert [call.split(" -r ")[-1] for call in pip_calls[:1]] == [str(REQUIREMENTS)]  # no --index-url
    assert "CUDA build" in done.stdout and f"TORCH_INDEX_URL={CPU_INDEX}" in done.stdout
    assert pip_calls[1].endswith(f"-e {REPO}")


def test_run_demo_keeps_an_installed_torch(tmp_path):
    done, pip_calls = run_install_missing(tmp_path, FAKE_TORCH="1", TORCH_INDEX_URL=CPU_INDEX)
    assert "torch" not in done.stdout.split("installing custom_networks")[0]
    assert len(pip_calls) == 1 and pip_calls[0].endswith(f"-e {REPO}")


def test_quick_start_points_to_the_cpu_index_variable_run_demo_honours():
    quick = section(readme(), "Quick start")
    assert f"TORCH_INDEX_URL={CPU_INDEX}" in quick
    assert 'TORCH_INDEX_URL="${TORCH_INDEX_URL:-}"' in RUN_DEMO.read_text()


# --- quick start and .ci/run -------------------------------------------------------------------------------------


def test_quick_start_commands_are_the_ones_tested():
    blocks = [commands(block) for block in fenced_blocks(section(readme(), "Quick start"))]
    assert blocks == [["bash scripts/run_demo.sh demo_output"], ["bash .ci/run"]]
    # the main job runs by test_clinical_bundles.py's main_job fixture, as `bash scripts/run_demo.sh <output>`
    assert (
        '["bash", str(REPO / "scripts" / "run_demo.sh"), str(output)]'
        in (REPO / "tests" / "test_clinical_bundles.py").read_text()
    )


def test_ci_run_installs_as_readme_says_and_ends_with_readme_test_command():
    ci = commands((REPO / ".ci" / "run").read_text())
    test_command = commands(fenced_blocks(section(readme(), "Test"))[0])
    assert test_command == ["python -m pytest"]
    assert ci[-1] == test_command[0]
    installs = [line for line in ci if "pip install" in line]
    assert installs[0].endswith("-r requirements/torch-cpu.txt")
    assert installs[1].endswith('-e ".[test,ray]"')


# --- the "try it" recipe -----------------------------------------------------------------------------------------


def try_it_block() -> str:
    text = readme()
    start = text.index(TRY_IT_INTRO)
    return fenced_blocks(text[start:])[0]


@pytest.mark.training
def test_try_it_recipe_learns_to_the_promised_dice(tmp_path):
    block = try_it_block()
    assert block.count(TRY_IT_DATA) >= 4
    script = block.replace(TRY_IT_DATA, str(tmp_path / "cxr_demo"))
    assert "/tmp/" not in script.replace(str(tmp_path), "")  # nothing else is written outside the copy
    clone = copy_repository(tmp_path / "clone")
    env = dict(os.environ, PYTHONWARNINGS="ignore")
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"  # `python` is this interpreter
    start = time.perf_counter()
    done = subprocess.run(
        ["bash", "-e", "-c", script], cwd=clone, env=env, capture_output=True, text=True, timeout=900, check=False
    )
    seconds = time.perf_counter() - start
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-4000:]

    datalist = json.loads((tmp_path / "cxr_demo" / "datalist.json").read_text())
    assert [len(datalist[split]) for split in ("training", "validation", "testing")] == [12, 4, 4]
    # training prints the validation Dice after each of its 10 epochs, the evaluation one line at the end
    printed = re.findall(r"Epoch\[(\d+)\] Metrics -- .*?\b(?:val|test)_mean_dice: ([0-9.]+)", output)
    assert [int(epoch) for epoch, _ in printed] == [*range(1, 11), 1], output[-4000:]
    validation = [float(dice) for _, dice in printed[:10]]
    assert validation[0] < 0.5 < validation[-1], validation  # it starts near zero and learns
    metrics_csv = clone / "bundles" / "chest_xray_lung_ag_min_aspp_unet" / "eval" / "metrics.csv"
    metrics = dict(row for row in csv.reader(metrics_csv.open()) if row)
    test_dice = float(next(value for key, value in metrics.items() if key.endswith("mean_dice")))
    assert abs(float(printed[-1][1]) - test_dice) < 1e-3
    assert test_dice > TRY_IT_BAR, (metrics, validation)
    print(f"the recipe took {seconds:.0f} s")  # timings differ between CPUs: reported, never asserted


@pytest.mark.subprocess
def test_python_section_runs_as_written_and_prints_what_ran(tmp_path):
    """README's "## Python" block, run from the repository folder with its output folder moved into the test's."""
    (block,) = fenced_blocks(section(readme(), "Python"), "python")
    assert block.count('"/tmp/brain_py"') == 1
    script = block.replace('"/tmp/brain_py"', repr(str(tmp_path / "brain_py")))
    env = dict(os.environ, PYTHONWARNINGS="ignore", OMP_NUM_THREADS="2")
    done = subprocess.run([sys.executable, "-c", script], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=600, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    # what the block prints (MONAI's own log lines may come between)
    lines = [line for line in done.stdout.splitlines() if line.startswith(("mr_", "torch "))]
    assert [line.split()[:2] for line in lines[:2]] == [["mr_series", "True"], ["mr_volume", "True"]]
    assert lines[-1].startswith("torch ") and lines[-1].endswith("True")  # the demo weights, said
    assert (tmp_path / "brain_py" / "mr_series_seg.dcm").is_file()
