"""The text track's labeling loop on tiny documents: item ids through prepared, the unlabeled corpus in the FixMatch
pool, the label stage merging an id,label CSV and a Label Studio export, select proposing candidates only, the
fine-tuning budget from people's labels; and NER, whose entity spans come back from a Label Studio export."""

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from test_text_stages import TOPICS, file_hashes, run_stage, tiny_conll, tiny_documents, write_params

from sslflow.config import Select
from sslflow.labels import assign_splits
from sslflow.text.config import Text, TextFinetune
from sslflow.text.corpus import read_jsonl
from sslflow.text.encode import chunk_documents
from sslflow.text.finetune import unlabeled_pool
from sslflow.text.labeled import held_out, pool_items
from sslflow.text.tokenizer import load_tokenizer

FETCH = {"source": "csv", "path": "docs.csv", "unlabeled": [{"source": "text", "path": "more.txt"}]}
PEOPLE = {"labels_per_class": None, "method": "fixmatch", "fixmatch": {"steps": 2, "mu": 1, "threshold": 0.5}}
ENCODING = {"max_length": 24, "stride": 4}  # the tiny profile's (test_text_stages.TINY)


def unlabeled_texts(n: int = 18) -> dict[str, str]:
    """text -> its hidden topic; words of its topic plus one made-up word, so no text equals a labeled one."""
    rng = np.random.default_rng(1)
    out = {}
    for i in range(n):
        topic = list(TOPICS)[i % len(TOPICS)]
        words = TOPICS[topic].split() + ["the", "a", "said"]
        out[" ".join([f"fresh{i}", *rng.choice(words, size=rng.integers(8, 30))])] = topic
    return out


def lines(path: Path) -> list[str]:
    return path.read_text().splitlines()


def truth(project: Path) -> dict[str, str]:
    """item id -> hidden topic of every prepared unlabeled text."""
    topics = unlabeled_texts()
    return {r["id"]: topics[r["text"]] for r in read_jsonl(project / "data/prepared/unlabeled.jsonl")}


def stage(name: str, project: Path, monkeypatch) -> int:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    return run_stage(name, project, monkeypatch)


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory, empty_store):
    """fetch, preprocess, label (no label files yet) and pretrain of tiny documents with an unlabeled corpus."""
    project = tmp_path_factory.mktemp("labeling")
    tiny_documents(project / "docs.csv")
    (project / "more.txt").write_text("\n".join(unlabeled_texts()) + "\n")
    write_params(project, fetch=FETCH)
    shutil.copy(empty_store, project / "mlflow.db")
    with pytest.MonkeyPatch.context() as mp:
        assert [stage(s, project, mp) for s in ("fetch", "preprocess", "label", "pretrain")] == [0, 0, 0, 0]
    return project


@pytest.fixture
def project(pretrained, tmp_path) -> Path:
    shutil.copytree(pretrained, tmp_path / "p")
    return tmp_path / "p"


def test_prepared_texts_carry_their_raw_row_as_id_and_no_labels_leave_the_splits_as_prepared(pretrained):
    raw = read_jsonl(pretrained / "data/raw/texts.jsonl")
    prepared, labeled = pretrained / "data/prepared", pretrained / "data/labeled"
    for split in ("train", "val", "test"):
        for record in read_jsonl(prepared / f"{split}.jsonl"):
            assert list(record) == ["id", "text", "label"]
            assert raw[int(record["id"].removeprefix("texts#"))] == {"text": record["text"], "label": record["label"]}
        # no label file: data/labeled is the prepared split, byte for byte (the default run's metrics stay)
        assert (labeled / f"{split}.jsonl").read_bytes() == (prepared / f"{split}.jsonl").read_bytes()
    assert (labeled / "classes.json").read_bytes() == (prepared / "classes.json").read_bytes()
    unlabeled = read_jsonl(prepared / "unlabeled.jsonl")
    raw_unlabeled = read_jsonl(pretrained / "data/raw/unlabeled.jsonl")
    assert unlabeled == [{"id": f"unlabeled#{i}", **r} for i, r in enumerate(raw_unlabeled)]
    assert len(unlabeled) == len(unlabeled_texts())
    items = json.loads((labeled / "items.json").read_text())
    assert not any(f for split in items.values() for f in split["from_file"])


