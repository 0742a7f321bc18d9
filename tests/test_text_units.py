"""Text track maths and pure functions: IOB conversion, seqeval numbers, masking rates, chunking, sources."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from sslflow.errors import SslflowError
from sslflow.text import baselines
from sslflow.text.config import TextFinetune
from sslflow.text.encode import chunk_documents, encode_words, pack_chunks
from sslflow.text.entities import entity_report
from sslflow.text.finetune import fit_steps
from sslflow.text.mlm import MaskedChunks, masker
from sslflow.text.sources import fetch_text, load_bbc_news, load_conll, load_csv, load_hf, load_jsonl
from sslflow.text.tags import spans, tag_set, to_iob2
from sslflow.text.tokenizer import for_transformers, train_wordpiece

CORPUS = [
    f"the {w} market rose as the {w} bank said profits were up {i}"
    for i, w in enumerate(["stock", "bond", "oil"] * 20)
]


@pytest.fixture(scope="module")
def tokenizer():
    return train_wordpiece(CORPUS, vocab_size=200, min_frequency=1, lowercase=False)


HUGS = ["hug"] * 10 + ["pug"] * 5 + ["pun"] * 12 + ["bun"] * 4 + ["hugs"] * 5
# By hand: pair counts (##u ##g) 20, (##u ##n) 16, (h ##u) 15, ...; merged one at a time, recounted each time,
# the tie at 5 between (hug, ##s) and (p, ##ug) going to the alphabetically first pair.
HUGS_LEARNED = ["##ug", "##un", "hug", "pun", "hugs", "pug", "bun"]


def test_wordpiece_vocabulary_merges_the_most_frequent_pair_first():
    head = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "##g", "##n", "##s", "##u", "b", "h", "p"]
    full = train_wordpiece([" ".join(HUGS)], vocab_size=100, min_frequency=1, lowercase=False).get_vocab()
    assert sorted(full, key=full.get) == head + HUGS_LEARNED
    small = train_wordpiece([" ".join(HUGS)], vocab_size=len(head) + 3, min_frequency=1, lowercase=False).get_vocab()
    assert sorted(small, key=small.get) == head + HUGS_LEARNED[:3]
    frequent = train_wordpiece([" ".join(HUGS)], vocab_size=100, min_frequency=5, lowercase=False).get_vocab()
    assert sorted(frequent, key=frequent.get) == head + HUGS_LEARNED[:-1]  # "bun" is seen 4 times


def test_wordpiece_training_is_the_same_in_every_process():
    # tokenizers' own trainer breaks such ties by hash-map order; string hashing differs between processes
    corpus = [f"{chr(97 + i % 26)}{chr(97 + (i * 7) % 26)}{chr(97 + (i * 3) % 26)} x{i % 13}y" for i in range(300)]
    script = (
        "import json, sys; from sslflow.text.tokenizer import train_wordpiece; "
        "print(train_wordpiece(json.loads(sys.argv[1]), vocab_size=150, min_frequency=1, lowercase=True).to_str())"
    )
    outputs = {
        subprocess.run([sys.executable, "-c", script, json.dumps(corpus)], env={**os.environ, "PYTHONHASHSEED": seed},
                       capture_output=True, text=True, check=True).stdout
        for seed in ("1", "2", "3")
    }
    assert len(outputs) == 1


def test_iob1_to_iob2():
    # wikigold's IOB1: an entity opens with I-; B- only splits two adjacent entities of one type
    iob1 = ["I-ORG", "I-ORG", "O", "I-PER", "B-PER", "I-PER", "I-LOC", "O", "I-MISC"]
    assert to_iob2(iob1) == ["B-ORG", "I-ORG", "O", "B-PER", "B-PER", "I-PER", "B-LOC", "O", "B-MISC"]
    iob2 = ["B-ORG", "I-ORG", "O", "B-PER", "B-PER", "I-PER"]
    assert to_iob2(iob2) == iob2  # IOB2 is left as it is
    assert spans(to_iob2(iob1)) == [
        ("ORG", 0, 2),
        ("PER", 3, 4),
        ("PER", 4, 6),
        ("LOC", 6, 7),
        ("MISC", 8, 9),
    ]
    assert tag_set([["O", "B-PER"], ["B-LOC", "I-LOC"]]) == ["O", "B-LOC", "I-LOC", "B-PER", "I-PER"]


def test_seqeval_numbers_on_a_hand_made_example():
    true = [["B-PER", "I-PER", "O", "B-LOC"], ["B-ORG", "O", "B-PER"]]
    # PER: 1 of 2 found exactly (the second is cut short), LOC found, ORG predicted as LOC, and one spurious PER
    pred = [["B-PER", "I-PER", "O", "B-LOC"], ["B-LOC", "B-PER", "O"]]
    rep = entity_report(true, pred)
    # gold: PER 2, LOC 1, ORG 1; predicted: PER 2 (1 right), LOC 2 (1 right); correct 2 of 4 predicted, 2 of 4 gold
    assert rep["PER"]["precision"] == pytest.approx(0.5) and rep["PER"]["recall"] == pytest.approx(0.5)
    assert rep["LOC"]["precision"] == pytest.approx(0.5) and rep["LOC"]["recall"] == pytest.approx(1.0)
    assert rep["ORG"]["f1-score"] == 0.0 and rep["ORG"]["support"] == 1
    assert rep["summary"]["entity_f1"] == pytest.approx(0.5)
    assert rep["summary"]["macro_f1"] == pytest.approx((0.5 + 2 / 3 + 0.0) / 3)
    # an I- that opens an entity in a prediction is read as B- (IOB1 -> IOB2) before strict scoring
    assert entity_report([["B-PER", "O"]], [["I-PER", "O"]])["summary"]["entity_f1"] == 1.0


def test_masking_rates(tokenizer):
    ids = pack_chunks(tokenizer, CORPUS * 30, max_length=32, stride=0)
    ids[-1, 20:] = 0  # some padding, which must never be masked
    hf = for_transformers(tokenizer)
    data = MaskedChunks(ids, masker(hf, 0.15))
    torch.manual_seed(0)
    items = [data[i] for i in range(len(data))]
    original = torch.as_tensor(ids, dtype=torch.long)
    inputs = torch.stack([it["input_ids"] for it in items])
    labels = torch.stack([it["labels"] for it in items])
    chosen = labels != -100
    special = original <= 4  # [PAD] [UNK] [CLS] [SEP] [MASK] are ids 0..4
    assert not (chosen & special).any()
    assert (labels[chosen] == original[chosen]).all()
    assert chosen.sum() / (~special).sum() == pytest.approx(0.15, abs=0.01)
    mask_id = hf.mask_token_id
    as_mask = (inputs == mask_id) & chosen
    kept = (inputs == original) & chosen
    n = chosen.sum().item()
    assert as_mask.sum().item() / n == pytest.approx(0.8, abs=0.03)
    # the random 10% lands on the original token 1/V of the time, hence "kept" slightly above 0.1
    assert kept.sum().item() / n == pytest.approx(0.1, abs=0.03)
    assert ((inputs != original) & ~chosen).sum() == 0
    assert (torch.stack([it["attention_mask"] for it in items])[-1, 20:] == 0).all()


def test_chunking_covers_every_token(tokenizer):
    text = " ".join(CORPUS[:5])
    n = len(tokenizer.encode(text, add_special_tokens=False).ids)
    ids, owner = chunk_documents(tokenizer, [text, "", "oil"], max_length=16, stride=4)
    assert (ids[:, 0] == 2).all() and ids.shape[1] == 16 and ids.dtype == np.int32
    first = ids[owner == 0]
    # window 14, step 10: every token in some chunk, neighbours share 4
    assert len(first) == int(np.ceil((n - 4) / 10))
    assert list(owner).count(1) == 1 and list(owner).count(2) == 1
    packed = pack_chunks(tokenizer, CORPUS[:5], max_length=16, stride=0)
    assert (packed != 0).all() or (packed[:-1] != 0).all()


def test_encode_words_marks_first_subwords(tokenizer):
    _, first = encode_words(tokenizer, [["the", "stockbond", "rose"], ["oil"] * 40], max_length=12)
    row = first[0]
    assert row[0] == -1 and list(row[row >= 0]) == [0, 1, 2]
    assert (first[1] >= 0).sum() == 10  # cut at max_length - 2 word pieces


def test_baselines_round_trip(tmp_path):
    texts, labels = (
        ["oil prices rose", "the team won", "oil output fell", "the match was won"],
        np.array([0, 1, 0, 1]),
    )
    model = baselines.fit_tfidf_logreg(texts, texts, labels, 3, 10.0, 0)
    baselines.save(model, tmp_path / "m.npz")
    loaded = baselines.load(tmp_path / "m.npz")
    np.testing.assert_allclose(
        baselines.predict_documents(loaded, texts), baselines.predict_documents(model, texts)
    )
    assert (baselines.predict_documents(loaded, texts).argmax(1) == labels).all()
    words = baselines.fit_word_logreg([["John", "runs"], ["Mary", "sleeps"]], [[1, 0], [1, 0]], 3, 10.0, 0)
    baselines.save(words, tmp_path / "w.npz")
    proba = baselines.predict_words(baselines.load(tmp_path / "w.npz"), [["Anna", "runs", "fast"]])
    assert proba[0].shape == (3, 3) and proba[0][:, 2].max() == 0.0


def test_bbc_news_is_deterministic():
    data = load_bbc_news()
    assert len(data.examples) == 2225 and data.classes == [
        "business",
        "entertainment",
        "politics",
        "sports",
        "tech",
    ]
    assert np.bincount([e["label"] for e in data.examples]).tolist() == [510, 386, 417, 511, 401]
    assert data.examples[0]["text"].startswith("Ad sales boost Time Warner profit")
    assert "non-commercial" in data.license


def test_csv_and_jsonl_sources(tmp_path):
    (tmp_path / "d.csv").write_text('body,topic\n"multi\nline",b\nsecond,a\n')
    data = load_csv(str(tmp_path / "d.csv"), "body", "topic")
    assert data.classes == ["a", "b"] and [e["label"] for e in data.examples] == [1, 0]
    with pytest.raises(
        SslflowError, match=r"no column 'label' \(text.fetch.label_column\); columns are \['body', 'topic'\]"
    ):
        load_csv(str(tmp_path / "d.csv"), "body", "label")
    (tmp_path / "e.csv").write_text("text,label\nfine,a\n   ,b\n")
    with pytest.raises(SslflowError, match=r"e.csv: row 2 \(line 3\): empty text"):
        load_csv(str(tmp_path / "e.csv"), "text", "label")
    (tmp_path / "n.jsonl").write_text(json.dumps({"tokens": ["Paris", "is"], "tags": ["I-LOC", "O"]}) + "\n")
    sentences = load_jsonl(str(tmp_path / "n.jsonl"), "tokens", "tags", "token-classification")
    assert sentences.examples[0]["tags"] == ["B-LOC", "O"] and sentences.scheme == "iob1"


def test_non_utf8_names_file_and_line(tmp_path):
    path = tmp_path / "latin1.csv"
    path.write_bytes("text,label\nok,a\ncaf\xe9 au lait,b\n".encode("latin-1"))
    with pytest.raises(SslflowError, match=r"latin1.csv: not UTF-8 at line 3"):
        load_csv(str(path), "text", "label")


def test_conll_columns_and_line_numbers(tmp_path):
    path = tmp_path / "x.conll"
    path.write_text("-DOCSTART- O\n\nJohn I-PER\nlives O\n\nin O\nParis I-LOC\n")
    data = load_conll(str(path), 0, -1)
    assert [e["tokens"] for e in data.examples] == [["John", "lives"], ["in", "Paris"]]
    assert data.examples[1]["tags"] == ["O", "B-LOC"] and data.scheme == "iob1"
    assert data.classes == ["O", "B-LOC", "I-LOC", "B-PER", "I-PER"]
    path.write_text("John NNP I-PER\nlives VBZ O\n\nin IN\n")
    with pytest.raises(SslflowError, match=r"x.conll: line 4: expected 3 columns"):
        load_conll(str(path), 0, -1)
    path.write_text("John E-PER\n")
    with pytest.raises(SslflowError, match=r"line 1: tag 'E-PER'"):
        load_conll(str(path), 0, -1)


def test_source_and_task_must_agree(tmp_path):
    with pytest.raises(SslflowError, match="'conll' cannot give data for text.task 'text-classification'"):
        fetch_text("conll", "text-classification", path="x", text_column="t", label_column="l", token_index=0,
                   tag_index=-1, dataset=None, subset=None, split="train")


def test_hf_without_the_package(monkeypatch):
    monkeypatch.setitem(sys.modules, "datasets", None)  # import fails as if not installed
    with pytest.raises(SslflowError, match="needs the datasets package"):
        load_hf("ag_news", None, "train", "text", "label", "text-classification")


@pytest.fixture
def offline_hub(tmp_path, monkeypatch):
    """The real datasets package with no network and an empty cache."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
    return tmp_path


