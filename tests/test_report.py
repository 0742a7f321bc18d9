import json

import numpy as np
import pandas as pd
import pytest

from sslflow.metrics import read as read_metrics
from sslflow.report import _interpolated, per_class, write_all

CLASSES = ["a", "b", "c"]


def test_per_class_numbers_by_hand():
    y = np.array([0, 0, 1, 1, 2, 2])
    pred = np.array([0, 1, 1, 1, 2, 0])
    report = per_class(y, np.eye(3)[pred], CLASSES)
    # class a: tp 1, fp 1, fn 1 -> p 0.5 r 0.5; b: tp 2 fp 1 -> p 2/3 r 1; c: tp 1 fp 0 fn 1 -> p 1 r 0.5
    assert report["a"]["precision"] == pytest.approx(0.5) and report["a"]["recall"] == pytest.approx(0.5)
    assert report["b"]["precision"] == pytest.approx(2 / 3) and report["b"]["recall"] == pytest.approx(1.0)
    assert report["c"]["f1-score"] == pytest.approx(2 / 3)
    assert report["summary"]["macro_f1"] == pytest.approx((0.5 + 0.8 + 2 / 3) / 3)
    assert report["summary"]["min_class_recall"] == pytest.approx(0.5)


def test_interpolated_precision_is_monotone_and_exact_on_a_small_case():
    y = np.array([1, 0, 1, 1, 0])
    s = np.array([0.9, 0.8, 0.7, 0.4, 0.1])
    _, _, interp = _interpolated(y, s, np.linspace(0, 1, 5))
    assert interp.tolist() == pytest.approx([1.0, 1.0, 0.75, 0.75, 0.75])
    assert all(a >= b for a, b in zip(interp, interp[1:], strict=False))


def test_write_all_outputs(tmp_path):
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 60)
    probas = {name: rng.dirichlet(np.ones(3), 60) for name in ("ssl", "scratch", "classical")}
    probas["ssl"][np.arange(60), y] += 2  # ssl is the good one
    probas["ssl"] /= probas["ssl"].sum(1, keepdims=True)
    metrics = write_all(y, probas, CLASSES, tmp_path, 11)
    assert metrics["ssl"]["macro_f1"] == 1.0
    assert metrics["lift"]["pretraining"] == pytest.approx(1.0 - metrics["scratch"]["macro_f1"])
    assert read_metrics(tmp_path) == json.loads(json.dumps(metrics))
    assert sorted(f.name for f in (tmp_path / "metrics").iterdir()) == [
        "classical.json", "lift.json", "scratch.json", "ssl.json"
    ]
    confusion = pd.read_csv(tmp_path / "plots" / "confusion" / "ssl.csv")
    assert len(confusion) == 60 and set(confusion.columns) == {"actual", "predicted"}
    pr = pd.read_csv(tmp_path / "plots" / "pr" / "scratch.csv")
    assert len(pr) == 11 and pr["precision"].between(0, 1).all()
    for name in probas:
        assert (tmp_path / "figures" / f"confusion_{name}.png").stat().st_size > 1000
        assert (tmp_path / "figures" / f"pr_{name}.png").stat().st_size > 1000
    assert "| a |" in (tmp_path / "classification.md").read_text()


def test_degenerate_models_are_named_with_the_reason():
    from sslflow.report import degenerate

    one_class = np.tile([0.1, 0.8, 0.1], (6, 1))
    good = np.eye(3)[[0, 1, 2, 0, 1, 2]]
    metrics = {
        "ssl": {"macro_f1": 0.17},
        "scratch": {"macro_f1": 0.3},
        "good": {"macro_f1": 1.0},
        "classical": {"macro_f1": 0.1},
    }
    found = degenerate(metrics, {"ssl": one_class, "scratch": good, "good": good, "classical": one_class}, chance=1 / 3)
    assert found == {
        "ssl": "it predicts one class for all 6 test items",
        "scratch": "its test macro_f1 0.300 is at or below chance level 0.333",
    }  # the classical baseline is not a fine-tuned model
    ner = {"ssl": {"entity_f1": 0.0}, "scratch": {"entity_f1": 0.2}}
    probas = {"ssl": [np.zeros((4, 5))], "scratch": [np.zeros((4, 5))]}  # per-sentence token scores
    found = degenerate(ner, probas, chance=0.0, score="entity_f1")
    assert found == {"ssl": "its test entity_f1 is 0: it finds no entity right"}