def test_the_fixmatch_pool_grows_by_the_unlabeled_chunks_and_reads_no_label(pretrained, tmp_path):
    prepared = pretrained / "data/prepared"
    tokenizer = load_tokenizer(prepared / "tokenizer.json")
    train = read_jsonl(prepared / "train.jsonl")
    extra = read_jsonl(prepared / "unlabeled.jsonl")
    ids, texts = pool_items(prepared)
    assert ids == [r["id"] for r in train + extra] and texts == [r["text"] for r in train + extra]
    pool = unlabeled_pool(tokenizer, texts, ENCODING, "pool")
    before = unlabeled_pool(tokenizer, [r["text"] for r in train], ENCODING, "pool")
    grown, _ = chunk_documents(tokenizer, [r["text"] for r in extra], **ENCODING)
    assert len(grown) > 0 and np.array_equal(pool, np.concatenate([before, grown]))

    # labels scrambled or gone: the same pool
    blind = tmp_path / "prepared"
    shutil.copytree(prepared, blind)
    (blind / "train.jsonl").write_text("".join(json.dumps({"id": r["id"], "text": r["text"]}) + "\n" for r in train))
    assert pool_items(blind) == (ids, texts)
    # what people labeled into val or test leaves it
    held = {extra[0]["id"], train[0]["id"]}
    assert pool_items(prepared, without=held) == (ids[1 : len(train)] + ids[len(train) + 1 :],
                                                  texts[1 : len(train)] + texts[len(train) + 1 :])


def write_labels(project: Path) -> tuple[dict[str, str], dict[str, str]]:
    """A CSV (a train document's own label, then half the unlabeled texts) and a Label Studio export (the other
    half, one task cancelled and one never annotated); returns (id -> label given) of each."""
    train = read_jsonl(project / "data/prepared/train.jsonl")
    classes = json.loads((project / "data/prepared/classes.json").read_text())
    hidden = truth(project)
    ids = sorted(hidden, key=lambda i: int(i.split("#")[1]))
    in_csv = {train[0]["id"]: classes[train[0]["label"]]} | {i: hidden[i] for i in ids[::2]}
    in_export = {i: hidden[i] for i in ids[1::2][:-2]}
    (project / "labels").mkdir()
    with open(project / "labels" / "round1.csv", "w", newline="") as f:
        out = csv.writer(f)
        out.writerow(["id", "path", "label"])
        out.writerows([item, "a text, with a comma\nand a line", label] for item, label in in_csv.items())

    def task(n: int, item: str, choice: str | None, cancelled: bool = False) -> dict:
        result = [] if choice is None else [{"type": "choices", "value": {"choices": [choice]}}]
        annotations = [] if choice is None else [{"id": n, "result": result, "was_cancelled": cancelled}]
        return {"id": n, "data": {"text": "...", "sslflow_id": item}, "annotations": annotations}

    tasks = [task(n, i, label) for n, (i, label) in enumerate(in_export.items())]
    cancelled, blank = ids[1::2][-2:]
    tasks += [task(98, cancelled, "sport", cancelled=True), task(99, blank, None)]
    (project / "labels" / "round2.json").write_text(json.dumps(tasks))
    return in_csv, in_export


def test_the_label_stage_merges_a_csv_and_a_label_studio_export(project, monkeypatch):
    in_csv, in_export = write_labels(project)
    assert stage("label", project, monkeypatch) == 0
    prepared, labeled = project / "data/prepared", project / "data/labeled"
    classes = json.loads((labeled / "classes.json").read_text())
    items = json.loads((labeled / "items.json").read_text())
    people = in_csv | in_export
    new = sorted(i for i in people if i.startswith("unlabeled#"))
    where = dict(zip(new, assign_splits(new, test_fraction=0.2, val_fraction=0.1, seed=0).tolist(), strict=True))
    texts = {r["id"]: r["text"] for r in read_jsonl(prepared / "unlabeled.jsonl")}
    for code, split in enumerate(("train", "val", "test")):
        records = read_jsonl(labeled / f"{split}.jsonl")
        before = lines(prepared / f"{split}.jsonl")
        assert lines(labeled / f"{split}.jsonl")[: len(before)] == before  # the source's texts as they were
        added = records[len(before) :]  # then people's, in the order of unlabeled.jsonl, each in its id's split
        assert [r["id"] for r in added] == sorted((i for i in new if where[i] == code), key=lambda i: int(i[10:]))
        assert all(r == {"id": r["id"], "text": texts[r["id"]], "label": classes.index(people[r["id"]])}
                   for r in added)
        assert items[split]["ids"] == [r["id"] for r in records]
        from_file = {i for i, f in zip(items[split]["ids"], items[split]["from_file"], strict=True) if f}
        repeated = {i for i in people if i.startswith("texts#")} if split == "train" else set()  # train[0]
        assert from_file == repeated | {r["id"] for r in added}
    info = json.loads((labeled / "labeled.json").read_text())
    assert [(f["path"], f["rows"]) for f in info["files"]] == [("labels/round1.csv", len(in_csv)),
                                                              ("labels/round2.json", len(in_export))]
    assert info["unlabeled"] == len(texts) - len(new) == 2  # the cancelled task and the blank one


