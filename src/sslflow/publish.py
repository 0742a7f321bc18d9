"""Publishing an evaluation, the same for every track: the test metrics and reports to MLflow, the degenerate
check (before promotion reads it), and the ssl model registered as the challenger with the evidence promotion
weighs (on a team server, only by users who may: tracking/team.py)."""

from collections.abc import Callable
from pathlib import Path

from sslflow.promotion import evidence_tags
from sslflow.report import baseline_scores, degenerate, report_degenerate
from sslflow.tracking import StageRun, git_commit
from sslflow.tracking.registry import CHALLENGER, ModelRegistry, Refused, note


def evaluation(
    *, tracker: StageRun, metrics: dict[str, dict], probas: dict, chance: float, score: str, reports: Path,
    log_model: Callable[[], str], model_name: str, test_hash: str, labeled: int,
) -> str:
    """Log the test metrics and reports, flag degenerate models (before promotion reads them), log the ssl model
    with `log_model` and register it as the challenger of `model_name`, with the evidence promotion weighs.
    Returns what became of the model, for the stage's summary line. A user the team server does not let register
    versions (a contributor) gets the model logged in the run only, and a note."""
    tracker.log({f"{group}/{k}": v for group, m in metrics.items() for k, v in m.items()}, 0)
    useless = degenerate(metrics, probas, chance, score)
    report_degenerate(useless, reports, tracker)
    for sub in ("classification", "plots", "figures"):
        tracker.log_artifact(reports / sub, sub)
    tracker.log_artifact(reports / "classification.md")
    evidence = evidence_tags(
        macro_f1=metrics["ssl"]["macro_f1"], min_class_recall=metrics["ssl"]["min_class_recall"],
        data_hash=test_hash, run_id=tracker.run_id, git_commit=git_commit(),
        baselines=baseline_scores({n: metrics[n]["macro_f1"] for n in probas}), chance_f1=chance, labeled=labeled,
        degenerate=useless.get("ssl"),
    )
    registry = ModelRegistry(model_name)
    model_uri = log_model()
    try:
        registry.require_write("register a version")
        version = registry.register_challenger(model_uri, evidence)
    except Refused as err:
        note(f"{err}; the ssl model is logged in run {tracker.run_id} only ({model_uri})")
        return f"ssl logged in run {tracker.run_id}, not registered (no EDIT on {model_name})"
    return f"ssl registered as {model_name} version {version} ({CHALLENGER})"
