"""The promotion gate: may the challenger take the `champion` alias? Pure: tags in, decision out.

A registered version carries its evidence as tags (written by evaluate). Every challenger, the first one too,
must beat the best baseline trained on the same labels in the same run (scratch, classical) and the test set's
chance level, each by at least `min_delta`, and no class's recall may be below `min_class_recall`. With a
champion, it must also have been evaluated on the same data and beat the champion's macro-F1 by `min_delta`.
"""

from dataclasses import asdict, dataclass

from sslflow.errors import SslflowError

# Version tag keys; `sslflow.data_hash` is also the key evaluate tags its run with.
MACRO_F1 = "sslflow.macro_f1"
MIN_CLASS_RECALL = "sslflow.min_class_recall"
DATA_HASH = "sslflow.data_hash"
GIT_COMMIT = "sslflow.git_commit"
RUN_ID = "sslflow.run_id"
BEST_BASELINE = "sslflow.best_baseline"  # the name of the best baseline of the same run, e.g. "classical"
BEST_BASELINE_F1 = "sslflow.best_baseline_f1"
CHANCE_F1 = "sslflow.chance_f1"  # the best macro-F1 of a predictor that ignores its input
LABELED = "sslflow.labeled"  # labeled examples the models were trained on
DEGENERATE = "sslflow.degenerate"  # why evaluate found the model no use (report.degenerate); absent if it is fine
REASON = "sslflow.promotion"  # the one recorded decision: "promoted: <reason>" or "kept out: <reason>"
# The decision being carried out: written before the alias moves and removed after REASON is written, so that the
# next promote can finish (or roll back) a decision that a kill interrupted.
PENDING = "sslflow.promotion.pending"
PROMOTED, KEPT_OUT = "promoted", "kept out"

# Tags hold floats as text; a gain of exactly min_delta must not fail on the last bit.
_TOLERANCE = 1e-12


@dataclass(frozen=True)
class Candidate:
    """One registered version and the evidence it was registered with."""

    version: str
    macro_f1: float
    min_class_recall: float
    data_hash: str
    run_id: str
    git_commit: str
    # None on versions registered before evaluate wrote them: such a challenger is never promoted
    best_baseline: str | None = None
    best_baseline_f1: float | None = None
    chance_f1: float | None = None
    labeled: int | None = None
    degenerate: str | None = None

    @classmethod
    def from_tags(cls, version: str, tags: dict[str, str]) -> "Candidate":
        """Read the evidence tags; a missing or unreadable one means the registry is inconsistent."""
        missing = [k for k in (MACRO_F1, MIN_CLASS_RECALL, DATA_HASH, RUN_ID) if not tags.get(k)]
        if missing:
            raise SslflowError(f"version {version} lacks the tags {', '.join(missing)}; register it with evaluate")
        numbers = {}
        for key in (MACRO_F1, MIN_CLASS_RECALL, BEST_BASELINE_F1, CHANCE_F1):
            if key not in tags:
                continue
            try:
                numbers[key] = float(tags[key])
            except ValueError:
                raise SslflowError(f"version {version}: tag {key}={tags[key]!r} is not a number") from None
            if not 0 <= numbers[key] <= 1:
                raise SslflowError(f"version {version}: tag {key}={tags[key]} is outside [0, 1]")
        return cls(
            version=str(version),
            macro_f1=numbers[MACRO_F1],
            min_class_recall=numbers[MIN_CLASS_RECALL],
            data_hash=tags[DATA_HASH],
            run_id=tags[RUN_ID],
            git_commit=tags.get(GIT_COMMIT, "unknown"),
            best_baseline=tags.get(BEST_BASELINE),
            best_baseline_f1=numbers.get(BEST_BASELINE_F1),
            chance_f1=numbers.get(CHANCE_F1),
            labeled=int(tags[LABELED]) if tags.get(LABELED, "").isdigit() else None,
            degenerate=tags.get(DEGENERATE) or None,
        )


def evidence_tags(
    *, macro_f1: float, min_class_recall: float, data_hash: str, run_id: str, git_commit: str,
    baselines: dict[str, float] | None = None, chance_f1: float | None = None, labeled: int | None = None,
    degenerate: str | None = None,
) -> dict[str, str]:
    """The tags `Candidate.from_tags` reads back; floats as repr, so they round-trip exactly. `baselines`:
    the macro-F1 of each baseline trained on the same labels in the same run; the best one is kept."""
    tags = {
        MACRO_F1: repr(float(macro_f1)),
        MIN_CLASS_RECALL: repr(float(min_class_recall)),
        DATA_HASH: data_hash,
        RUN_ID: run_id,
        GIT_COMMIT: git_commit,
    }
    if baselines:
        best = max(baselines, key=baselines.get)
        tags |= {BEST_BASELINE: best, BEST_BASELINE_F1: repr(float(baselines[best]))}
    if chance_f1 is not None:
        tags[CHANCE_F1] = repr(float(chance_f1))
    if labeled is not None:
        tags[LABELED] = str(int(labeled))
    if degenerate:
        tags[DEGENERATE] = degenerate
    return tags