BAD = {
    "a path column only": ("path,label\nsome text,sport\n", "texts are named by id"),
    "an unknown id": ("id,label\nunlabeled#999,sport\n", "unknown id 'unlabeled#999'"),
    "a class the source has not": ("id,label\nunlabeled#0,weather\n", "unknown class 'weather'"),
}


@pytest.mark.parametrize("case", BAD)
def test_a_bad_labels_file_is_one_error_line_and_keeps_the_labeled_splits(project, monkeypatch, capsys, case):
    content, expected = BAD[case]
    (project / "labels").mkdir()
    (project / "labels" / "bad.csv").write_text(content)
    before = file_hashes(project / "data")
    capsys.readouterr()
    assert stage("label", project, monkeypatch) == 2
    errors = capsys.readouterr().err.strip().splitlines()
    assert len(errors) == 1 and errors[0].startswith("error: text.fetch.labels") and expected in errors[0], errors
    assert "bad.csv" in errors[0] and file_hashes(project / "data") == before


def test_finetune_trains_on_people_labels_with_the_unlabeled_corpus_in_its_pool(project, monkeypatch):
    write_labels(project)
    write_params(project, fetch=FETCH, finetune=PEOPLE)
    assert stage("label", project, monkeypatch) == 0 and stage("finetune", project, monkeypatch) == 0
    items = json.loads((project / "data/labeled/items.json").read_text())["train"]
    budget = json.loads((project / "models/finetuned/budget.json").read_text())
    people = [i for i, f in zip(items["ids"], items["from_file"], strict=True) if f]
    assert sorted(items["ids"][i] for i in budget["indices"]) == sorted(people)  # exactly people's train labels
    summary = json.loads((project / "reports/finetune.json").read_text())
    assert summary["labeled"] == len(people)

    prepared = project / "data/prepared"
    held = held_out(project / "data/labeled")
    kept = [r["text"] for r in read_jsonl(prepared / "train.jsonl") + read_jsonl(prepared / "unlabeled.jsonl")
            if r["id"] not in held]
    tokenizer = load_tokenizer(prepared / "tokenizer.json")
    train_only, _ = chunk_documents(tokenizer, [r["text"] for r in read_jsonl(prepared / "train.jsonl")], **ENCODING)
    assert any(i.startswith("unlabeled#") for i in held)  # some went to val or test: out of the pool
    assert summary["pool_chunks"] == len(chunk_documents(tokenizer, kept, **ENCODING)[0]) > len(train_only)


def test_without_people_labels_the_budget_is_one_error_line(project, monkeypatch, capsys):
    write_params(project, fetch=FETCH, finetune={"labels_per_class": None})
    capsys.readouterr()
    assert stage("finetune", project, monkeypatch) == 2
    errors = capsys.readouterr().err.strip().splitlines()
    assert len(errors) == 1 and "none of them is in the train split yet" in errors[0], errors


def read_proposed(project: Path) -> list[dict]:
    with open(project / "reports/to_label.csv", newline="") as f:
        return list(csv.DictReader(f))


def test_select_proposes_candidates_only_and_writes_what_people_label_with(project, monkeypatch, capsys):
    write_params(project, fetch=FETCH, select={"strategy": "margin", "budget": 12})
    assert stage("propose", project, monkeypatch) == 0  # no label yet: margin falls back to typical
    assert "select: margin needs people's labels of two classes" in capsys.readouterr().out
    first = read_proposed(project)
    assert len(first) == 12 and all(row["suggested_label"] == "" for row in first)

    in_csv, in_export = write_labels(project)
    assert stage("label", project, monkeypatch) == 0
    capsys.readouterr()
    assert stage("propose", project, monkeypatch) == 0
    assert "needs" not in capsys.readouterr().out  # two classes labeled in train: the probe's margin
    proposed = read_proposed(project)
    ids, texts = pool_items(project / "data/prepared")
    text_of = dict(zip(ids, texts, strict=True))
    people = set(in_csv) | set(in_export)
    held = held_out(project / "data/labeled")
    assert len(proposed) == 12 and len({r["id"] for r in proposed}) == 12
    for row in proposed:
        assert row["id"] in text_of and row["id"] not in people | held  # candidates only
        assert row["path"] == text_of[row["id"]] and row["label"] == ""
        assert row["suggested_label"] in TOPICS and 0 < float(row["confidence"]) <= 1
    reports = project / "reports"
    markdown = lines(reports / "to_label.md")
    assert len(markdown) == 12 and proposed[0]["id"] in markdown[0]
    tasks = json.loads((reports / "to_label_tasks.json").read_text())
    assert [t["data"] for t in tasks] == [{"text": r["path"], "sslflow_id": r["id"]} for r in proposed]
    assert tasks[0]["predictions"][0]["result"][0]["value"]["choices"] == [proposed[0]["suggested_label"]]
    config = (reports / "label_config.xml").read_text()
    assert '<Text name="text" value="$text"/>' in config and all(f'"{c}"' in config for c in TOPICS)
    summary = json.loads((reports / "select.json").read_text())
    assert summary == {"strategy": "margin", "proposed": 12, "labeled_by_people": len(
        [f for f in json.loads((project / "data/labeled/items.json").read_text())["train"]["from_file"] if f]),
        "candidates": len(ids) - len((people | held) & set(ids))}


