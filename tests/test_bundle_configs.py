"""The bundles' configs come from one source (bundles/config_sources): drift check, regeneration, slot rules."""

from __future__ import annotations

import contextlib
import io
import json
import pydoc
import runpy
import shutil
import subprocess
import sys
from pathlib import Path

import monai.handlers
import pytest
import yaml
from monai.bundle import ConfigParser

from custom_networks.bundle_configs import (
    GENERATED_FILES,
    BundleSourceError,
    bundle_names,
    render_bundle,
    stale_bundle_configs,
    zoo_json,
)

from conftest import BUNDLES, BUNDLES_DIR, REPO

SCRIPT = REPO / "scripts" / "generate_bundle_configs.py"
SHARED_FILES = (
    "multi_gpu_train.json",
    "multi_gpu_evaluate.json",
    "inference_onnx.json",
    "logging.conf",
)


def generate(*args: str) -> subprocess.CompletedProcess:
    """The script's ``main`` in this process (a new interpreter spends seconds importing torch and MONAI)."""
    main = runpy.run_path(str(SCRIPT), run_name="generate_bundle_configs")["main"]
    stdout, stderr = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
        returncode = main(list(args))
    return subprocess.CompletedProcess(args, returncode, stdout.getvalue(), stderr.getvalue())


def copy_bundles(target: Path) -> Path:
    """The sources and the generated files of every bundle, nothing else (no weights, no sample data)."""
    shutil.copytree(BUNDLES_DIR / "config_sources", target / "config_sources")
    for bundle in BUNDLES:
        shutil.copytree(BUNDLES_DIR / bundle / "configs", target / bundle / "configs")
    return target


def contents(folder: Path) -> dict[str, str]:
    return {str(path.relative_to(folder)): path.read_text() for path in sorted(folder.rglob("*")) if path.is_file()}


def write_sources(root: Path, templates: dict, dataset: dict, bundle: dict, defaults: dict | None = None) -> Path:
    """Made-up config sources with one bundle ``demo``; every generated file gets the same template."""
    shared = root / "config_sources" / "shared"
    (root / "config_sources" / "datasets").mkdir(parents=True)
    shared.mkdir()
    for name, template in GENERATED_FILES.items():
        (shared / template).write_text(yaml.safe_dump(templates) if name.endswith(".json") else "[loggers]\n")
    (shared / "defaults.yaml").write_text(yaml.safe_dump(defaults or {}))
    (root / "config_sources" / "datasets" / "data.yaml").write_text(yaml.safe_dump(dataset))
    (root / "config_sources" / "demo.yaml").write_text(yaml.safe_dump({"dataset": "data", **bundle}))
    return root


def test_every_bundle_has_a_source_and_its_generated_files_match_it():
    assert bundle_names(BUNDLES_DIR) == sorted(BUNDLES)
    assert stale_bundle_configs(BUNDLES_DIR) == []