@dataclass(frozen=True)
class Decision:
    promote: bool  # the challenger is the champion after this decision
    reason: str
    record: bool = True  # False when there is nothing new to write to the registry


def verdict(decision: Decision) -> str:
    """The text of the REASON tag for `decision`."""
    return f"{PROMOTED if decision.promote else KEPT_OUT}: {decision.reason}"


def recorded(tag: str, *, is_champion: bool) -> Decision:
    """The decision a REASON tag records, as it stands now (`is_champion`: the version holds the alias)."""
    reason = tag.split(": ", 1)[1] if tag.startswith((f"{PROMOTED}: ", f"{KEPT_OUT}: ")) else tag
    return Decision(is_champion, f"already decided: {reason}", record=False)


def decide(challenger: Candidate, champion: Candidate | None, *, min_delta: float, min_class_recall: float) -> Decision:
    """Promote only if every check passes; otherwise the reason lists each failed check."""
    if champion is not None and champion.version == challenger.version:
        return Decision(True, f"version {challenger.version} is already the champion", record=False)
    failed = _floors(challenger, min_delta)
    if challenger.min_class_recall < min_class_recall:
        failed.append(
            f"min class recall {challenger.min_class_recall:.4f} < promote.min_class_recall {min_class_recall}"
        )
    if champion is None:
        if failed:
            return Decision(False, "not promoted (no champion yet): " + "; ".join(failed))
        return Decision(True, f"first model: version {challenger.version} becomes champion ({_margins(challenger)})")
    if challenger.data_hash != champion.data_hash:
        failed.append(
            f"evaluated on different data than champion version {champion.version} "
            f"(data hash {challenger.data_hash[:12]} != {champion.data_hash[:12]})"
        )
    gain = challenger.macro_f1 - champion.macro_f1
    versus = f"macro-F1 {challenger.macro_f1:.4f} vs {champion.macro_f1:.4f} of champion version {champion.version}"
    if gain <= 0:
        failed.append(f"{versus}: not better")
    elif gain < min_delta - _TOLERANCE:
        failed.append(f"{versus}: gain {gain:+.4f} < promote.min_delta {min_delta}")
    if failed:
        return Decision(False, "not promoted: " + "; ".join(failed))
    return Decision(True, f"{versus}: gain {gain:+.4f} ({_margins(challenger)})")


def _floors(c: Candidate, min_delta: float) -> list[str]:
    """What every candidate must beat by `min_delta`: the best baseline on the same labels, and chance."""
    if c.best_baseline_f1 is None or c.chance_f1 is None:
        return [
            f"version {c.version} has no baseline and chance-level evidence (registered before sslflow wrote it); "
            "rerun evaluate"
        ]
    failed = [f"degenerate model: {c.degenerate}"] if c.degenerate else []
    labels = f"the same {c.labeled} labels" if c.labeled is not None else "the same labels"
    if c.macro_f1 < c.best_baseline_f1 + min_delta - _TOLERANCE:
        failed.append(
            f"macro-F1 {c.macro_f1:.3f} is not at least promote.min_delta {min_delta} above the {c.best_baseline} "
            f"baseline {c.best_baseline_f1:.3f} trained on {labels}"
        )
    if c.macro_f1 < c.chance_f1 + min_delta - _TOLERANCE:
        failed.append(
            f"macro-F1 {c.macro_f1:.3f} is not at least promote.min_delta {min_delta} above chance level "
            f"{c.chance_f1:.3f} on this test set"
        )
    return failed


def _margins(c: Candidate) -> str:
    return (
        f"macro-F1 {c.macro_f1:.3f}: {c.macro_f1 - c.best_baseline_f1:+.3f} over the {c.best_baseline} baseline, "
        f"{c.macro_f1 - c.chance_f1:+.3f} over chance"
    )


def report(
    decision: Decision, challenger: Candidate, champion: Candidate | None, *, min_delta: float, min_class_recall: float
) -> dict:
    """The content of reports/promotion.json."""
    return {
        "promoted": decision.promote,
        "reason": decision.reason,
        "challenger": asdict(challenger),
        "champion": asdict(champion) if champion else None,
        "margins": {  # the challenger's macro-F1 minus each bar it had to clear
            "over_best_baseline": (
                None if challenger.best_baseline_f1 is None else challenger.macro_f1 - challenger.best_baseline_f1
            ),
            "over_chance": None if challenger.chance_f1 is None else challenger.macro_f1 - challenger.chance_f1,
            "over_champion": None if champion is None else challenger.macro_f1 - champion.macro_f1,
        },
        "thresholds": {"min_delta": min_delta, "min_class_recall": min_class_recall},
    }