NER_EXTRA = {  # unlabeled texts -> their entities (words, type): names and places tiny_conll never uses
    "Lena Berg flew from Rome to Lima .": [("Lena Berg", "PER"), ("Rome", "LOC"), ("Lima", "LOC")],
    "Omar stayed in Quito .": [("Omar", "PER"), ("Quito", "LOC")],
    "Nobody came .": [],
    "Ines Vidal drove to Tunis .": [("Ines Vidal", "PER"), ("Tunis", "LOC")],
}


@pytest.fixture(scope="module")
def ner(tmp_path_factory, empty_store):
    project = tmp_path_factory.mktemp("ner-labeling")
    tiny_conll(project / "ner.conll")
    (project / "extra.txt").write_text("\n".join(NER_EXTRA) + "\n")
    fetch = {"source": "conll", "path": "ner.conll", "unlabeled": [{"source": "text", "path": "extra.txt"}]}
    write_params(project, task="token-classification", fetch=fetch, finetune={"labels_per_class": 5},
                 select={"strategy": "badge", "budget": 5})
    shutil.copy(empty_store, project / "mlflow.db")
    with pytest.MonkeyPatch.context() as mp:
        assert [stage(s, project, mp) for s in ("fetch", "preprocess", "label", "pretrain")] == [0, 0, 0, 0]
    return project


def span_task(item: str, text: str, entities: list[tuple[str, str]], *, annotated: bool = True) -> dict:
    """A Label Studio export task as the UI writes it: each entity's character span in `text`."""
    result = []
    for words, kind in entities:
        start = text.index(words)
        result.append({"from_name": "label", "to_name": "text", "type": "labels",
                       "value": {"start": start, "end": start + len(words), "text": words, "labels": [kind]}})
    annotations = [{"id": 1, "result": result, "was_cancelled": False}] if annotated else []
    return {"id": len(item), "data": {"text": text, "sslflow_id": item}, "annotations": annotations}


def entities_of(record: dict) -> list[tuple[str, str]]:
    """A prepared sentence's entities as (words, type), from its IOB2 tags."""
    from sslflow.text.tags import spans

    return [(" ".join(record["tokens"][a:b]), kind) for kind, a, b in spans(record["tags"])]


