"""The promotion gate as a pure function: every rule on its own, and the tags it reads."""

import numpy as np
import pytest
from sklearn.metrics import f1_score

from sslflow.errors import SslflowError
from sslflow.promotion import Candidate, Decision, decide, evidence_tags, recorded, report, verdict
from sslflow.report import chance_macro_f1

GATE = {"min_delta": 0.01, "min_class_recall": 0.5}


def candidate(version="2", macro_f1=0.80, min_class_recall=0.70, data_hash="aaa", baseline=0.0, chance=0.0):
    return Candidate(version, macro_f1, min_class_recall, data_hash, run_id=f"run{version}", git_commit="abc",
                     best_baseline="classical", best_baseline_f1=baseline, chance_f1=chance, labeled=20)


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


def test_a_first_model_below_its_baseline_is_not_promoted():
    decision = decide(candidate(macro_f1=0.506, baseline=0.551, chance=0.5), None, **GATE)
    assert not decision.promote
    assert (
        "macro-F1 0.506 is not at least promote.min_delta 0.01 above the classical baseline 0.551 "
        "trained on the same 20 labels"
    ) in decision.reason
    assert "above chance level 0.500" in decision.reason  # 0.506 < 0.5 + 0.01 too: both named


def test_a_first_model_better_than_its_baselines_and_chance_is_promoted():
    decision = decide(candidate(macro_f1=0.90, baseline=0.80, chance=0.1), None, **GATE)
    assert decision.promote and "+0.100 over the classical baseline" in decision.reason


def test_a_challenger_better_than_the_champion_but_not_than_its_baseline_is_not_promoted():
    decision = decide(candidate(macro_f1=0.85, baseline=0.845), CHAMPION, **GATE)
    assert not decision.promote and "classical baseline 0.845" in decision.reason


def test_a_version_without_baseline_evidence_is_never_promoted():
    old = Candidate("2", 0.99, 0.9, "aaa", run_id="r", git_commit="c")  # registered before the tags existed
    decision = decide(old, None, **GATE)
    assert not decision.promote and "rerun evaluate" in decision.reason


@pytest.mark.parametrize("counts", [[90, 10], [50, 50], [90, 5, 5], [40, 30, 20, 10]])
def test_chance_level_is_the_best_input_blind_guess_on_skewed_test_sets(counts):
    y = np.repeat(np.arange(len(counts)), counts)
    p = np.array(counts) / sum(counts)
    majority = f1_score(y, np.full_like(y, np.argmax(counts)), average="macro", zero_division=0)
    assert majority < chance_macro_f1(len(counts)) + 1e-12

    def expected_macro_f1(q):  # guessing class c with probability q_c, in expectation over many examples
        return np.mean(np.where(p + q > 0, 2 * p * q / np.maximum(p + q, 1e-12), 0))

    for q in np.random.default_rng(0).dirichlet(np.ones(len(counts)), size=200):
        assert expected_macro_f1(q) <= chance_macro_f1(len(counts)) + 1e-12
    assert expected_macro_f1(p) == pytest.approx(chance_macro_f1(len(counts)))


def test_a_model_no_better_than_chance_on_a_skewed_test_set_is_not_promoted():
    # two classes at 90/10: 0.48 macro-F1 beats always answering the majority class (0.474), not guessing (0.5)
    decision = decide(candidate(macro_f1=0.48, chance=chance_macro_f1(2)), None, **GATE)
    assert not decision.promote and "above chance level 0.500" in decision.reason


def test_evidence_tags_keep_the_best_baseline_and_round_trip():
    tags = evidence_tags(macro_f1=0.9, min_class_recall=0.5, data_hash="h", run_id="r", git_commit="c",
                         baselines={"scratch": 0.7, "classical": 0.8}, chance_f1=0.1, labeled=20)
    back = Candidate.from_tags("3", tags)
    assert (back.best_baseline, back.best_baseline_f1, back.chance_f1, back.labeled) == ("classical", 0.8, 0.1, 20)
    out = report(decide(back, None, **GATE), back, None, **GATE)
    assert out["margins"]["over_best_baseline"] == pytest.approx(0.1) and out["margins"]["over_champion"] is None


def test_a_degenerate_model_is_refused_with_the_reason_read_back_from_its_tags():
    tags = evidence_tags(macro_f1=0.9, min_class_recall=0.9, data_hash="aaa", run_id="r", git_commit="c",
                         baselines={"classical": 0.1}, chance_f1=0.1, labeled=20,
                         degenerate="it predicts one class for all 100 test items")
    c = Candidate.from_tags("3", tags)
    decision = decide(c, None, **GATE)
    assert not decision.promote and "degenerate model: it predicts one class" in decision.reason
    fine = Candidate.from_tags("3", {k: v for k, v in tags.items() if k != "sslflow.degenerate"})
    assert fine.degenerate is None and decide(fine, None, **GATE).promote


def test_a_recorded_decision_reads_back_without_a_new_record():
    """The REASON tag written for a decision, read back by a later promote, restates it and records nothing."""
    tag = verdict(Decision(False, "not promoted: not better"))
    assert tag == "kept out: not promoted: not better"
    again = recorded(tag, is_champion=False)
    assert not again.promote and not again.record and again.reason == "already decided: not promoted: not better"
    assert recorded(verdict(Decision(True, "first model")), is_champion=True).promote
