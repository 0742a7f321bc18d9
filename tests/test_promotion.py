"""The promotion gate as a pure function: every rule on its own, and the tags it reads."""

import pytest

from sslflow.errors import SslflowError
from sslflow.promotion import Candidate, decide, evidence_tags, report

GATE = {"min_delta": 0.01, "min_class_recall": 0.5}


def candidate(version="2", macro_f1=0.80, min_class_recall=0.70, data_hash="aaa"):
    return Candidate(version, macro_f1, min_class_recall, data_hash, run_id=f"run{version}", git_commit="abc")


CHAMPION = candidate("1", macro_f1=0.80)


def test_first_model_becomes_champion():
    decision = decide(candidate(), None, **GATE)
    assert decision.promote and decision.record and "first model" in decision.reason


def test_first_model_below_recall_floor_is_not_promoted():
    decision = decide(candidate(min_class_recall=0.2), None, **GATE)
    assert not decision.promote and "min class recall 0.2000 < promote.min_class_recall 0.5" in decision.reason


def test_better_challenger_is_promoted():
    decision = decide(candidate(macro_f1=0.85), CHAMPION, **GATE)
    assert decision.promote and "gain +0.0500" in decision.reason


@pytest.mark.parametrize("f1", [0.70, 0.80])
def test_worse_or_equal_challenger_is_not_promoted(f1):
    decision = decide(candidate(macro_f1=f1), CHAMPION, **GATE)
    assert not decision.promote and "not better" in decision.reason


def test_equal_challenger_is_not_promoted_even_without_a_margin():
    decision = decide(candidate(macro_f1=0.80), CHAMPION, min_delta=0.0, min_class_recall=0.0)
    assert not decision.promote


def test_gain_below_min_delta_is_not_promoted_and_exactly_min_delta_is():
    assert not decide(candidate(macro_f1=0.805), CHAMPION, **GATE).promote
    assert decide(candidate(macro_f1=0.81), CHAMPION, **GATE).promote
    # 0.03 - 0.02 is 0.009999999999999998 in floats: still a gain of min_delta
    assert decide(candidate(macro_f1=0.03), candidate("1", macro_f1=0.02), **GATE).promote


def test_different_test_data_is_not_promoted_however_good():
    decision = decide(candidate(macro_f1=0.99, data_hash="bbb"), CHAMPION, **GATE)
    assert not decision.promote and "different data" in decision.reason


def test_class_recall_drop_is_not_promoted_however_good():
    decision = decide(candidate(macro_f1=0.99, min_class_recall=0.49), CHAMPION, **GATE)
    assert not decision.promote and "min class recall 0.4900" in decision.reason


def test_every_failed_check_is_named():
    decision = decide(candidate(macro_f1=0.5, min_class_recall=0.1, data_hash="bbb"), CHAMPION, **GATE)
    assert decision.reason.count(";") == 2


def test_the_champion_itself_needs_no_new_record():
    decision = decide(CHAMPION, CHAMPION, **GATE)
    assert decision.promote and not decision.record


def test_tags_round_trip_exactly():
    f1 = 0.1 + 0.2  # 0.30000000000000004: str() of a float is its repr, which round-trips
    tags = evidence_tags(macro_f1=f1, min_class_recall=0.5, data_hash="h", run_id="r", git_commit="c")
    assert Candidate.from_tags("3", tags) == Candidate("3", f1, 0.5, "h", "r", "c")


@pytest.mark.parametrize(
    "change, message",
    [
        ({"sslflow.data_hash": ""}, "lacks the tags sslflow.data_hash"),
        ({"sslflow.macro_f1": "high"}, "is not a number"),
        ({"sslflow.min_class_recall": "1.5"}, "outside [0, 1]"),
    ],
)
def test_missing_or_bad_tags_are_an_error(change, message):
    tags = evidence_tags(macro_f1=0.8, min_class_recall=0.5, data_hash="h", run_id="r", git_commit="c") | change
    with pytest.raises(SslflowError, match=message.replace("[", r"\[").replace("]", r"\]")):
        Candidate.from_tags("3", tags)


def test_report_has_decision_reason_and_both_versions():
    challenger = candidate(macro_f1=0.85)
    out = report(decide(challenger, CHAMPION, **GATE), challenger, CHAMPION, **GATE)
    assert out["promoted"] is True and out["reason"]
    assert out["challenger"]["macro_f1"] == 0.85 and out["champion"]["version"] == "1"
    assert out["thresholds"] == GATE