def test_ner_labels_come_back_from_a_label_studio_span_export(ner, tmp_path, monkeypatch, capsys):
    for split in ("train", "val", "test"):  # no label file yet: the prepared splits as they are
        assert (ner / f"data/labeled/{split}.jsonl").read_bytes() == (ner / f"data/prepared/{split}.jsonl").read_bytes()
    project = tmp_path / "p"
    shutil.copytree(ner, project)
    unlabeled = read_jsonl(project / "data/prepared/unlabeled.jsonl")
    assert [r["text"] for r in unlabeled] == list(NER_EXTRA)
    train = read_jsonl(project / "data/prepared/train.jsonl")
    tasks = [span_task(r["id"], r["text"], NER_EXTRA[r["text"]]) for r in unlabeled]
    tasks += [span_task(r["id"], " ".join(r["tokens"]), entities_of(r)) for r in train[:3]]  # their own tags again
    tasks.append(span_task(train[3]["id"], " ".join(train[3]["tokens"]), [], annotated=False))  # not labeled yet
    (project / "labels").mkdir()
    (project / "labels" / "export.json").write_text(json.dumps(tasks))
    write_params(project, task="token-classification", fetch={"source": "conll", "path": "ner.conll", "unlabeled": [
        {"source": "text", "path": "extra.txt"}]}, finetune={"labels_per_class": None})
    assert stage("label", project, monkeypatch) == 0

    splits = {name: read_jsonl(project / f"data/labeled/{name}.jsonl") for name in ("train", "val", "test")}
    items = json.loads((project / "data/labeled/items.json").read_text())
    where = assign_splits([r["id"] for r in unlabeled], test_fraction=0.2, val_fraction=0.2, seed=0)
    for record, code in zip(unlabeled, where, strict=True):
        name = ("train", "val", "test")[code]
        (added,) = [r for r in splits[name] if r["id"] == record["id"]]
        assert added["tokens"] == record["text"].split()
        assert entities_of(added) == NER_EXTRA[record["text"]]
        assert items[name]["from_file"][items[name]["ids"].index(record["id"])]
    flags = dict(zip(items["train"]["ids"], items["train"]["from_file"], strict=True))
    assert [flags[r["id"]] for r in train[:4]] == [True, True, True, False]
    info = json.loads((project / "data/labeled/labeled.json").read_text())
    assert info["unlabeled"] == 0 and sum(info["from_file"].values()) == len(unlabeled) + 3

    # the budget is the training sentences people tagged: 3, plus those of the unlabeled texts that hashed to train
    capsys.readouterr()
    assert stage("finetune", project, monkeypatch) == 0
    people = 3 + int((where == 0).sum())
    assert f"finetune: {people} labels" in capsys.readouterr().out
    assert json.loads((project / "models/finetuned/budget.json").read_text())["count"] == people


@pytest.mark.parametrize("case, expected", [
    ("csv", "a CSV cannot hold a sentence's tags"),
    ("unknown type", "unknown entity type 'ORG'"),
    ("edited text", "is not the text of"),
    ("two spans on a word", "is in two spans"),
    ("other tags", "but its tags are already"),
    ("unknown id", "unknown id 'unlabeled#99'"),
])
def test_ner_bad_span_exports_are_one_error_line_that_keeps_the_splits(ner, tmp_path, monkeypatch, capsys, case,
                                                                       expected):
    project = tmp_path / "p"
    shutil.copytree(ner, project)
    text, item = "Omar stayed in Quito .", "unlabeled#1"
    train = read_jsonl(project / "data/prepared/train.jsonl")[0]
    sentence = " ".join(train["tokens"])
    task = {
        "unknown type": span_task(item, text, [("Omar", "ORG")]),
        "edited text": span_task(item, text + " Later.", [("Omar", "PER")]),
        "two spans on a word": span_task(item, text, [("Omar", "PER"), ("Omar stayed", "LOC")]),
        "other tags": span_task(train["id"], sentence, []),  # a known sentence with entities, tagged all O
        "unknown id": span_task("unlabeled#99", text, []),
    }.get(case)
    (project / "labels").mkdir()
    if case == "csv":
        (project / "labels" / "tags.csv").write_text("id,label\nunlabeled#1,B-PER\n")
    else:
        (project / "labels" / "export.json").write_text(json.dumps([task]))
    before = file_hashes(project / "data")
    capsys.readouterr()
    assert stage("label", project, monkeypatch) == 2
    errors = capsys.readouterr().err.strip().splitlines()
    assert len(errors) == 1 and expected in errors[0] and "labels/" in errors[0], errors
    assert file_hashes(project / "data") == before


def test_ner_select_proposes_pool_sentences_by_typicality(ner, tmp_path, monkeypatch, capsys):
    project = tmp_path / "p"
    shutil.copytree(ner, project)
    capsys.readouterr()
    assert stage("propose", project, monkeypatch) == 0
    assert "select: badge needs a class per text (NER has none); using typical" in capsys.readouterr().out
    proposed = read_proposed(project)
    pool = {r["id"]: " ".join(r["tokens"]) for r in read_jsonl(project / "data/prepared/train.jsonl")}
    pool |= {r["id"]: r["text"] for r in read_jsonl(project / "data/prepared/unlabeled.jsonl")}
    assert len(proposed) == 5 and all(pool[r["id"]] == r["path"] for r in proposed)
    assert "<Labels" in (project / "reports/label_config.xml").read_text()


def test_the_budget_config_takes_both_null_for_either_task():
    assert TextFinetune(labels_per_class=None).label_fraction is None  # people's labels
    with pytest.raises(ValueError, match="at most one"):
        TextFinetune(labels_per_class=5, label_fraction=0.1)
    ner = Text.model_validate({"task": "token-classification", "finetune": {"labels_per_class": None}})
    assert ner.finetune.labels_per_class is None  # NER: the sentences people tagged (text.spans)
    assert Text().select == Select() and Text().fetch.labels == "labels"
