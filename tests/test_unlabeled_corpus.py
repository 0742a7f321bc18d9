"""text.fetch.unlabeled: extra text that joins the MLM pool and the tokenizer's text only, each source kind read,
nothing that overlaps a labeled (val or test) text kept, provenance in the manifest and the fetch run, and one
`error:` line naming the params key for a bad entry."""

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
from test_text_stages import file_hashes, run_stage, write_params
from tokenizers import Tokenizer

import sslflow.tracking
from sslflow.errors import SslflowError
from sslflow.text.config import TextFetch, UnlabeledSource
from sslflow.text.sources import drop_overlaps, fetch_unlabeled, load_bbc_news

NER = "token-classification"


def entry(**fields) -> UnlabeledSource:
    return UnlabeledSource.model_validate(fields)


def sentences(n: int = 40) -> list[list[str]]:
    """Distinct sentences, each with a person and a place, so that every split sees both tags."""
    return [[f"Anna{i}", "flew", "from", f"Oslo{i}", "to", "a", f"meeting{i}", "on", "Monday", "."] for i in range(n)]


def write_conll(path: Path, n: int = 40) -> list[list[str]]:
    tags = {0: "I-PER", 3: "I-LOC"}
    rows = []
    for sentence in sentences(n):
        rows += [f"{w} {tags.get(j, 'O')}" for j, w in enumerate(sentence)] + [""]
    path.write_text("\n".join(rows))
    return sentences(n)


@pytest.mark.parametrize(
    "source, content, fields",
    [
        ("text", "the first document\n\n  \nthe second one\n", {}),
        ("jsonl", '{"body": "the first document"}\n\n{"body": ["the", "second", "one"]}\n', {"text_column": "body"}),
        ("csv", 'id,body\n1,the first document\n2,""\n3,the second one\n', {"text_column": "body"}),
        ("conll", "-DOCSTART- O\n\nx the\ny first\nz document\n\nx the\ny second\nz one\n", {"token_index": 1}),
    ],
)
def test_each_file_kind_is_read_with_its_hash(tmp_path, source, content, fields):
    (tmp_path / "u.txt").write_text(content)
    texts, sources = fetch_unlabeled([entry(source=source, path="u.txt", **fields)], [], tmp_path)
    assert texts == ["the first document", "the second one"]  # blank lines, rows and DOCSTART skipped
    assert sources == [
        {
            "source": source,
            "path": str(tmp_path / "u.txt"),
            "sha256": hashlib.sha256(content.encode()).hexdigest(),
            "kept": 2,
            "duplicates": 0,
        }
    ]


def test_bbc_news_is_read_and_drops_itself_as_labeled_text():
    bbc = load_bbc_news()
    texts, sources = fetch_unlabeled([entry(source="bbc-news")], [], Path("."))
    assert len(texts) == len(bbc.examples) == 2225 and sources[0]["sha256"] == bbc.inputs[0]["sha256"]
    # the classification task on bbc-news with bbc-news as unlabeled text: every article is a labeled one
    texts, sources = fetch_unlabeled([entry(source="bbc-news")], [e["text"] for e in bbc.examples], Path("."))
    assert texts == [] and sources[0]["kept"] == 0 and sources[0]["duplicates"] == 2225


def test_overlaps_ignore_case_and_punctuation_and_short_texts_only_match_whole():
    labeled = ["Anna flew from Oslo to Rome .", "Former members"]
    texts = [
        "anna flew from oslo to rome",  # equal, as words
        "Yesterday Anna flew from Oslo, to Rome; then home.",  # contains a labeled sentence
        "Anna flew from Oslo to Paris.",  # shares only a prefix
        "former members",  # equal to a short labeled text
        "Former members of the band met again.",  # contains a short one: chance, not a leak
    ]
    kept, dropped = drop_overlaps(texts, labeled)
    assert kept == texts[2:3] + texts[4:] and dropped == 3


