"""``pacs model``: the model bundles, each hospital's settings for them, and calibration on a
hospital's own cases (list, evaluate, set)."""

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from pacs.console import DataDir, console, errors, open_archive, os_user, settings_from
from pacs.settings import Settings

if TYPE_CHECKING:  # torch and the models load only when a command needs them
    from inference.bundles import BundleInfo
    from inference.cases import Cases
    from inference.evaluation import Evaluation
    from inference.metrics import Confusion
    from inference.model_settings import Choice

model_app = typer.Typer(help="AI models (MONAI bundles, pinned by hash).", no_args_is_help=True)

MIN_EACH = 10
"""Positive and negative cases needed, each, before `evaluate --apply` sets a threshold."""
_MAX_LISTED = 50
_EVIDENCE_SHOWN = 60

Hospital = Annotated[
    str | None,
    typer.Option(help="Hospital code; * for the site default"),
]
By = Annotated[
    str | None,
    typer.Option("--by", help="Who makes the change, for the audit trail [default: OS user]"),
]


def _fail(message: str, code: int) -> typer.Exit:
    errors.print(message)
    return typer.Exit(code)


def _bundle(settings: Settings, name: str) -> "BundleInfo":
    """The bundle called `name`; exit 2 with the names known if there is none."""
    from inference.bundles import discover
    from inference.errors import ModelRefused

    try:
        bundles = discover(settings.models_dir)
    except ModelRefused as exc:
        raise _fail(f"[red]{escape(exc.reason)}[/]", 2) from None
    for info in bundles:
        if info.name == name:
            return info
    known = ", ".join(info.name for info in bundles) or "none"
    raise _fail(
        f"[red]No model named {escape(name)!r}[/] in {escape(str(settings.models_dir))} "
        f"(known: {escape(known)})",
        2,
    )


def _who(by: str | None) -> str:
    if by is None:
        by = os_user()
    if not by.strip() or len(by) > 64:
        raise _fail("[red]--by is a name of 1 to 64 characters[/]", 2)
    return by.strip()


def _check_hospital(hospital: str) -> str:
    if not hospital.strip() or len(hospital) > 64:
        raise _fail("[red]--hospital is a code of 1 to 64 characters (* for the site)[/]", 2)
    return hospital.strip()


def _default_on(info: "BundleInfo") -> bool:
    """Whether the model runs where no setting says (as the inference service reads it)."""
    return bool(info.metadata.get("default_enabled", True))


def _has_archive(settings: Settings) -> bool:
    """Whether an archive exists to read settings from (listing must not create one)."""
    return settings.database_url is not None or (settings.data_dir / "index.db").exists()


def _threshold(info: "BundleInfo", value: float) -> str:
    """A threshold as its model means it: a score, or a quantity in the bundle's unit."""
    unit = info.metadata.get("threshold_unit")
    return f"{value:g} {unit}" if unit else f"{value:.4f}"


@model_app.command("list")
def model_list(data_dir: DataDir = None) -> None:
    """The model bundles: name, version, threshold, and whether their weights are the ones
    recorded (a model whose weights changed is refused); then each hospital's settings."""
    from inference.bundles import check_weights, discover
    from inference.errors import ModelRefused

    settings = settings_from(data_dir=data_dir)
    root = settings.models_dir
    try:
        bundles = discover(root)
    except ModelRefused as exc:
        raise _fail(f"[red]{escape(exc.reason)}[/]", 1) from None
    if not bundles:
        raise _fail(f"No model bundles in {escape(str(root))}", 1)
    table = Table(title=f"Models in {escape(str(root))}")
    for column in ("name", "version", "on by default", "threshold", "weights", "intended use"):
        table.add_column(column)
    refused = False
    for info in bundles:
        try:
            check_weights(info)
            state = f"[green]ok[/] {info.weights_sha256[:12]}"
        except ModelRefused:
            refused = True
            state = "[red]refused: not the pinned weights[/]"
        table.add_row(
            info.name,
            info.version,
            "yes" if _default_on(info) else "no",
            _threshold(info, info.threshold),
            state,
            info.intended_use,
        )
    console.print(table)
    _print_settings(settings)
    if refused:
        raise typer.Exit(1)


