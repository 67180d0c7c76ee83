"""The MONAI Model Zoo's own checks on the bundles, run offline.

The zoo's CI (``ci/verify_bundle.py`` of Project-MONAI/model-zoo, run by ``ci/run_premerge_*.sh``) downloads the
files a bundle's ``large_files.yml`` lists, requires ``configs/metadata.json`` and ``LICENSE`` (and
``models/model.pt`` and ``configs/inference.json`` unless the bundle is excluded), checks that ``version`` is in
``changelog``, validates the metadata against the schema named in its ``schema`` field (copied to
``eval/schema.json``), then calls ``verify_net_in_out`` and ``ckpt_export`` with ``net_id="network_def"``, the
metadata, ``configs/inference.json`` and ``bundle_root`` and nothing else. Its pre-commit hooks include
``pretty-format-json --no-sort-keys --indent=4``. The helpers below do the same with this repository's own code,
on copies laid out as ``models/<bundle>/`` like the zoo's tree.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from monai.bundle import ConfigParser, ckpt_export, verify_metadata, verify_net_in_out
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet

from conftest import BUNDLES, BUNDLES_DIR, REPO

SCHEMA = BUNDLES_DIR / "metadata_schema.json"
# sha256 of meta_schema_20240725.json as published by the zoo (MONAI-extra-test-data release 0.8.1)
ZOO_SCHEMA_NAME = "meta_schema_20240725.json"
ZOO_SCHEMA_SHA256 = "d95c74c2915faef04ff6a2d6bd865da922bc8cd5afb4a0719b2dc6e1220528e7"
BRAIN = "brain_tumor_mri_gsconv_eca_unet"
NET_ID = "network_def"  # the zoo's _get_net_id() for every bundle but two diffusion ones
LARGE_FILE_NAMES = ("large_files.yml", "large_files.yaml", "large_files.json")
NECESSARY_FILES = ("configs/metadata.json", "LICENSE")
PREFERRED_FILES = ("models/model.pt", "configs/inference.json")
# the section headings of the zoo's bundle READMEs (e.g. models/spleen_ct_segmentation/docs/README.md), in order
ZOO_README_SECTIONS = (
    "Model Overview",
    "Data",
    "Training configuration",
    "Input and output formats",
    "Performance",
    "MONAI Bundle Commands",
    "References",
    "License",
)


def repository_files(under: str) -> list[Path]:
    """Files of the repository under ``under`` as a fresh clone has them (tracked, or new and not ignored)."""
    try:
        listed = subprocess.run(
            ["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z", "--", under],
            cwd=REPO,
            capture_output=True,
            check=True,
        ).stdout.decode()
    except (OSError, subprocess.CalledProcessError):  # not a git checkout: take the folder as it is
        return sorted(p for p in (REPO / under).rglob("*") if p.is_file())
    return sorted(REPO / name for name in listed.split("\0") if name and (REPO / name).is_file())


def zoo_copy(bundle: str, tmp_path: Path) -> Path:
    """The bundle as the zoo's CI sees it after checkout: ``<tmp>/models/<bundle>/``, nothing run in it yet."""
    source = BUNDLES_DIR / bundle
    target = tmp_path / "models" / bundle
    for path in repository_files(f"bundles/{bundle}"):
        destination = target / path.relative_to(source)
        destination.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(path, destination)
    return target


def zoo_directory_problems(bundle_path: Path) -> list[str]:
    """What the zoo's verify_bundle_directory() would stop on (after downloading any large files)."""
    large = [name for name in LARGE_FILE_NAMES if (bundle_path / name).is_file()]
    problems = [f"{name}: not downloaded by this offline check" for name in large]
    for name in NECESSARY_FILES + PREFERRED_FILES:
        if not (bundle_path / name).is_file():
            problems.append(f"missing {name}")
    return problems


def zoo_verify_metadata(bundle_path: Path) -> None:
    """The zoo's prepare_schema() + verify_metadata_format(), with the schema copy instead of a download."""
    meta = json.loads((bundle_path / "configs" / "metadata.json").read_text())
    assert meta["schema"].rsplit("/", 1)[-1] == ZOO_SCHEMA_NAME
    (bundle_path / "eval").mkdir(exist_ok=True)
    shutil.copyfile(SCHEMA, bundle_path / "eval" / "schema.json")
    verify_metadata(
        meta_file=str(bundle_path / "configs" / "metadata.json"), filepath=str(bundle_path / "eval" / "schema.json")
    )
    # verify_version_changes(): the version must be in the changelog
    assert meta["version"] in meta["changelog"]


def pretty_format_json(*args: str) -> subprocess.CompletedProcess:
    """The pre-commit-hooks package's ``pretty-format-json`` (the console script's entry point)."""
    return subprocess.run(
        [sys.executable, "-m", "pre_commit_hooks.pretty_format_json", *args],
        capture_output=True,
        text=True,
        check=False,
    )


def load_pyproject() -> dict:
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        tomllib = pytest.importorskip("tomli")
    return tomllib.loads((REPO / "pyproject.toml").read_text())


