"""Routing rules of the push listener: which bundle segments which received series, and which series are ignored.

In the style of MONAI Deploy's DICOM series selector (``dicom_series_selector_operator``): an ordered list of
declarative rules, each a set of conditions on the series' own attributes and what to do with a series that meets
all of them. The first rule whose conditions all hold decides; a series that no rule matches is skipped, and the
listener records it as such (ledger, audit log, report). Non-image objects (SEG, SR, RT plans, presentation
states: :data:`~custom_networks.pacs.selection.NON_IMAGE_MODALITIES`) are skipped before any rule is looked at, so
a PACS that routes the node's own results back to it starts no loop.

Conditions, each optional (a rule without any matches every image series):

- ``modality``: Modality, one value or a list (case-insensitive).
- ``series_description``: SeriesDescription shell pattern (``*``, ``?``, ``[...]``), case-insensitive, as
  ``pacs-batch --series-description`` matches it (:func:`~custom_networks.pacs.client.description_matches`).
- ``body_part``: BodyPartExamined, one value or a list (case-insensitive); a series without it does not match.

Action, exactly one:

- ``bundle``: a shipped bundle's name or a bundle folder (a relative folder is looked up beside the rules file
  first), with the optional ``model``, ``weights``, ``demo``, ``device`` and ``overrides`` of a
  :class:`~custom_networks.runtime.BundleRequest`;
- ``ignore: true``: the series is skipped (localizers, screenshots, dose reports).

Example ``routing.yaml`` (a ``.json`` file with the same structure works too)::

    rules:
      - name: localizers
        series_description: "*localizer*"
        ignore: true
      - name: brain-mr
        modality: MR
        body_part: [BRAIN, HEAD]
        series_description: "*T1*"
        bundle: brain_tumor_mri_gsconv_eca_unet
        overrides: {"save_secondary_capture": true}
      - name: chest-radiographs
        modality: [CR, DX]
        bundle: chest_xray_lung_ag_min_aspp_unet
        model: int8

and in Python::

    rules = load_rules(Path("routing.yaml"))
    route = rules.route(SeriesAttributes(modality="MR", series_description="AX T1 post", body_part="BRAIN"))
    route.rule.name, route.request.bundle      # ("brain-mr", "brain_tumor_mri_gsconv_eca_unet")
    rules.route(SeriesAttributes(modality="CT")).reason   # "no routing rule matches (CT)"
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import yaml

from custom_networks.errors import InputError, closest
from custom_networks.pacs.client import description_matches
from custom_networks.pacs.selection import NON_IMAGE_MODALITIES
from custom_networks.runtime import MODEL_CHOICES, BundleRequest

__all__ = ["Route", "RoutingRule", "RoutingRules", "SeriesAttributes", "load_rules", "rules_from_data"]

_CONDITIONS = ("modality", "series_description", "body_part")
_REQUEST_FIELDS = ("model", "weights", "demo", "device", "overrides")
_RULE_FIELDS = ("name", *_CONDITIONS, "bundle", "ignore", *_REQUEST_FIELDS)
_BUNDLE_CONFIG = Path("configs") / "inference.json"


@dataclass(frozen=True)
class SeriesAttributes:
    """What a rule looks at: the series' Modality, SeriesDescription and BodyPartExamined (no patient data)."""

    modality: str = ""
    series_description: str = ""
    body_part: str = ""


@dataclass(frozen=True)
class RoutingRule:
    """One rule: conditions (empty ones hold for every series) and a bundle request, or none to ignore the series.

    Args:
        name: how the audit log, ledger and report name the rule.
        modality: accepted Modality values, upper case (empty: any).
        series_description: SeriesDescription shell pattern (``None``: any).
        body_part: accepted BodyPartExamined values, upper case (empty: any).
        request: the bundle to run; ``None`` ignores the series.
    """

    name: str
    modality: tuple[str, ...] = ()
    series_description: str | None = None
    body_part: tuple[str, ...] = ()
    request: BundleRequest | None = None

    @property
    def ignores(self) -> bool:
        return self.request is None

    def matches(self, series: SeriesAttributes) -> bool:
        """Whether every condition of the rule holds for ``series``."""
        if self.modality and series.modality.upper() not in self.modality:
            return False
        if self.body_part and series.body_part.upper() not in self.body_part:
            return False
        return description_matches(self.series_description, series.series_description)


@dataclass(frozen=True)
class Route:
    """What the rules decided for one series: the rule that matched (``None``: none did), the bundle request
    (``None``: skip the series) and, for a skipped series, the one-line reason."""

    rule: RoutingRule | None
    request: BundleRequest | None
    reason: str = ""

    @property
    def skipped(self) -> bool:
        return self.request is None


@dataclass(frozen=True)
class RoutingRules:
    """The ordered rules of one rules file (``source`` names it in messages)."""

    rules: tuple[RoutingRule, ...]
    source: str = ""

    def route(self, series: SeriesAttributes) -> Route:
        """The first matching rule's decision for ``series``; non-image objects and unmatched series are
        skipped."""
        if series.modality.upper() in NON_IMAGE_MODALITIES:
            return Route(None, None, f"non-image object ({series.modality.upper()}), never segmented")
        for rule in self.rules:
            if rule.matches(series):
                if rule.ignores:
                    return Route(rule, None, f"ignored by routing rule '{rule.name}'")
                return Route(rule, rule.request)
        return Route(None, None, f"no routing rule matches ({series.modality or 'no modality'})")

    def bundle_rules(self) -> tuple[RoutingRule, ...]:
        """The rules that run a bundle (not the ones that ignore series)."""
        return tuple(rule for rule in self.rules if not rule.ignores)


