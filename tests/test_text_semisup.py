"""FixMatch on the text track: token views (invariants and rates), a tiny BERT trained with it, and the
finetune and evaluate stages with `text.finetune.method: fixmatch`, on good and on bad input."""

import json
import shutil

import numpy as np
import pytest
import torch
from test_text_stages import STAGES, file_hashes, run_stage, tiny_documents, write_params

from sslflow.config import Base, Optim
from sslflow.metrics import read as read_metrics
from sslflow.runtime import resolve
from sslflow.text.classify import chunk_examples, weighted_ce
from sslflow.text.config import BertSize, TextFinetune, TextFixMatch
from sslflow.text.encode import chunk_documents
from sslflow.text.finetune import fit_method
from sslflow.text.models import SequenceClassifier, bert_config, build_bert
from sslflow.text.tokenizer import train_wordpiece
from sslflow.text.views import Specials, delete_tokens, mask_tokens, specials

CPU = resolve(Base(device="cpu", precision="fp32"))
SPECIALS = Specials(pad=0, mask=4, kept=(0, 2, 3))  # [PAD], [CLS], [SEP]: sslflow.text.tokenizer's numbers
TOPICS = {0: "match goal team coach league score", 1: "bank shares profit market price trade"}


def framed_ids(rows: int = 256, length: int = 40, seed: int = 0) -> torch.Tensor:
    """(rows, length) [CLS] tokens [SEP] [PAD]..., of random lengths, ordinary ids 5..99."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.zeros(rows, length, dtype=torch.long)
    for i, n in enumerate(torch.randint(0, length - 1, (rows,), generator=g).tolist()):
        words = torch.randint(5, 100, (n,), generator=g)
        ids[i, : n + 2] = torch.cat([torch.tensor([2]), words, torch.tensor([3])])
    return ids


def ordinary(ids: torch.Tensor) -> torch.Tensor:
    return ~torch.isin(ids, torch.tensor(SPECIALS.kept))


def test_specials_come_from_the_tokenizer():
    tokenizer = train_wordpiece(["a b c"], vocab_size=50, min_frequency=1, lowercase=True)
    assert specials(tokenizer) == SPECIALS


def test_mask_tokens_keeps_special_tokens_and_shape_and_masks_at_the_rate():
    torch.manual_seed(0)
    ids = framed_ids()
    out = mask_tokens(ids, 0.3, SPECIALS.mask, SPECIALS.kept)
    assert out.shape == ids.shape and out.dtype == ids.dtype
    assert torch.equal(out[~ordinary(ids)], ids[~ordinary(ids)])  # [CLS], [SEP], [PAD] where they were
    changed = out != ids
    assert (out[changed] == SPECIALS.mask).all()
    assert abs(changed.sum().item() / ordinary(ids).sum().item() - 0.3) < 0.03
    assert torch.equal(mask_tokens(ids, 0.0, SPECIALS.mask, SPECIALS.kept), ids)


def test_delete_tokens_keeps_the_frame_and_order_and_deletes_at_the_rate():
    torch.manual_seed(0)
    ids = framed_ids()
    out = delete_tokens(ids, 0.2, SPECIALS.kept, SPECIALS.pad)
    assert out.shape == ids.shape and out.dtype == ids.dtype
    for before, after in zip(ids.tolist(), out.tolist(), strict=True):
        real = [t for t in after if t != SPECIALS.pad]
        n = len(real)
        assert after[n:] == [SPECIALS.pad] * (len(after) - n)  # padding only at the end
        assert real[0] == 2 and real[-1] == 3 and 2 not in real[1:-1] and 3 not in real[1:-1]
        words = iter(before[1:])
        assert all(t in words for t in real[1:-1])  # what is left is a subsequence, in order
    deleted = ordinary(ids).sum() - ordinary(out).sum()
    assert abs(deleted.item() / ordinary(ids).sum().item() - 0.2) < 0.03
    assert torch.equal(delete_tokens(ids, 0.0, SPECIALS.kept, SPECIALS.pad), ids)
    emptied = delete_tokens(ids, 0.999999, SPECIALS.kept, SPECIALS.pad)
    assert (emptied[:, :2] == torch.tensor([2, 3])).all() and (emptied[:, 2:] == 0).all()


def documents(n: int, seed: int) -> tuple[list[str], np.ndarray]:
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % 2
    vocab = {y: words.split() + ["the", "a", "said"] for y, words in TOPICS.items()}
    texts = [" ".join(rng.choice(vocab[y], size=rng.integers(6, 20))) for y in labels]
    return texts, labels


def test_fixmatch_continues_from_a_copy_of_the_supervised_model_and_lowers_its_loss():
    torch.manual_seed(0)
    texts, labels = documents(4, seed=0)
    pool_texts, _ = documents(64, seed=1)  # their labels are never used
    tokenizer = train_wordpiece(texts + pool_texts, vocab_size=120, min_frequency=1, lowercase=True)
    labeled = chunk_examples(tokenizer, texts, labels, max_length=16, stride=2)
    pool, _ = chunk_documents(tokenizer, pool_texts, 16, 2)
    size = BertSize(hidden_size=32, layers=1, heads=2, intermediate_size=64, dropout=0.0)
    model = SequenceClassifier(build_bert(bert_config(size, tokenizer.get_vocab_size(), 16)), 2)
    rows, logged = [], {}
    model.register_forward_hook(lambda m, args, out: rows.append(len(args[0])))
    cfg = TextFinetune(method="fixmatch", steps=5, batch_size=4, optim=Optim(lr=3e-3, weight_decay=0.0),
                       fixmatch=TextFixMatch(steps=30, mu=2, threshold=0.6))
    supervised, fixmatch, stats = fit_method(
        model, labeled, pool, cfg=cfg, specials=specials(tokenizer), loss=weighted_ce, batch_size=4,
        runtime=CPU, log=lambda metrics, step: logged.update({(k, step): v for k, v in metrics.items()}),
        generator=torch.Generator().manual_seed(0), prefix="ssl",
    )
    assert supervised is model and fixmatch is not model and not supervised.training and not fixmatch.training
    assert rows[5:] == [4 + 2 * 8] * 30  # after 5 supervised steps: 4 labeled, 8 weak and 8 strong pool rows
    assert 0 <= stats["mask_rate"] <= 1 and logged[("ssl/fixmatch/mask_rate", 30)] == stats["mask_rate"]
    losses = [logged[("ssl/fixmatch/loss", s)] for s in range(1, 31)]
    assert np.mean(losses[-5:]) < 0.5 * np.mean(losses[:5]), losses
    moved = [not torch.equal(a, b) for a, b in zip(supervised.parameters(), fixmatch.parameters(), strict=True)]
    assert all(moved)  # the supervised model was copied, not trained further


FIXMATCH = {"method": "fixmatch", "fixmatch": {"steps": 3, "mu": 1, "threshold": 0.5}}


@pytest.fixture(scope="module")
def fixmatch_project(tmp_path_factory):
    project = tmp_path_factory.mktemp("fixmatch")
    tiny_documents(project / "docs.csv")
    write_params(project, fetch={"source": "csv", "path": "docs.csv"}, finetune=FIXMATCH)
    with pytest.MonkeyPatch.context() as mp:
        mp.delenv("MLFLOW_TRACKING_URI", raising=False)
        codes = {stage: run_stage(stage, project, mp) for stage in STAGES}
    assert codes == dict.fromkeys(STAGES, 0)
    return project


@pytest.mark.slow
def test_fixmatch_stages_report_both_models_per_init_and_the_lifts(fixmatch_project):
    p = fixmatch_project
    fitted = json.loads((p / "models/finetuned/models.json").read_text())
    assert fitted["method"] == "fixmatch"
    assert fitted["models"] == ["ssl", "ssl-supervised", "scratch", "scratch-supervised"]
    summary = json.loads((p / "reports/finetune.json").read_text())
    train_documents = json.loads((p / "data/prepared/split.json").read_text())["counts"]["train"]
    assert summary["pool_chunks"] >= train_documents  # every train document, at least one chunk each
    assert 0 <= summary["ssl/mask_rate"] <= 1 and "scratch-supervised/val_macro_f1" in summary
    metrics = read_metrics(p / "reports")
    assert set(metrics) == {*fitted["models"], "classical", "lift"}
    assert set(metrics["lift"]) == {"pretraining", "pool", "pool_from_scratch", "ssl_minus_classical"}
    f1 = {name: m["macro_f1"] for name, m in metrics.items() if name != "lift"}
    assert metrics["lift"]["pool"] == pytest.approx(f1["ssl"] - f1["ssl-supervised"])


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    """fetch, preprocess and label of the tiny documents: what the bad-input cases start from."""
    project = tmp_path_factory.mktemp("prepared")
    tiny_documents(project / "docs.csv")
    write_params(project, fetch={"source": "csv", "path": "docs.csv"})
    with pytest.MonkeyPatch.context() as mp:
        assert [run_stage(stage, project, mp) for stage in STAGES[:3]] == [0, 0, 0]
    return project


BAD = {  # case: (text params, part of the error line)
    "threshold 1": (
        {"finetune": {**FIXMATCH, "fixmatch": {"threshold": 1.0}}}, "'text.finetune.fixmatch.threshold'"
    ),
    "mu 0": ({"finetune": {**FIXMATCH, "fixmatch": {"mu": 0}}}, "'text.finetune.fixmatch.mu'"),
    "unknown key": (
        {"finetune": {**FIXMATCH, "fixmatch": {"strong_swap": 0.1}}}, "'text.finetune.fixmatch.strong_swap'"
    ),
    "NER": (
        {"task": "token-classification", "finetune": FIXMATCH},
        "'text.finetune.method' is fixmatch, but text.task is token-classification",
    ),
    "empty pool": ({"finetune": FIXMATCH}, "'text.finetune.method' is fixmatch, but the unlabeled pool"),
}


@pytest.mark.parametrize("case", BAD)
def test_bad_fixmatch_input_fails_cleanly_before_writing(prepared, tmp_path, monkeypatch, capsys, case):
    text, expected = BAD[case]
    project = tmp_path / "p"
    shutil.copytree(prepared / "data", project / "data")
    write_params(project, fetch={"source": "csv", "path": "docs.csv"}, **text)
    if case == "empty pool":
        for name in ("train.jsonl", "unlabeled.jsonl"):  # the pool: the train documents and the unlabeled corpus
            (project / "data/prepared" / name).write_text("")
    before = file_hashes(project)

    assert run_stage("finetune", project, monkeypatch) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and expected in lines[0], lines
    assert file_hashes(project) == before