def test_regenerating_the_configs_changes_nothing(tmp_path):
    bundles = copy_bundles(tmp_path / "bundles")
    before = contents(bundles)
    command = [sys.executable, str(SCRIPT), "--bundles-dir", str(bundles)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout == ""
    assert contents(bundles) == before
    assert generate("--bundles-dir", str(bundles), "--check").returncode == 0


def test_check_names_a_stale_file_and_generation_restores_it(tmp_path):
    bundles = copy_bundles(tmp_path / "bundles")
    edited = bundles / "lgg_mri_cbam_unet" / "configs" / "train.json"
    original = edited.read_text()
    edited.write_text(original.replace('"learning_rate": 0.0001', '"learning_rate": 0.001'))
    (bundles / "isic2018_skin_sc_unext" / "configs" / "logging.conf").unlink()

    check = generate("--bundles-dir", str(bundles), "--check")
    assert check.returncode == 1
    stale = sorted(line.split()[1] for line in check.stderr.splitlines())
    assert stale == [str(bundles / "isic2018_skin_sc_unext/configs/logging.conf"), str(edited)]

    done = generate("--bundles-dir", str(bundles))
    assert done.returncode == 0 and len(done.stdout.splitlines()) == 2
    assert edited.read_text() == original
    assert generate("--bundles-dir", str(bundles), "--check").returncode == 0


def test_slots_are_replaced_spliced_into_lists_and_merged_into_mappings(tmp_path):
    templates = {
        "size": "<size>",
        "folder": "<root>/to_segment",
        "steps": ["first", "<middle>", "last", "<single>"],
        "settings": {"fixed": 1, "<extra>": None},
        "nested": "<nested>",
    }
    dataset = {"root": "/data/x", "size": [8, 8], "middle": ["a", "b"], "single": {"k": "<root>"}}
    bundle = {"extra": {"added": True}, "nested": {"inner": "<size>"}}
    root = write_sources(tmp_path, templates, dataset, bundle, defaults={"unused_default": 0})
    train = json.loads(render_bundle(root, "demo")["train.json"])
    assert train == {
        "size": [8, 8],
        "folder": "/data/x/to_segment",
        "steps": ["first", "a", "b", "last", {"k": "/data/x"}],
        "settings": {"fixed": 1, "added": True},
        "nested": {"inner": [8, 8]},
    }


@pytest.mark.parametrize(
    "templates, dataset, bundle, message",
    [
        ({"a": "<unset>"}, {}, {}, "slot <unset> is used by a template but set by no source file"),
        ({"a": "<x>"}, {"x": 1}, {"x_typo": 2}, "no template uses x_typo"),
        ({"a": {"<x>": None}}, {"x": [1]}, {}, "slot <x> is a key and needs a mapping"),
    ],
)
def test_inconsistent_sources_are_refused_with_the_file_and_the_reason(tmp_path, templates, dataset, bundle, message):
    root = write_sources(tmp_path, templates, dataset, bundle)
    with pytest.raises(BundleSourceError, match=message):
        render_bundle(root, "demo")
    done = generate("--bundles-dir", str(root), "--check")
    assert done.returncode == 2
    assert done.stderr.strip() == f"error: {root / 'config_sources' / 'demo.yaml'}: {message}"


def test_a_bundle_without_its_dataset_file_is_refused(tmp_path):
    root = write_sources(tmp_path, {"a": 1}, {}, {})
    (root / "config_sources" / "demo.yaml").write_text("dataset: missing\n")
    with pytest.raises(BundleSourceError, match="dataset 'missing' has no file"):
        render_bundle(root, "demo")


def test_bundle_json_files_are_in_the_model_zoo_format():
    """The zoo's pre-commit hook ``pretty-format-json --indent=4 --no-sort-keys`` would change none of them."""
    files = sorted(BUNDLES_DIR.glob("*/configs/*.json"))
    assert len(files) >= 7 * len(BUNDLES)
    for path in files:
        text = path.read_text()
        assert text == zoo_json(json.loads(text)), path


@pytest.mark.parametrize("name", SHARED_FILES)
def test_files_without_paper_choices_are_the_same_in_every_bundle(name):
    texts = {(BUNDLES_DIR / bundle / "configs" / name).read_text() for bundle in BUNDLES}
    assert len(texts) == 1


def handler_class(target: str) -> type:
    return pydoc.locate(target) if "." in target else getattr(monai.handlers, target)


@pytest.mark.parametrize("bundle", BUNDLES)
def test_every_rank_runs_the_schedule_and_validation_and_rank_zero_the_rest(bundle):
    """multi_gpu_train.json picks each rank's handlers by kind from train.json's one list, so a CheckpointLoader
    that MONAI Label inserts first stays on every rank; the torchrun test in test_bundle_training.py runs it."""
    configs = BUNDLES_DIR / bundle / "configs"
    multi_gpu = ConfigParser.load_config_file(configs / "multi_gpu_train.json")
    every_rank = ConfigParser({"kinds": multi_gpu["handlers_on_every_rank"]}).get_parsed_content("kinds")
    assert multi_gpu["train#trainer#train_handlers"] == (
        "$[h for h in @train#handlers if dist.get_rank() == 0 or isinstance(h, @handlers_on_every_rank)]"
    )
    handlers = ConfigParser.load_config_file(configs / "train.json")["train"]["handlers"]
    handlers.insert(0, {"_target_": "CheckpointLoader"})
    kinds = [handler_class(item["_target_"]) for item in handlers]
    on_every_rank = [kind.__name__ for kind in kinds if issubclass(kind, every_rank)]
    schedule = ["LrScheduleHandler"] if bundle == "isic2018_skin_sc_unext" else []
    assert on_every_rank == ["CheckpointLoader", *schedule, "ValidationHandler"]
    rank_zero_only = {kind.__name__ for kind in kinds} - set(on_every_rank)
    assert rank_zero_only == {"CheckpointSaver", "TrainingCurvesSaver", "ProgressBar", "StatsHandler",
                              "TensorBoardStatsHandler"}