def load_rules(path: Path, device: str = "auto") -> RoutingRules:
    """The rules in the YAML or JSON file ``path`` (see the module docstring).

    Args:
        path: the rules file; ``.json`` is read as JSON, anything else as YAML (which JSON is a subset of).
        device: the device of rules that do not name one.

    Raises:
        InputError: the file is missing or malformed, or a rule is (parameter ``rules``).
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"rules {path}: no such file", parameter="rules")
    text = path.read_text(encoding="utf-8")
    as_json = path.suffix.lower() == ".json"
    try:
        data = json.loads(text) if as_json else yaml.safe_load(text)
    except json.JSONDecodeError as error:
        raise InputError(f"rules {path}: not valid JSON (line {error.lineno})", parameter="rules") from None
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark is not None else ""
        raise InputError(f"rules {path}: not valid YAML{where}", parameter="rules") from None
    return rules_from_data(data, str(path), path.parent, device)


def rules_from_data(data: object, source: str = "rules", base_dir: Path | None = None,
                    device: str = "auto") -> RoutingRules:
    """The rules of an already parsed rules file: ``{"rules": [rule, ...]}``.

    Args:
        data: the parsed file.
        source: how messages name the file.
        base_dir: where relative bundle folders are looked up first (the rules file's folder).
        device: the device of rules that do not name one.

    Raises:
        InputError: the structure or a rule is malformed (parameter ``rules``).
    """
    if not isinstance(data, Mapping) or set(data) != {"rules"} or not isinstance(data["rules"], list):
        raise InputError(f"rules {source}: expected a mapping with one key, rules: a list of rules", parameter="rules")
    if not data["rules"]:
        raise InputError(f"rules {source}: no rules; every series would be skipped", parameter="rules")
    rules = tuple(_rule(item, number, source, base_dir, device) for number, item in enumerate(data["rules"], 1))
    names = [rule.name for rule in rules]
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        raise InputError(f"rules {source}: rule names used twice: {', '.join(duplicates)}", parameter="rules")
    return RoutingRules(rules, source)


def _rule(item: object, number: int, source: str, base_dir: Path | None, device: str) -> RoutingRule:
    """One rule from its mapping; ``number`` (from 1) names it in messages and by default."""
    where = f"rules {source}: rule {number}"
    if not isinstance(item, Mapping):
        raise InputError(f"{where}: expected a mapping of conditions and a bundle (or ignore: true)",
                         parameter="rules")
    name = str(item.get("name") or f"rule {number}")
    where = f"rules {source}: rule {number} ('{name}')"
    for key in item:
        if key not in _RULE_FIELDS:
            hint = closest(str(key), list(_RULE_FIELDS))
            raise InputError(f"{where}: unknown field '{key}'" + (f"; did you mean {hint}?" if hint else
                                                                  f"; fields: {', '.join(_RULE_FIELDS)}"),
                             parameter="rules")
    ignore = item.get("ignore", False)
    if not isinstance(ignore, bool):
        raise InputError(f"{where}: ignore must be true or false", parameter="rules")
    if ignore == ("bundle" in item):
        raise InputError(f"{where}: give either a bundle or ignore: true", parameter="rules")
    if ignore and any(key in item for key in _REQUEST_FIELDS):
        raise InputError(f"{where}: a rule that ignores series takes no {'/'.join(_REQUEST_FIELDS)}",
                         parameter="rules")
    pattern = item.get("series_description")
    if pattern is not None and not isinstance(pattern, str):
        raise InputError(f"{where}: series_description must be a text pattern", parameter="rules")
    return RoutingRule(
        name=name,
        modality=_values(item.get("modality"), "modality", where),
        series_description=pattern or None,
        body_part=_values(item.get("body_part"), "body_part", where),
        request=None if ignore else _request(item, where, base_dir, device),
    )


def _values(value: object, field: str, where: str) -> tuple[str, ...]:
    """A condition's accepted values, upper case: one text value or a list of them."""
    if value is None:
        return ()
    values = [value] if isinstance(value, str) else value
    if not isinstance(values, Sequence) or not values or not all(isinstance(v, str) and v.strip() for v in values):
        raise InputError(f"{where}: {field} must be a value or a list of values", parameter="rules")
    return tuple(v.strip().upper() for v in values)


def _request(item: Mapping, where: str, base_dir: Path | None, device: str) -> BundleRequest:
    bundle = item["bundle"]
    if not isinstance(bundle, str) or not bundle.strip():
        raise InputError(f"{where}: bundle must be a bundle name or folder", parameter="rules")
    if base_dir is not None and not Path(bundle).is_absolute() and (base_dir / bundle / _BUNDLE_CONFIG).is_file():
        bundle = str((base_dir / bundle).resolve())
    model = item.get("model", "auto")
    if model not in MODEL_CHOICES:
        raise InputError(f"{where}: model {model}: expected one of {', '.join(MODEL_CHOICES)}", parameter="rules")
    overrides = item.get("overrides") or {}
    if not isinstance(overrides, Mapping):
        raise InputError(f"{where}: overrides must map config ids to values", parameter="rules")
    demo = item.get("demo", False)
    if not isinstance(demo, bool):
        raise InputError(f"{where}: demo must be true or false", parameter="rules")
    weights = item.get("weights")
    if weights is not None and base_dir is not None and not Path(str(weights)).is_absolute():
        weights = str((base_dir / str(weights)).resolve())
    return BundleRequest(bundle=bundle, model=str(model), weights=weights, demo=demo,
                         device=str(item.get("device") or device), overrides=dict(overrides))
