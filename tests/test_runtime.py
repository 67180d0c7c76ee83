"""Small pieces of the bundle runtime that every way in shares: the demo weights' network read from ``demo.json``,
and override values written for ``python -m monai.bundle run``'s command line (which Fire parses)."""

from __future__ import annotations

import json

import pytest
from fire.parser import DefaultParseValue

from custom_networks.errors import InputError
from custom_networks.runtime import demo_network_overrides
from custom_networks.runtime.overrides import bundle_cli_value

from conftest import BUNDLES_DIR

BRAIN = "brain_tumor_mri_gsconv_eca_unet"


def test_demo_network_overrides_are_demo_json_less_its_checkpoint():
    demo = json.loads((BUNDLES_DIR / BRAIN / "configs" / "demo.json").read_text())
    overrides = demo_network_overrides(BRAIN)
    assert overrides == {key: demo[key] for key in demo if key not in ("ckpt_path", "demo_weights")}
    # the demo weights were trained in the paper's form, which the bundle's inference.json no longer builds
    assert overrides["network_def#gsconv_shortcut"] is False
    inference = json.loads((BUNDLES_DIR / BRAIN / "configs" / "inference.json").read_text())
    assert inference["network_def"]["gsconv_shortcut"] is True


def test_demo_network_overrides_of_a_bundle_without_demo_weights_name_the_parameter():
    with pytest.raises(InputError, match="chest_xray_lung_ag_min_aspp_unet ships no demo weights") as raised:
        demo_network_overrides("chest_xray_lung_ag_min_aspp_unet")
    assert raised.value.parameter == "demo"


@pytest.mark.parametrize("value", [
    False, True, None, 3, 1e-4, [8, 16, 32, 64], ["leakyrelu", {"negative_slope": 0.1}], {"a": [1, False]},
])
def test_bundle_cli_values_read_back_as_written(value):
    assert DefaultParseValue(bundle_cli_value(value)) == value
    assert type(DefaultParseValue(bundle_cli_value(value))) is type(value)


def test_bundle_cli_strings_pass_unchanged_and_json_would_not_do():
    expression = "$@bundle_root + '/models/model.pt'"
    assert bundle_cli_value(expression) == expression
    assert DefaultParseValue(json.dumps(False)) == "false"  # the trap bundle_cli_value avoids: a truthy string