def _print_settings(settings: Settings) -> None:
    from inference.model_settings import SITE, rows

    if not _has_archive(settings):
        console.print(f"No archive at {escape(str(settings.data_dir))}: no hospital settings.")
        return
    with open_archive(settings) as archive:
        stored = rows(archive)
    if not stored:
        console.print("Hospital settings: none; every hospital uses each bundle's threshold.")
        return
    table = Table(title="Hospital settings (a hospital's own row wins over the site default *)")
    for column in ("model", "hospital", "enabled", "threshold", "set by", "when (UTC)", "evidence"):
        table.add_column(column)
    for row in stored:
        evidence = row.evidence or ""
        if len(evidence) > _EVIDENCE_SHOWN:
            evidence = evidence[: _EVIDENCE_SHOWN - 1] + "…"
        table.add_row(
            row.model,
            "* (site default)" if row.hospital == SITE else escape(row.hospital),
            {True: "yes", False: "[red]no[/]", None: "(default)"}[row.enabled],
            "(default)" if row.threshold is None else f"{row.threshold:.4f}",
            escape(row.updated_by),
            row.updated_at.strftime("%Y-%m-%d %H:%M"),
            escape(evidence),
        )
    console.print(table)


@model_app.command("evaluate")
def model_evaluate(
    name: Annotated[str, typer.Argument(help="The model bundle's name")],
    cases: Annotated[
        Path,
        typer.Option(
            help="Folder of DICOM files and/or PNG/JPEG images (searched recursively)",
            exists=True,
            file_okay=False,
        ),
    ],
    labels: Annotated[
        Path,
        typer.Option(
            help="CSV with a header and columns case,label: case a path under --cases or a "
            "StudyInstanceUID, label 1/0 (positive/negative, yes/no)",
            exists=True,
            dir_okay=False,
        ),
    ],
    target_sensitivity: Annotated[
        float,
        typer.Option(min=0.5, max=1.0, help="Share of positives the suggested threshold flags"),
    ] = 0.95,
    hospital: Hospital = None,
    apply: Annotated[
        bool,
        typer.Option(help="Set --hospital's threshold to the one reaching the target"),
    ] = False,
    by: By = None,
    json_output: Annotated[bool, typer.Option("--json", help="The report as JSON")] = False,
    data_dir: DataDir = None,
) -> None:
    """Score a hospital's labelled cases as the archive would, and report ROC AUC,
    sensitivity and specificity at the threshold in force, and the threshold that reaches
    the target sensitivity (--apply sets it for --hospital)."""
    from inference.bundles import load, sha256_of
    from inference.cases import find_cases, read_labels
    from inference.errors import EvaluationError, ModelRefused, RoutingError
    from inference.evaluation import check_classifier, evaluate, evidence
    from inference.model_settings import resolve, rows, set_choice
    from inference.routing import read

    settings = settings_from(data_dir=data_dir)
    info = _bundle(settings, name)
    if hospital is not None:
        hospital = _check_hospital(hospital)
    if apply and hospital is None:
        raise _fail("[red]--apply needs --hospital CODE[/] (* for the site default)", 2)
    who = _who(by) if apply else ""
    try:
        check_classifier(info)
        labelled = read_labels(labels)
    except EvaluationError as exc:
        raise _fail(f"[red]{escape(exc.reason)}[/]", 2) from None
    if not labelled:
        raise _fail(f"[red]{escape(str(labels))} has no label rows[/]", 2)
    try:
        rule = read(settings.routing_path()).rule(info.name, hospital)
    except RoutingError as exc:
        raise _fail(f"[red]{escape(exc.reason)}[/]", 2) from None
    if rule is None:
        errors.print(
            f"[yellow]No routing rule sends studies to {info.name}:[/] the archive runs it on "
            "none; DICOM cases are scored whatever their series."
        )
    found = find_cases(cases, labelled, rule, info.name)
    try:
        model = load(info.path)
    except ModelRefused as exc:
        raise _fail(f"[red]{escape(exc.reason)}[/]", 1) from None
    stored = []
    if apply or _has_archive(settings):  # an evaluation alone creates no archive
        with open_archive(settings) as archive:
            stored = rows(archive, info.name)
    choice = resolve(info, stored, hospital, default_on=_default_on(info))
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=errors,
    ) as progress:
        task = progress.add_task(f"Scoring with {info.name}", total=len(found.found))
        result = evaluate(
            model.network,
            found.found,
            rule=rule,
            model=info.name,
            threshold=choice.threshold,
            target_sensitivity=target_sensitivity,
            progress=lambda n: progress.advance(task, n),
        )
    labels_sha256 = sha256_of(labels)
    applied, refusal = None, None
    if apply:
        assert hospital is not None
        refusal = _apply_refusal(result)
        if refusal is None:
            assert result.reaching is not None
            said = evidence(
                result, labels_path=labels, labels_sha256=labels_sha256, cases=cases.resolve()
            )
            with open_archive(settings) as archive:
                set_choice(
                    archive,
                    info.name,
                    hospital,
                    by=who,
                    threshold=result.reaching.threshold,
                    evidence=said,
                )
            applied = {"hospital": hospital, "threshold": result.reaching.threshold, "by": who}
    if json_output:
        report = _report_json(info, result, found, choice, hospital, labels, labels_sha256)
        report["cases_path"] = str(cases.resolve())
        report["applied"] = applied
        report["not_applied"] = refusal
        typer.echo(json.dumps(report, indent=2))
    else:
        _print_report(info, result, found, choice, hospital)
        if applied is not None:
            where = "the site default" if hospital == "*" else f"hospital {hospital}"
            console.print(
                f"[green]Applied:[/] {escape(where)} now uses threshold "
                f"{applied['threshold']:.4f} for {info.name} (set by {escape(who)})."
            )
    if refusal is not None:
        raise _fail(f"[red]Not applied:[/] {refusal}", 1)
    if not result.scored:
        raise _fail("[red]No case could be scored.[/]", 1)