def test_config_default_is_empty_and_entries_are_strict():
    assert TextFetch().unlabeled == []
    with pytest.raises(ValueError, match="path must name a file"):
        entry(source="text")
    with pytest.raises(ValueError, match="path must name a file"):
        entry(source="bbc-news", path="x.txt")
    with pytest.raises(ValueError, match="extra"):
        entry(source="text", path="x.txt", label_column="y")


def test_a_file_without_text_is_an_error_naming_the_key(tmp_path):
    (tmp_path / "u.txt").write_text("\n \n")
    with pytest.raises(SslflowError, match=r"text.fetch.unlabeled.0.path: .*u.txt holds no text"):
        fetch_unlabeled([entry(source="text", path="u.txt")], [], tmp_path)


@pytest.fixture
def captured(monkeypatch):
    """The fetch and preprocess runs' arguments, instead of an MLflow server."""
    calls = {}
    monkeypatch.setattr(sslflow.tracking, "record_data_stage", lambda stage, **kw: calls.__setitem__(stage, kw))
    return calls


def prepare(project: Path, monkeypatch, unlabeled: list[dict] | None) -> None:
    fetch = {"source": "conll", "path": "ner.conll"} | ({} if unlabeled is None else {"unlabeled": unlabeled})
    write_params(project, task=NER, fetch=fetch)
    assert run_stage("fetch", project, monkeypatch) == 0 and run_stage("preprocess", project, monkeypatch) == 0


def words(text: str) -> str:
    return " " + " ".join(text.lower().replace(".", " ").split()) + " "


def test_unlabeled_text_joins_the_pool_only_and_never_holds_a_val_or_test_sentence(tmp_path, monkeypatch, captured):
    labeled = write_conll(tmp_path / "ner.conll")
    planted = [f"Reuters reported that {' '.join(s)} Officials agreed." for s in labeled[::4]]  # 10 leaks
    novel = [f"zebra{i} quartz{i} lantern{i} harbour{i} glacier{i} meadow{i}" for i in range(30)]
    (tmp_path / "news.txt").write_text("\n".join(novel[:15] + planted + novel[15:]) + "\n")

    plain = tmp_path / "plain"
    plain.mkdir()
    (plain / "ner.conll").write_bytes((tmp_path / "ner.conll").read_bytes())
    prepare(plain, monkeypatch, None)
    prepare(tmp_path, monkeypatch, [{"source": "text", "path": "news.txt"}])

    # the labeled sets are the same texts in the same splits; the raw labeled data too
    for name in ("train.jsonl", "val.jsonl", "test.jsonl", "classes.json"):
        assert (tmp_path / "data/prepared" / name).read_bytes() == (plain / "data/prepared" / name).read_bytes()
    assert (tmp_path / "data/raw/texts.jsonl").read_bytes() == (plain / "data/raw/texts.jsonl").read_bytes()
    assert not (plain / "data/raw/unlabeled.jsonl").exists()
    assert "unlabeled" not in json.loads((plain / "data/raw/manifest.json").read_text())

    manifest = json.loads((tmp_path / "data/raw/manifest.json").read_text())
    extra = (tmp_path / "data/raw/unlabeled.jsonl").read_bytes()
    news = (tmp_path / "news.txt").resolve()
    assert manifest["unlabeled"] == {
        "sources": [
            {
                "source": "text",
                "path": str(news),
                "sha256": hashlib.sha256(news.read_bytes()).hexdigest(),
                "kept": 30,
                "duplicates": 10,
            }
        ],
        "count": 30,
        "sha256": hashlib.sha256(extra).hexdigest(),
    }
    kept = [json.loads(line)["text"] for line in extra.decode().splitlines()]
    assert kept == novel
    held_out = [
        words(" ".join(json.loads(line)["tokens"]))
        for split in ("val", "test")
        for line in (tmp_path / f"data/prepared/{split}.jsonl").read_text().splitlines()
    ]
    assert held_out and not any(s in words(t) for s in held_out for t in kept)

    # the pool (tokenizer text and MLM chunks) grows by the kept texts; val chunks stay the labeled val's
    counts = json.loads((tmp_path / "data/prepared/split.json").read_text())["counts"]
    before = json.loads((plain / "data/prepared/split.json").read_text())["counts"]
    assert counts["pool"] == before["pool"] + 30
    assert counts["mlm_train_chunks"] > before["mlm_train_chunks"]
    assert counts["mlm_val_chunks"] == before["mlm_val_chunks"]
    vocab = json.loads((tmp_path / "data/prepared/tokenizer.json").read_text())["model"]["vocab"]
    assert "zebra" in vocab or "zebra1" in vocab
    chunks = np.load(tmp_path / "data/prepared/mlm_train.npy")
    assert chunks.shape[0] == counts["mlm_train_chunks"]
    tokenizer = Tokenizer.from_file(str(tmp_path / "data/prepared/tokenizer.json"))
    stream = chunks.ravel().tolist()
    for text in (novel[0], novel[-1]):  # the unlabeled texts are in the chunks MLM trains on, not just counted
        ids = tokenizer.encode(text, add_special_tokens=False).ids[:3]
        assert any(stream[i : i + 3] == ids for i in range(len(stream))), text

    # what the fetch run logs: the counts as metrics, the manifest (sources and hashes) as an artifact
    assert captured["fetch"]["metrics"] == {"count": 40, "unlabeled": 30, "unlabeled_duplicates": 10}
    assert Path("data/raw/manifest.json") in captured["fetch"]["files"]  # relative to the stage's folder
    assert captured["fetch"]["params"]["unlabeled"] == [
        {"source": "text", "path": "news.txt", "text_column": "text", "token_index": 0}
    ]


