"""The text track's files in data/raw and data/prepared, and the only code that reads or writes them.

    data/raw/texts.jsonl       one document {"text", "label"} or sentence {"tokens", "tags"} per line
    data/raw/classes.json      document classes, or the IOB2 tag set (index = label id)
    data/raw/unlabeled.jsonl   {"text"} per line: text.fetch.unlabeled, for the pretraining pool only
    data/raw/manifest.json     provenance and the sha256 of texts.jsonl, written last

data/prepared holds {train,val,test}.jsonl in the same form, each record with its item "id" first, unlabeled.jsonl
({"id", "text"} per line), the tokenizer and the MLM chunks; its split.json (written last) has every file's sha256
and their joint data_hash, as the image track's does. An item id names the raw row: `texts#<row of texts.jsonl>`,
`unlabeled#<row of unlabeled.jsonl>` (0-based), so it stays the same while data/raw does.
"""

import hashlib
import json
from pathlib import Path

from sslflow.atomic import write_json, write_with
from sslflow.errors import SslflowError


def jsonl_bytes(records: list[dict]) -> bytes:
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records).encode()


def read_jsonl(path: Path) -> list[dict]:
    if not path.is_file():
        raise SslflowError(f"{path} not found; run the stage that writes it first")
    try:
        return [json.loads(line) for line in path.read_text().splitlines() if line]
    except (ValueError, UnicodeDecodeError) as err:
        raise SslflowError(f"{path}: not valid JSON lines ({err})") from None


def read_json(path: Path):
    if not path.is_file():
        raise SslflowError(f"{path} not found; run the stage that writes it first")
    try:
        return json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError) as err:
        raise SslflowError(f"{path}: not valid JSON ({err})") from None


def write_raw_text(
    dir: Path, examples: list[dict], classes: list[str], manifest: dict, unlabeled: list[str] | None = None
) -> dict:
    """Write texts.jsonl and classes.json, then the manifest (with count and sha256); returns the manifest.
    `unlabeled` (None: no unlabeled corpus) goes to unlabeled.jsonl, its count and sha256 to
    manifest["unlabeled"]."""
    if not examples:
        raise SslflowError("no texts to write: the dataset is empty")
    data = jsonl_bytes(examples)
    full = {**manifest, "count": len(examples), "sha256": hashlib.sha256(data).hexdigest()}
    write_with(dir / "texts.jsonl", lambda tmp: tmp.write_bytes(data))
    if unlabeled is None:
        (dir / "unlabeled.jsonl").unlink(missing_ok=True)
    else:
        extra = jsonl_bytes([{"text": t} for t in unlabeled])
        full["unlabeled"] = {
            **full.get("unlabeled", {}), "count": len(unlabeled), "sha256": hashlib.sha256(extra).hexdigest()
        }
        write_with(dir / "unlabeled.jsonl", lambda tmp: tmp.write_bytes(extra))
    write_json(dir / "classes.json", classes)
    write_json(dir / "manifest.json", full)
    return full


def read_raw_text(dir: Path, task: str) -> tuple[list[dict], list[str], dict]:
    """(examples, classes, manifest); a torn file or data fetched for the other task is an error."""
    manifest = read_json(dir / "manifest.json")
    path = dir / "texts.jsonl"
    if not path.is_file():
        raise SslflowError(f"{path} not found; run the fetch stage first")
    if hashlib.sha256(path.read_bytes()).hexdigest() != manifest.get("sha256"):
        raise SslflowError(f"{dir / 'manifest.json'}: sha256 does not match texts.jsonl; rerun fetch")
    if manifest.get("task") != task:
        raise SslflowError(f"{dir} holds {manifest.get('task')} data but text.task is {task}; rerun fetch")
    return read_jsonl(path), read_json(dir / "classes.json"), manifest


def read_unlabeled(dir: Path, manifest: dict) -> list[str]:
    """The unlabeled corpus that `manifest` (from read_raw_text) lists, [] if none; a torn file is an error."""
    if "unlabeled" not in manifest:
        return []
    path = dir / "unlabeled.jsonl"
    if not path.is_file() or hashlib.sha256(path.read_bytes()).hexdigest() != manifest["unlabeled"]["sha256"]:
        raise SslflowError(f"{dir / 'manifest.json'}: sha256 does not match unlabeled.jsonl; rerun fetch")
    return [r["text"] for r in read_jsonl(path)]


def write_prepared_files(dir: Path, files: dict[str, bytes], info: dict) -> dict:
    """Write `files` (name -> bytes), then split.json = `info` + each file's sha256 + their data_hash."""
    hashes = {}
    all_files = hashlib.sha256()
    for name in sorted(files):
        data = files[name]
        hashes[name] = hashlib.sha256(data).hexdigest()
        all_files.update(name.encode() + b"\0" + data)  # names too: moving bytes between files changes it
        write_with(dir / name, lambda tmp, data=data: tmp.write_bytes(data))
    full = {**info, "sha256": hashes, "data_hash": all_files.hexdigest()}
    write_json(dir / "split.json", full)
    return full


def with_ids(records: list[dict], kind: str) -> list[dict]:
    """Each record with its item id `<kind>#<row>` first; kind "texts" or "unlabeled", the raw file it came from."""
    return [{"id": f"{kind}#{row}", **record} for row, record in enumerate(records)]


def plain_text(example: dict) -> str:
    """A document's text, or a sentence's tokens joined by spaces: what the tokenizer and MLM read."""
    return example["text"] if "text" in example else " ".join(example["tokens"])