def _apply_refusal(result: "Evaluation") -> str | None:
    if result.positives < MIN_EACH or result.negatives < MIN_EACH:
        return (
            f"{result.positives} positive and {result.negatives} negative cases were scored; "
            f"a threshold is set from at least {MIN_EACH} of each."
        )
    return None


def _share(counts: "Confusion", positives: bool) -> str:
    if positives:
        value, hit, total = counts.sensitivity, counts.true_positives, counts.positives
    else:
        value, hit, total = counts.specificity, counts.true_negatives, counts.negatives
    return "n/a (no cases)" if value is None else f"{value:.3f} ({hit}/{total})"


def _print_report(
    info: "BundleInfo",
    result: "Evaluation",
    found: "Cases",
    choice: "Choice",
    hospital: str | None,
) -> None:
    whose = "the site default" if hospital in (None, "*") else f"hospital {hospital}"
    table = Table(title=f"{info.name} {info.version} on {escape(whose)}'s cases", show_header=False)
    table.add_column()
    table.add_column()
    table.add_row(
        "cases scored",
        f"{len(result.scored)} ({result.positives} positive, {result.negatives} negative)",
    )
    if result.unreadable:
        table.add_row("unreadable", str(len(result.unreadable)))
    if found.unmatched:
        table.add_row("labels matching no case", str(len(found.unmatched)))
    if result.auc is not None and result.auc_interval is not None:
        low, high = result.auc_interval
        table.add_row("ROC AUC", f"{result.auc:.3f} (95% CI {low:.3f}-{high:.3f})")
    else:
        table.add_row("ROC AUC", "n/a (needs positive and negative cases)")
    table.add_row(
        f"threshold in force ({escape(choice.source)})", f"{result.in_force.threshold:.4f}"
    )
    if not choice.enabled:
        table.add_row("", "[yellow]the model is off here[/] (pacs model set --enable)")
    table.add_row("  sensitivity", _share(result.in_force, positives=True))
    table.add_row("  specificity", _share(result.in_force, positives=False))
    reaching = result.reaching
    target = f"threshold for sensitivity >= {result.target_sensitivity:g}"
    if reaching is None:
        table.add_row(target, "n/a (no positive case)")
    else:
        table.add_row(target, f"{reaching.threshold:.4f}")
        table.add_row("  sensitivity", _share(reaching, positives=True))
        table.add_row("  specificity", _share(reaching, positives=False))
    console.print(table)
    for case in result.unreadable[:_MAX_LISTED]:
        console.print(f"[red]unreadable[/] {escape(case.case)}: {escape(case.reason)}")
    for label in found.unmatched[:_MAX_LISTED]:
        console.print(
            f"[yellow]no case[/] for line {label.row} ({escape(label.case)}): "
            f"{escape(label.reason)}"
        )
    hidden = max(0, len(result.unreadable) - _MAX_LISTED) + max(
        0, len(found.unmatched) - _MAX_LISTED
    )
    if hidden:
        console.print(f"... and {hidden} more (--json lists them all)")