# --- metadata ---------------------------------------------------------------------------------------------------


def test_the_schema_is_the_zoo_schema_unchanged():
    assert hashlib.sha256(SCHEMA.read_bytes()).hexdigest() == ZOO_SCHEMA_SHA256
    assert json.loads(SCHEMA.read_text())["$schema"] == "https://json-schema.org/draft/2019-09/schema"


@pytest.mark.parametrize("bundle", BUNDLES)
def test_metadata_validates_against_the_zoo_schema(bundle, tmp_path):
    zoo_verify_metadata(zoo_copy(bundle, tmp_path))


@pytest.mark.parametrize("bundle", BUNDLES)
def test_metadata_pins_only_indexed_packages_consistent_with_pyproject(bundle):
    """The zoo pip-installs ``monai==``, ``torch==``, ``numpy==`` and every required package ``name==version``:
    this package (on no index) must not be among them, and each pin must satisfy what pyproject.toml asks for.
    That each pinned version has wheels for Python 3.10 (the zoo CI's) was checked with
    ``pip index versions NAME --python-version 3.10 --only-binary=:all:``; no index is reachable from tests."""
    meta = json.loads((BUNDLES_DIR / bundle / "configs" / "metadata.json").read_text())
    project = load_pyproject()["project"]
    assert SpecifierSet(project["requires-python"]).contains("3.10")
    dependencies = {Requirement(text).name.lower(): Requirement(text).specifier for text in project["dependencies"]}
    pins = {"monai": meta["monai_version"], "torch": meta["pytorch_version"], "numpy": meta["numpy_version"]}
    pins.update({name.lower(): version for name, version in meta["required_packages_version"].items()})
    own_names = {
        project["name"].lower(),
        project["name"].lower().replace("-", "_"),
        "custom_networks",
        "custom-networks",
    }
    assert not own_names & set(pins), "the zoo cannot pip-install this repository's package"
    for name, version in pins.items():
        if name in dependencies:
            assert dependencies[name].contains(version), f"{name}=={version} outside pyproject's {dependencies[name]}"
    torch_pin = [
        line for line in (REPO / "requirements" / "torch-cpu.txt").read_text().splitlines() if line[:1].isalpha()
    ]
    assert torch_pin == [f"torch=={meta['pytorch_version']}"]


# --- pre-commit hooks -------------------------------------------------------------------------------------------


def test_every_bundle_json_passes_the_zoo_pretty_format_hook(tmp_path):
    files = [str(path) for path in repository_files("bundles") if path.suffix == ".json"]
    assert {str(path) for path in BUNDLES_DIR.glob("*/configs/*.json")} <= set(files)
    result = pretty_format_json("--indent=4", "--no-sort-keys", *files)
    assert result.returncode == 0, result.stdout + result.stderr
    # the hook does fail on a file that is not in the format
    ugly = tmp_path / "ugly.json"
    ugly.write_text(json.dumps({"b": 1, "a": [1, 2]}, indent=2) + "\n")
    assert pretty_format_json("--indent=4", "--no-sort-keys", str(ugly)).returncode == 1


def test_bundle_files_pass_the_zoos_other_pre_commit_hooks(tmp_path):
    """end-of-file-fixer, trailing-whitespace, mixed-line-ending, detect-private-key and check-yaml on the text
    files (the fixers on a copy, since they rewrite what they fix), check-added-large-files (1024 kB) on all."""
    files = repository_files("bundles")
    text = [p for p in files if p.suffix in {".json", ".yaml", ".yml", ".md", ".txt", ".conf"} or p.name == "LICENSE"]
    copies = []
    for path in text:
        copy = tmp_path / path.relative_to(REPO)
        copy.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(path, copy)
        copies.append(str(copy))
    hooks = ["end_of_file_fixer", "trailing_whitespace_fixer", "mixed_line_ending", "detect_private_key"]
    runs = {hook: [sys.executable, "-m", f"pre_commit_hooks.{hook}", *copies] for hook in hooks}
    yaml_files = [c for c in copies if c.endswith((".yml", ".yaml"))]
    if yaml_files:
        runs["check_yaml"] = [sys.executable, "-m", "pre_commit_hooks.check_yaml", *yaml_files]
    runs["check_added_large_files"] = [
        sys.executable, "-m", "pre_commit_hooks.check_added_large_files", "--maxkb=1024", "--enforce-all",
        *(str(p.relative_to(REPO)) for p in files),
    ]  # fmt: skip
    for hook, args in runs.items():
        cwd = REPO if hook == "check_added_large_files" else tmp_path
        result = subprocess.run(args, cwd=cwd, capture_output=True, text=True, check=False)
        assert result.returncode == 0, f"{hook}: {result.stdout}{result.stderr}"


# --- bundle directory, shapes, TorchScript export ---------------------------------------------------------------


