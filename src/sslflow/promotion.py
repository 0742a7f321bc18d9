"""The promotion gate: may the challenger take the `champion` alias? Pure: tags in, decision out.

A registered version carries its evidence as tags (written by evaluate). The challenger is promoted only
when it was evaluated on the same data as the champion, beats its macro-F1 by at least `min_delta`, and
no class's recall is below `min_class_recall`. With no champion yet, the recall floor alone decides.
"""

from dataclasses import asdict, dataclass

from sslflow.errors import SslflowError

# Version tag keys; `sslflow.data_hash` is also the key evaluate tags its run with.
MACRO_F1 = "sslflow.macro_f1"
MIN_CLASS_RECALL = "sslflow.min_class_recall"
DATA_HASH = "sslflow.data_hash"
GIT_COMMIT = "sslflow.git_commit"
RUN_ID = "sslflow.run_id"
REASON = "sslflow.promotion"

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

    @classmethod
    def from_tags(cls, version: str, tags: dict[str, str]) -> "Candidate":
        """Read the evidence tags; a missing or unreadable one means the registry is inconsistent."""
        missing = [k for k in (MACRO_F1, MIN_CLASS_RECALL, DATA_HASH, RUN_ID) if not tags.get(k)]
        if missing:
            raise SslflowError(f"version {version} lacks the tags {', '.join(missing)}; register it with evaluate")
        numbers = {}
        for key in (MACRO_F1, MIN_CLASS_RECALL):
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
        )


def evidence_tags(*, macro_f1: float, min_class_recall: float, data_hash: str, run_id: str, git_commit: str) -> dict[str, str]:
    """The tags `Candidate.from_tags` reads back; floats as repr, so they round-trip exactly."""
    return {
        MACRO_F1: repr(float(macro_f1)),
        MIN_CLASS_RECALL: repr(float(min_class_recall)),
        DATA_HASH: data_hash,
        RUN_ID: run_id,
        GIT_COMMIT: git_commit,
    }


@dataclass(frozen=True)
class Decision:
    promote: bool  # the challenger is the champion after this decision
    reason: str
    record: bool = True  # False when there is nothing new to write to the registry


def decide(challenger: Candidate, champion: Candidate | None, *, min_delta: float, min_class_recall: float) -> Decision:
    """Promote only if every check passes; otherwise the reason lists each failed check."""
    if champion is not None and champion.version == challenger.version:
        return Decision(True, f"version {challenger.version} is already the champion", record=False)
    failed = []
    if challenger.min_class_recall < min_class_recall:
        failed.append(
            f"min class recall {challenger.min_class_recall:.4f} < promote.min_class_recall {min_class_recall}"
        )
    if champion is None:
        if failed:
            return Decision(False, f"no champion yet, but {failed[0]}")
        return Decision(True, f"first model: version {challenger.version} becomes champion")
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
        return Decision(False, "; ".join(failed))
    return Decision(True, f"{versus}: gain {gain:+.4f}")


def report(decision: Decision, challenger: Candidate, champion: Candidate | None, *, min_delta: float, min_class_recall: float) -> dict:
    """The content of reports/promotion.json."""
    return {
        "promoted": decision.promote,
        "reason": decision.reason,
        "challenger": asdict(challenger),
        "champion": asdict(champion) if champion else None,
        "thresholds": {"min_delta": min_delta, "min_class_recall": min_class_recall},
    }