def test_a_torn_unlabeled_file_stops_preprocess(tmp_path, monkeypatch, captured, capsys):
    write_conll(tmp_path / "ner.conll")
    (tmp_path / "news.txt").write_text("a text nobody labeled\n")
    prepare(tmp_path, monkeypatch, [{"source": "text", "path": "news.txt"}])
    (tmp_path / "data/raw/unlabeled.jsonl").write_text('{"text": "swapped"}\n')
    capsys.readouterr()
    assert run_stage("preprocess", tmp_path, monkeypatch) == 2
    assert "sha256 does not match unlabeled.jsonl" in capsys.readouterr().err


BAD = {
    "missing file": ({"source": "text", "path": "absent.txt"}, ["text.fetch.unlabeled.0.path", "absent.txt"]),
    "unknown source": ({"source": "pdf", "path": "u.csv"}, ["text.fetch.unlabeled.0.source", "'pdf'"]),
    "csv column": (
        {"source": "csv", "path": "u.csv", "text_column": "body"},
        ["text.fetch.unlabeled.0.text_column", "u.csv", "'body'"],
    ),
    "jsonl key": (
        {"source": "jsonl", "path": "u.csv", "text_column": "body"},
        ["text.fetch.unlabeled.0.text_column", "u.csv: line 1"],
    ),
    "conll column": (
        {"source": "conll", "path": "u.csv", "token_index": 3},
        ["text.fetch.unlabeled.0.token_index", "u.csv: line 1"],
    ),
    "bbc-news with a path": ({"source": "bbc-news", "path": "u.csv"}, ["text.fetch.unlabeled.0", "path"]),
}


@pytest.mark.parametrize("case", BAD)
def test_a_bad_entry_is_one_error_line_naming_the_key(tmp_path, monkeypatch, captured, capsys, case):
    unlabeled, expected = BAD[case]
    write_conll(tmp_path / "ner.conll")
    (tmp_path / "u.csv").write_text('{"text": "one"}\n')
    write_params(tmp_path, task=NER, fetch={"source": "conll", "path": "ner.conll", "unlabeled": [unlabeled]})
    before = file_hashes(tmp_path)
    assert run_stage("fetch", tmp_path, monkeypatch) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:"), lines
    for part in expected:
        assert part in lines[0]
    assert file_hashes(tmp_path) == before and not captured