def _report_json(
    info: "BundleInfo",
    result: "Evaluation",
    found: "Cases",
    choice: "Choice",
    hospital: str | None,
    labels: Path,
    labels_sha256: str,
) -> dict[str, Any]:
    def counts(confusion: "Confusion | None") -> dict[str, Any] | None:
        if confusion is None:
            return None
        return {
            "threshold": confusion.threshold,
            "sensitivity": confusion.sensitivity,
            "specificity": confusion.specificity,
            "true_positives": confusion.true_positives,
            "false_negatives": confusion.false_negatives,
            "true_negatives": confusion.true_negatives,
            "false_positives": confusion.false_positives,
        }

    return {
        "model": info.name,
        "version": info.version,
        "weights_sha256": info.weights_sha256,
        "hospital": hospital,
        "enabled": choice.enabled,
        "labels": str(labels.resolve()),
        "labels_sha256": labels_sha256,
        "cases": len(result.scored),
        "positives": result.positives,
        "negatives": result.negatives,
        "auc": result.auc,
        "auc_95ci": list(result.auc_interval) if result.auc_interval else None,
        "threshold_in_force": {"source": choice.source, **(counts(result.in_force) or {})},
        "target_sensitivity": result.target_sensitivity,
        "threshold_for_target": counts(result.reaching),
        "unreadable": [
            {"case": case.case, "label": case.label, "reason": case.reason}
            for case in result.unreadable
        ],
        "unmatched_labels": [
            {"line": label.row, "case": label.case, "reason": label.reason}
            for label in found.unmatched
        ],
        "scores": [
            {"case": case.case, "label": case.label, "score": case.score} for case in result.scored
        ],
    }


@model_app.command("set")
def model_set(
    name: Annotated[str, typer.Argument(help="The model bundle's name")],
    hospital: Annotated[str, typer.Option(help="Hospital code; * for the site default")],
    enable: Annotated[
        bool | None,
        typer.Option("--enable/--disable", help="Run the model on this hospital's studies"),
    ] = None,
    threshold: Annotated[
        float | None,
        typer.Option(
            help="Decision threshold: a score (0 to 1) at or above it flags; for a model "
            "with a unit (blast-ct: mL), a quantity"
        ),
    ] = None,
    by: By = None,
    reason: Annotated[
        str | None, typer.Option(help="Why, kept as the evidence of this change")
    ] = None,
    data_dir: DataDir = None,
) -> None:
    """Turn a model on or off for a hospital, or set its threshold; audited with who and why."""
    from inference.model_settings import SITE, resolve, rows, set_choice, threshold_problem

    settings = settings_from(data_dir=data_dir)
    info = _bundle(settings, name)
    hospital = _check_hospital(hospital)
    if enable is None and threshold is None:
        raise _fail("[red]Nothing to set:[/] give --enable, --disable and/or --threshold", 2)
    if threshold is not None and (problem := threshold_problem(info, threshold)):
        raise _fail(f"[red]{escape(problem)}[/]", 2)
    who = _who(by)
    with open_archive(settings) as archive:
        set_choice(
            archive,
            info.name,
            hospital,
            by=who,
            enabled=enable,
            threshold=threshold,
            evidence=reason,
        )
        choice = resolve(info, rows(archive, info.name), hospital, default_on=_default_on(info))
    where = "the site default" if hospital == SITE else f"hospital {hospital}"
    said = ", ".join(
        part
        for part in (
            None if enable is None else ("enabled" if enable else "disabled"),
            None if threshold is None else f"threshold {_threshold(info, threshold)}",
        )
        if part
    )
    console.print(f"{info.name} for {escape(where)}: {said} (set by {escape(who)}).")
    console.print(
        f"In force for {escape(where)}: {'on' if choice.enabled else 'off'}, threshold "
        f"{_threshold(info, choice.threshold)} ({escape(choice.source)})."
    )