def test_hf_offline_is_a_clear_error(offline_hub):
    with pytest.raises(SslflowError, match=r"cannot load hf dataset 'ag_news'.*Without a network"):
        load_hf("ag_news", None, "train", "text", "label", "text-classification")


def test_hf_maps_class_label_ids_to_names(offline_hub):
    # load_dataset on a local directory of parquet files: the datasets code path, no network needed
    import datasets

    def save(name: str, columns: dict, features: dict) -> str:
        (offline_hub / name).mkdir()
        data = datasets.Dataset.from_dict(columns, features=datasets.Features(features))
        data.to_parquet(offline_hub / name / "train.parquet")
        return str(offline_hub / name)

    docs = save(
        "docs",
        {"text": ["a match", "a war", "goal"], "label": [1, 0, 1]},
        {"text": datasets.Value("string"), "label": datasets.ClassLabel(names=["World", "Sports"])},
    )
    ner = save(
        "ner",
        {"tokens": [["Ann", "Lee", "ran"]], "ner_tags": [[1, 2, 0]]},
        {
            "tokens": datasets.List(datasets.Value("string")),
            "ner_tags": datasets.List(datasets.ClassLabel(names=["O", "B-PER", "I-PER"])),
        },
    )
    loaded = load_hf(docs, None, "train", "text", "label", "text-classification")
    assert loaded.classes == ["Sports", "World"] and [e["label"] for e in loaded.examples] == [0, 1, 0]
    sentences = load_hf(ner, None, "train", "tokens", "ner_tags", "token-classification")
    assert sentences.examples[0]["tags"] == ["B-PER", "I-PER", "O"] and sentences.scheme == "iob2"


def test_fine_tuning_length_follows_the_budget_only_when_epochs_is_set():
    """`steps` whatever the budget; with `epochs`, passes over the labeled sequences (a last short batch counts)."""
    assert fit_steps(TextFinetune(steps=200), 50) == fit_steps(TextFinetune(steps=200), 1000) == 200
    assert fit_steps(TextFinetune(epochs=40, batch_size=16), 200) == 40 * 13
    assert fit_steps(TextFinetune(epochs=40, batch_size=16), 50) == 40 * 4
    assert fit_steps(TextFinetune(epochs=1, batch_size=16), 16) == 1
