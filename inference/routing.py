"""Which model reads which series: the site's rules file, with a hospital's own rules over it.

The rules file is TOML (``PACS_AI_ROUTING``; the default ships as
``models/routing.toml``). Each model has one rule; a hospital may replace any field of it::

    [models.cxr-pneumonia]
    modality = ["CR", "DX"]
    body_part = ["CHEST", "THORAX", ""]        # "" matches a series that does not say
    view_position = ["PA", "AP", ""]
    exclude_description = ["*lat*"]           # glob patterns, case-insensitive
    min_instances = 1

    [hospitals.BVDK-LD.models.cxr-pneumonia]
    body_part = ["CHEST"]

A study goes to a model only if the model has a rule; the model reads the first series of
the study (in series number order) that passes every field of the rule. When none does,
the job is skipped with the reason each series failed, so that a knee sent to the chest
model says so.
"""

import fnmatch
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from inference.errors import NotApplicable, RoutingError


@dataclass(frozen=True, slots=True)
class SeriesFacts:
    """What the index knows of one series, enough to route it."""

    series_instance_uid: str
    series_number: int | None
    modality: str
    body_part: str
    view_position: str
    description: str
    instances: int
    slice_thickness: tuple[float, float] | None
    """The thinnest and thickest slice of the series, if its images say."""


@dataclass(frozen=True, slots=True)
class Rule:
    modality: tuple[str, ...] = ()
    body_part: tuple[str, ...] = ()
    view_position: tuple[str, ...] = ()
    description: tuple[str, ...] = ()
    """Glob patterns one of which the series description must match; none: any."""
    exclude_description: tuple[str, ...] = ()
    min_instances: int = 1
    max_instances: int | None = None
    min_slice_thickness: float | None = None
    max_slice_thickness: float | None = None

    def refusal(self, series: SeriesFacts) -> str | None:
        """Why `series` is not for this rule's model, or None if it is."""
        said = _said(series)
        for name, wanted, value in (
            ("modality", self.modality, series.modality),
            ("body part", self.body_part, series.body_part),
            ("view position", self.view_position, series.view_position),
        ):
            if wanted and value.upper() not in wanted:
                return f"{said}: {name} {value or '(none)'} is not {' or '.join(_show(wanted))}"
        text = series.description.casefold()
        if self.description and not any(fnmatch.fnmatchcase(text, p) for p in self.description):
            return f"{said}: its description matches none of {', '.join(self.description)}"
        for pattern in self.exclude_description:
            if fnmatch.fnmatchcase(text, pattern):
                return f"{said}: its description matches the excluded {pattern}"
        if series.instances < self.min_instances:
            return f"{said}: {series.instances} images, fewer than {self.min_instances}"
        if self.max_instances is not None and series.instances > self.max_instances:
            return f"{said}: {series.instances} images, more than {self.max_instances}"
        low, high = self.min_slice_thickness, self.max_slice_thickness
        if low is not None or high is not None:
            if series.slice_thickness is None:
                return f"{said}: its images do not give their slice thickness"
            thinnest, thickest = series.slice_thickness
            if low is not None and thinnest < low:
                return f"{said}: slices of {thinnest:g} mm, thinner than {low:g} mm"
            if high is not None and thickest > high:
                return f"{said}: slices of {thickest:g} mm, thicker than {high:g} mm"
        return None


@dataclass(frozen=True, slots=True)
class Routing:
    rules: Mapping[str, Rule]
    hospitals: Mapping[str, Mapping[str, Rule]] = field(default_factory=dict)

    def rule(self, model: str, hospital: str | None) -> Rule | None:
        """The rule for `model` on `hospital`'s studies; None: the model is not routed."""
        if hospital is not None and model in self.hospitals.get(hospital, {}):
            return self.hospitals[hospital][model]
        return self.rules.get(model)

    def models(self) -> list[str]:
        """Every model some rule routes to."""
        named = set(self.rules)
        for rules in self.hospitals.values():
            named.update(rules)
        return sorted(named)


def choose(rule: Rule, model: str, series: Sequence[SeriesFacts]) -> SeriesFacts:
    """The series `model` reads; raises NotApplicable saying why no series fits."""
    refusals = []
    for each in sorted(series, key=lambda s: (s.series_number is None, s.series_number or 0)):
        why = rule.refusal(each)
        if why is None:
            return each
        refusals.append(why)
    if not refusals:
        raise NotApplicable(f"no series in the study for {model}")
    raise NotApplicable(f"no series for {model}: " + "; ".join(refusals))


def parse(document: Mapping[str, Any], origin: str = "routing") -> Routing:
    """Rules from a parsed TOML document; RoutingError names what is wrong."""
    unknown = set(document) - {"models", "hospitals"}
    if unknown:
        raise RoutingError(f"{origin}: unknown section {', '.join(sorted(unknown))}")
    rules = {
        name: _rule(body, f"{origin}: models.{name}", None)
        for name, body in _table(document.get("models", {}), f"{origin}: models").items()
    }
    hospitals: dict[str, dict[str, Rule]] = {}
    for code, section in _table(document.get("hospitals", {}), f"{origin}: hospitals").items():
        where = f"{origin}: hospitals.{code}"
        extra = set(_table(section, where)) - {"models"}
        if extra:
            raise RoutingError(f"{where}: unknown key {', '.join(sorted(extra))}")
        hospitals[code] = {
            name: _rule(body, f"{where}.models.{name}", rules.get(name))
            for name, body in _table(section.get("models", {}), f"{where}.models").items()
        }
    return Routing(rules, hospitals)


def read(path: Path) -> Routing:
    """The rules file at `path`; RoutingError if it is missing or wrong."""
    try:
        document = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise RoutingError(f"cannot read the AI routing rules {path}: {exc}") from None
    return parse(document, str(path))


_FIELDS = {f.name: f for f in fields(Rule)}
_PATTERNS = ("description", "exclude_description")


def _rule(body: Any, where: str, base: Rule | None) -> Rule:
    values: dict[str, Any] = {}
    for key, value in _table(body, where).items():
        if key not in _FIELDS:
            raise RoutingError(f"{where}: unknown key {key} (known: {', '.join(_FIELDS)})")
        if key in ("min_instances", "max_instances"):
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise RoutingError(f"{where}.{key}: a whole number, not {value!r}")
        elif key.endswith("slice_thickness"):
            if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
                raise RoutingError(f"{where}.{key}: millimetres, not {value!r}")
            value = float(value)
        else:
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                raise RoutingError(f"{where}.{key}: a list of strings, not {value!r}")
            value = tuple(v.casefold() if key in _PATTERNS else v.upper() for v in value)
        values[key] = value
    return replace(base, **values) if base is not None else Rule(**values)


def _table(value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise RoutingError(f"{where}: a table, not {value!r}")
    return value


def _said(series: SeriesFacts) -> str:
    number = "" if series.series_number is None else f" {series.series_number}"
    return f"series{number} ({series.modality or '?'} {series.body_part or ''})".replace(" )", ")")


def _show(values: tuple[str, ...]) -> list[str]:
    return [v or "(none)" for v in values]