@pytest.mark.parametrize("bundle", BUNDLES)
def test_as_shipped_the_zoo_directory_check_misses_only_model_pt(bundle, tmp_path):
    """No bundle has weights trained on real data, so none ships models/model.pt or a large_files list (the bundle
    README's "Model Zoo" section says so and why); everything else the zoo requires is there."""
    bundle_path = zoo_copy(bundle, tmp_path)
    assert zoo_directory_problems(bundle_path) == ["missing models/model.pt"]


@pytest.mark.parametrize("bundle", BUNDLES)
def test_verify_net_in_out_as_the_zoo_calls_it(bundle, tmp_path):
    """The zoo's verify_data_shape(): the paper's widths at the metadata's spatial shape, no overrides."""
    bundle_path = zoo_copy(bundle, tmp_path)
    verify_net_in_out(
        net_id=NET_ID,
        meta_file=str(bundle_path / "configs" / "metadata.json"),
        config_file=str(bundle_path / "configs" / "inference.json"),
        bundle_root=str(bundle_path),
    )


@pytest.fixture()
def brain_with_demo_weights(tmp_path) -> Path:
    """The brain bundle with its demo weights where the zoo's download of a large_files.yml would put weights."""
    bundle_path = zoo_copy(BRAIN, tmp_path)
    shutil.copyfile(bundle_path / "models" / "demo_model.pt", bundle_path / "models" / "model.pt")
    return bundle_path


def test_brain_bundle_with_demo_weights_passes_the_zoo_checks_with_demo_json(brain_with_demo_weights):
    """Directory, version, metadata, verify_net_in_out and ckpt_export with the zoo's arguments, plus
    configs/demo.json (the demo widths) merged into config_file: the zoo's script itself passes no overrides."""
    bundle_path = brain_with_demo_weights
    configs = bundle_path / "configs"
    assert zoo_directory_problems(bundle_path) == []
    zoo_verify_metadata(bundle_path)
    config_files = [str(configs / "inference.json"), str(configs / "demo.json")]
    verify_net_in_out(
        net_id=NET_ID, meta_file=str(configs / "metadata.json"), config_file=config_files, bundle_root=str(bundle_path)
    )
    exported = bundle_path / "models" / "verify_model.ts"
    ckpt_export(
        net_id=NET_ID,
        filepath=str(exported),
        ckpt_file=str(bundle_path / "models" / "model.pt"),
        meta_file=str(configs / "metadata.json"),
        config_file=config_files,
        bundle_root=str(bundle_path),
    )
    assert not (bundle_path / "models" / "model.ts").exists()  # nothing else for the zoo to load
    scripted = torch.jit.load(str(exported))
    parser = ConfigParser()
    parser.read_config(config_files)
    eager = parser.get_parsed_content(NET_ID)
    eager.load_state_dict(torch.load(bundle_path / "models" / "model.pt", weights_only=True))
    eager.eval()
    torch.manual_seed(0)
    x = torch.rand(1, 1, 128, 128)
    with torch.no_grad():
        torch.testing.assert_close(scripted(x), eager(x), rtol=1e-5, atol=1e-5)


def test_the_zoos_own_ckpt_export_call_rejects_the_demo_weights(brain_with_demo_weights):
    """Exactly the zoo's call (configs/inference.json alone, the paper's widths): the demo weights do not fit, which
    is one reason they are not shipped as models/model.pt."""
    bundle_path = brain_with_demo_weights
    with pytest.raises(RuntimeError, match="size mismatch"):
        ckpt_export(
            net_id=NET_ID,
            filepath=str(bundle_path / "models" / "verify_model.ts"),
            ckpt_file=str(bundle_path / "models" / "model.pt"),
            meta_file=str(bundle_path / "configs" / "metadata.json"),
            config_file=str(bundle_path / "configs" / "inference.json"),
            bundle_root=str(bundle_path),
        )


# --- docs ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("bundle", BUNDLES)
def test_bundle_readme_has_the_zoo_sections_in_order(bundle):
    text = (BUNDLES_DIR / bundle / "docs" / "README.md").read_text()
    headings = [match.group(1).strip("* ") for match in re.finditer(r"^#{1,3} (.+)$", text, re.M)]
    found = [heading for heading in headings if heading in ZOO_README_SECTIONS]
    assert found == list(ZOO_README_SECTIONS)
    # what the zoo section promises about weights matches the folder
    for name in LARGE_FILE_NAMES:
        assert not (BUNDLES_DIR / bundle / name).exists() or name in text


@pytest.mark.parametrize("bundle", BUNDLES)
def test_data_license_says_what_the_bundle_ships(bundle):
    text = (BUNDLES_DIR / bundle / "docs" / "data_license.txt").read_text()
    shipped = [p for p in repository_files(f"bundles/{bundle}") if p.parent.name == "models" and p.suffix == ".pt"]
    samples = (BUNDLES_DIR / bundle / "sample_data").is_dir()
    if shipped or samples:
        assert "ships no data and no weights" not in text
        for path in shipped:
            assert f"models/{path.name}" in text
        if samples:
            assert "sample_data/" in text and "scripts/make_sample_study.py" in text
    else:
        assert "ships no data and no weights" in text
