"""The project's command line (``attention-unets``) and the one-line errors of ``python -m monai.bundle run``.

The console script runs as a new user runs it (a subprocess); option checks run in-process through ``main``.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from custom_networks.cli import main
from custom_networks.deploy.int8_models import int8_model_for_this_cpu

from conftest import BUNDLES_DIR, cli_args, run_parallel, subprocess_env

BRAIN = "brain_tumor_mri_gsconv_eca_unet"
SAMPLE = BUNDLES_DIR / BRAIN / "sample_data"
LGG = "lgg_mri_cbam_unet"


def one_line_error(capsys, argv: list[str]) -> str:
    """Run ``attention-unets <argv>`` in-process; it must fail with exit 2 and one line on stderr."""
    assert main(argv) == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in captured.err, captured.err
    return lines[0]


def test_help_loads_neither_torch_nor_monai():
    code = (
        "import sys, contextlib, io\n"
        "from custom_networks.cli import main\n"
        "for argv in (['--help'], ['infer', '--help']):\n"
        "    with contextlib.redirect_stdout(io.StringIO()):\n"
        "        try: main(argv)\n"
        "        except SystemExit: pass\n"
        "print(sorted(name for name in ('torch', 'monai', 'numpy') if name in sys.modules))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert done.stdout.strip() == "[]"


def test_console_script_is_installed_and_answers_help():
    script = shutil.which("attention-unets")
    assert script, "pip install -e . installs the attention-unets console script"
    done = subprocess.run([script, "infer", "--help"], capture_output=True, text=True, timeout=60, check=True)
    for option in ("--bundle", "--input", "--output", "--device", "--model", "--overlays", "--demo", "--set"):
        assert option in done.stdout


@pytest.mark.parametrize(
    "argv, expected",
    [
        (["infer", "--save_overlay", "true"], "unknown option --save_overlay; did you mean --overlays?"),
        (["infer", "--overlay_slice", "5"], "unknown option --overlay_slice; did you mean --overlays?"),
        (["infr"], "unknown command 'infr'; did you mean infer?"),
        (["infer", "--bundle", "x", "--input", "y", "--output", "z", "--model", "fp16"], "invalid choice: 'fp16'"),
    ],
)
def test_misspelled_options_get_one_line_with_the_closest_valid_one(capsys, argv, expected):
    assert expected in one_line_error(capsys, argv)


def test_unknown_bundle_input_config_id_and_device_are_refused_before_any_work(capsys, tmp_path):
    base = ["infer", "--input", str(SAMPLE), "--output", str(tmp_path / "out")]
    message = one_line_error(capsys, [*base, "--bundle", "brain_tumor_mri_gsconv_eca"])
    assert message.startswith("error: --bundle brain_tumor_mri_gsconv_eca: no bundle there")
    assert "did you mean brain_tumor_mri_gsconv_eca_unet?" in message
    missing = tmp_path / "nothing_here"
    message = one_line_error(capsys, ["infer", "--bundle", BRAIN, "--input", str(missing), "--output", "o"])
    assert message == f"error: --input {missing}: no such file or folder"
    message = one_line_error(capsys, [*base, "--bundle", BRAIN, "--demo", "--set", "network_def#feature=[8,16]"])
    assert "no config id 'network_def#feature'; did you mean network_def#features?" in message
    assert not (tmp_path / "out").exists()


def test_missing_model_names_the_file_and_the_ways_out(capsys, tmp_path):
    bundle = tmp_path / LGG
    shutil.copytree(BUNDLES_DIR / LGG / "configs", bundle / "configs")
    base = ["infer", "--bundle", str(bundle), "--input", str(SAMPLE), "--output", str(tmp_path / "out")]
    message = one_line_error(capsys, base)
    assert message.startswith(f"error: {bundle / 'models' / 'model.pt'}: model file not found; train the bundle")
    assert "--demo" in message and "--weights" in message
    message = one_line_error(capsys, [*base, "--model", "int8"])
    # the int8 file this CPU runs exactly (int8 weights with VNNI, uint8 weights on other x86 CPUs)
    int8_file = Path(int8_model_for_this_cpu(bundle / "models")).name
    assert f"{int8_file}: model file not found; export it with scripts/export_bundle_models.py" in message
    assert "ships no demo weights" in one_line_error(capsys, [*base, "--demo"])


@pytest.mark.subprocess
def test_one_file_is_one_case_and_nothing_lands_in_the_bundle(tmp_path):
    """``--input case.nii.gz`` segments that case; masks, summary and overlays all go to ``--output``."""
    bundle = tmp_path / "bundle"
    shutil.copytree(BUNDLES_DIR / BRAIN, bundle, ignore=shutil.ignore_patterns("sample_data"))
    before = sorted(str(path) for path in bundle.rglob("*"))
    output = tmp_path / "out"
    done = subprocess.run(
        ["attention-unets", "infer", "--bundle", str(bundle), "--demo", "--input", str(SAMPLE / "mr_volume.nii.gz"),
         "--output", str(output), "--device", "cpu", "--overlays"],
        capture_output=True, text=True, timeout=600, env=subprocess_env(threads=2), cwd=tmp_path,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    assert "[1/1] mr_volume segmented" in done.stdout
    assert "1 case(s) ok, 0 failed" in done.stdout
    summary = json.loads((output / "run_summary.json").read_text())
    assert [case["case"] for case in summary["cases"]] == ["mr_volume"]
    mask = nib.load(output / "mr_volume_seg.nii.gz")
    image = nib.load(SAMPLE / "mr_volume.nii.gz")
    assert mask.shape == image.shape[:3]
    np.testing.assert_allclose(mask.affine, image.affine, atol=1e-5)
    assert sorted(str(path) for path in bundle.rglob("*")) == before


@pytest.mark.subprocess
def test_monai_bundle_run_prints_one_line_for_bad_input_and_takes_a_file(tmp_path):
    """``python -m monai.bundle run`` itself: a missing checkpoint (no ``--bundle_root``, run from a folder
    without ``models/``), a misspelled switch value, a network switch written ``false``, and a single NIfTI file as
    ``dataset_dir``."""
    brain = {"bundle_root": str(BUNDLES_DIR / BRAIN), "output_dir": str(tmp_path / "demo_out")}
    jobs = {
        # as from the repository root without --bundle_root: bundle_root "." holds no models/model.pt
        "no_checkpoint": (cli_args(LGG, ["inference.json"], {"dataset_dir": str(SAMPLE)}), tmp_path / "root"),
        "bad_switch": (cli_args(BRAIN, ["inference.json", "demo.json"],
                                {**brain, "dataset_dir": str(SAMPLE), "save_overlays": "ture"}), tmp_path),
        "one_file": (cli_args(BRAIN, ["inference.json", "demo.json"],
                              {**brain, "dataset_dir": str(SAMPLE / "mr_volume.nii.gz")}), tmp_path),
        # Fire passes a lowercase false as the string "false", which read as true would run the other form
        "string_switch": (cli_args(BRAIN, ["inference.json", "demo.json"],
                                   {**brain, "dataset_dir": str(SAMPLE), "network_def#gsconv_shortcut": "false"}),
                          tmp_path),
    }
    results = run_parallel(jobs)
    for name, expected in {
        "no_checkpoint": "bundle input error: ./models/model.pt: model file not found; train the bundle",
        "bad_switch": "save_overlays: 'ture' is not a switch value (use true or false)",
        "string_switch": "GSConvECAUNet: gsconv_shortcut must be True or False, got the str 'false'.",
    }.items():
        result = results[name]
        assert result.returncode == 1, name
        assert "Traceback" not in result.stderr, result.stderr[-3000:]
        assert result.stderr.strip().splitlines()[-1].startswith(expected), result.stderr[-1000:]
    results["one_file"].check()
    assert (tmp_path / "demo_out" / "mr_volume_seg.nii.gz").is_file()
    assert (tmp_path / "demo_out" / "run_summary.csv").is_file()
    assert not (Path(BUNDLES_DIR / BRAIN) / "eval" / "run_summary.csv").exists()
