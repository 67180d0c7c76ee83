"""The package installs from a wheel and runs outside the repository: bundles shipped as package data.

A wheel is built from the checkout and installed (without its dependencies, which this environment has) into a new
virtual environment in a folder outside the checkout; there, ``attention-unets infer --bundle <name> --demo`` runs
the brain bundle's demo weights on the sample study the wheel ships, and ``from custom_networks import segment``
works, reading the bundles from the installed package, not from the repository.
"""

from __future__ import annotations

import json
import subprocess
import sys
import venv
import zipfile
from pathlib import Path

import pytest

from conftest import REPO, subprocess_env

BRAIN = "brain_tumor_mri_gsconv_eca_unet"


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("wheel")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--quiet", "-w",
                    str(folder), str(REPO)], check=True, capture_output=True, text=True, timeout=600)
    (built,) = folder.glob("monai_attention_unets-*.whl")
    return built


def test_the_wheel_holds_every_subpackage_and_the_bundles(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    packages = {str(path.parent.relative_to(REPO)) for path in (REPO / "custom_networks").rglob("__init__.py")}
    assert {f"{package}/__init__.py" for package in packages} <= names, "pyproject.toml [tool.setuptools] packages"
    bundles = {path.parent.parent.name for path in (REPO / "bundles").glob("*/configs/inference.json")}
    for bundle in bundles:
        assert f"custom_networks/bundles/{bundle}/configs/inference.json" in names
    assert f"custom_networks/bundles/{BRAIN}/models/demo_model.pt" in names
    assert f"custom_networks/bundles/{BRAIN}/sample_data/mr_series/IM0000.dcm" in names


def test_installed_wheel_segments_the_shipped_sample_outside_the_checkout(wheel, tmp_path):
    """The environment sees this one's packages (torch, MONAI, ...) but the project only as the installed wheel."""
    environment = tmp_path / "venv"
    venv.create(environment, system_site_packages=True, with_pip=True)
    python = environment / "bin" / "python"
    subprocess.run([str(python), "-m", "pip", "install", "--no-deps", "--quiet", str(wheel)], check=True,
                   capture_output=True, text=True, timeout=600)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {key: value for key, value in subprocess_env(threads=2).items() if key != "PYTHONPATH"}

    where = subprocess.run(
        [str(python), "-c", "import custom_networks, json; from custom_networks import segment; "
         "from custom_networks.runtime import bundles_dir; "
         "print(json.dumps([custom_networks.__file__, str(bundles_dir()), segment.__module__]))"],
        cwd=elsewhere, env=env, capture_output=True, text=True, timeout=120, check=True)
    package_file, bundles, module = json.loads(where.stdout.strip().splitlines()[-1])
    assert Path(package_file).is_relative_to(environment) and Path(bundles).is_relative_to(environment)
    assert module == "custom_networks.python_api"

    sample = Path(bundles) / BRAIN / "sample_data"
    done = subprocess.run(
        [str(environment / "bin" / "attention-unets"), "infer", "--bundle", BRAIN, "--demo", "--device", "cpu",
         "--input", str(sample), "--output", str(elsewhere / "out")],
        cwd=elsewhere, env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    summary = json.loads((elsewhere / "out" / "run_summary.json").read_text())
    assert [case["status"] for case in summary["cases"]] == ["ok", "ok"]
    assert Path(summary["run"]["weights"]).is_relative_to(environment) and summary["run"]["demo_weights"]
    assert (elsewhere / "out" / "mr_series_seg.dcm").is_file()
    assert not REPO.joinpath("bundles", BRAIN, "eval").exists()
