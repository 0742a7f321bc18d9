"""Checkpoints that a killed run resumes from: written atomically, verified when read, the newest K kept.

    checkpoints/<stage>/step-00000120.pt    torch.save of tensors and plain containers (read with weights_only)
    checkpoints/<stage>/step-00000120.json  completion marker, written last: size and sha256 of the .pt,
                                            the params/data fingerprint and the tracking run id

A checkpoint counts only if its marker exists, matches the fingerprint and its .pt has the recorded sha256;
otherwise the previous one is used, with a warning. Older checkpoints are deleted only after a newer one is
complete.
"""

import hashlib
import io
import json
import pickle
import random
import sys
import zipfile
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from sslflow.atomic import write_json, write_with
from sslflow.cli import warn as _warn
from sslflow.errors import SslflowError
from sslflow.faults import Interrupted, disk_full_is_clear
from sslflow.lock import exclusive
from sslflow.state import get_state, set_state

FORMAT = 1


def fingerprint(*parts) -> str:
    """A short hash of what a resumed checkpoint must have been trained with (params that change the result,
    the data hash); settings that do not change it, like the checkpoint interval, stay out."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def rng_state() -> dict:
    # numpy's key is an ndarray, which weights_only loading refuses: store it as a list.
    name, keys, pos, has_gauss, gauss = np.random.get_state()
    return {
        "python": random.getstate(),
        "numpy": [name, keys.tolist(), pos, has_gauss, gauss],
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    name, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((name, np.asarray(keys, dtype=np.uint32), pos, has_gauss, gauss))
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


class UnreadableCheckpoint(SslflowError):
    """The payload is not a checkpoint this module wrote (random or damaged bytes): fall back, do not stop."""


def read_payload(path: Path) -> dict:
    """Load a checkpoint file with weights_only=True; a file that needs arbitrary unpickling is refused, and one
    that is not a readable PyTorch archive at all raises UnreadableCheckpoint."""
    if not zipfile.is_zipfile(path):  # torch.save always writes a zip archive; anything else is not ours
        raise UnreadableCheckpoint(f"{path} is not a PyTorch checkpoint archive")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        # PyTorch's message starts with advice to retry with weights_only=False: keep only what it found.
        lines = [line.strip() for line in str(err).splitlines() if line.strip()]
        found = [line for line in lines if "global" in line.lower() and "weights_only" not in line]
        if not found:
            raise UnreadableCheckpoint(f"{path} cannot be read as tensors") from None
        raise SslflowError(
            f"refusing to load {path}: it holds pickled objects, not only tensors ({found[0]}); "
            "delete it if you did not make it"
        ) from None
    except (RuntimeError, EOFError, ValueError, KeyError, zipfile.BadZipFile) as err:
        reason = (str(err).strip().splitlines() or [type(err).__name__])[0].split(". ")[0]
        raise UnreadableCheckpoint(f"{path} is damaged ({reason[:200]})") from None


@dataclass(frozen=True)
class Marker:
    path: Path  # step-XXXXXXXX.json
    step: int
    size: int
    sha256: str
    fingerprint: str
    run_id: str | None

    @property
    def payload(self) -> Path:
        return self.path.with_suffix(".pt")

    @classmethod
    def read(cls, path: Path) -> "Marker":
        data = json.loads(path.read_text())
        return cls(path, int(data["step"]), int(data["size"]), data["sha256"], data["fingerprint"], data.get("run_id"))

    def problem(self) -> str | None:
        """Why the payload cannot be trusted, or None."""
        if not self.payload.is_file():
            return "missing"
        data = self.payload.read_bytes()
        if len(data) != self.size:
            return f"truncated ({len(data)} of {self.size} bytes)"
        if hashlib.sha256(data).hexdigest() != self.sha256:
            return "corrupt (sha256 mismatch)"
        return None


class Checkpoints:
    """The checkpoints of one stage in `directory`; use as a context manager, which holds the directory's lock.

    On entry, the newest usable checkpoint is found (`latest`); `fit` restores from it and saves every
    `every` steps, keeping the newest `keep`. Set `run_id` once the tracking run is open, so that a resumed
    stage continues the same run.
    """

    def __init__(self, directory: Path, *, every: int, keep: int, fingerprint: str):
        self.directory = Path(directory)
        self.every, self.keep, self.fingerprint = every, keep, fingerprint
        self.run_id: str | None = None
        self.latest: Marker | None = None
        self._payload: dict | None = None
        self._stack = ExitStack()

    def __enter__(self) -> "Checkpoints":
        self._stack.enter_context(exclusive(self.directory / ".lock", self.directory.name))
        try:
            for torn in self.directory.glob(".*.tmp"):  # temp files of a write that was killed
                torn.unlink()
            self.latest, self._payload = self._find()
        except BaseException:
            self._stack.close()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self._stack.close()

    def _markers(self) -> list[Path]:
        return sorted(self.directory.glob("step-*.json"), reverse=True)  # zero-padded: newest first

    def _find(self) -> tuple[Marker | None, dict | None]:
        for path in self._markers():
            try:
                marker = Marker.read(path)
            except (ValueError, KeyError, TypeError, OSError) as err:
                _warn(f"checkpoint marker {path} is unreadable ({err}); falling back to the previous checkpoint")
                continue
            if marker.fingerprint != self.fingerprint:
                _warn(f"checkpoint {marker.payload} was made with other params or data; not resuming from it")
                continue
            problem = marker.problem()
            if problem:
                _warn(f"checkpoint {marker.payload} is {problem}; falling back to the previous checkpoint")
                continue
            try:
                payload = read_payload(marker.payload)
            except UnreadableCheckpoint as err:  # bytes behind a forged or miswritten marker
                _warn(f"checkpoint {err}; falling back to the previous checkpoint")
                continue
            ours = isinstance(payload, dict) and payload.get("format") == FORMAT and {"progress", "rng"} <= set(payload)
            if not ours:
                _warn(f"checkpoint {marker.payload} is not in format {FORMAT}; falling back to the previous checkpoint")
                continue
            for unmarked in sorted(self.directory.glob("step-*.pt")):
                if unmarked.name > marker.payload.name and not unmarked.with_suffix(".json").exists():
                    _warn(f"checkpoint {unmarked} has no completion marker (its write was cut short); ignoring it")
            return marker, payload
        return None, None

    def restore(self, objects: dict) -> dict:
        """Load the latest checkpoint into `objects` (name -> module, optimizer, scheduler or generator) and
        the global RNGs; returns the saved training progress, or {} when there is nothing to resume."""
        if self._payload is None:
            return {}
        for name, obj in objects.items():
            set_state(obj, self._payload[name])
        set_rng_state(self._payload["rng"])
        progress = self._payload["progress"]
        self._payload = None
        print(
            f"resuming from {self.latest.payload} (step {progress['step']}, epoch {progress['epoch'] + 1})",
            file=sys.stderr,
        )
        return progress

    def save(self, objects: dict, progress: dict) -> Path:
        """Write a checkpoint of `objects`, the RNGs and `progress`: .pt, then its marker, then rotate."""
        payload = {
            "format": FORMAT,
            "progress": progress,
            "rng": rng_state(),
            **{k: get_state(v) for k, v in objects.items()},
        }
        buffer = io.BytesIO()
        torch.save(payload, buffer)
        data = buffer.getvalue()
        stem = f"step-{progress['step']:08d}"
        path, marker = self.directory / f"{stem}.pt", self.directory / f"{stem}.json"
        if self.latest:
            kept = f"the previous checkpoint {self.latest.payload} is intact"
        else:
            kept = "there was no earlier checkpoint"
        marker.unlink(missing_ok=True)  # a marker must never describe another payload than the one beside it
        with disk_full_is_clear(path, kept):
            write_with(path, lambda tmp: tmp.write_bytes(data))
            write_json(
                marker,
                {
                    "step": progress["step"],
                    "size": len(data),
                    "sha256": hashlib.sha256(data).hexdigest(),
                    "fingerprint": self.fingerprint,
                    "run_id": self.run_id,
                },
            )
        self.latest = Marker.read(marker)
        self._rotate()
        return path

    def _rotate(self) -> None:
        """Keep the newest `keep` checkpoints up to the latest; delete the rest, each marker before its .pt.

        Checkpoints past the latest belong to a timeline this run abandoned (corrupt, or other params)."""
        kept = []
        for path in self._markers():
            try:
                marker = Marker.read(path)
            except (ValueError, KeyError, TypeError, OSError):
                marker = None
            ours = marker and marker.fingerprint == self.fingerprint and marker.step <= self.latest.step
            if ours and len(kept) < self.keep:
                kept.append(marker.payload)
                continue
            path.unlink(missing_ok=True)
            path.with_suffix(".pt").unlink(missing_ok=True)
        for orphan in self.directory.glob("step-*.pt"):
            if orphan not in kept:
                orphan.unlink(missing_ok=True)

    def at_boundary(self, objects: dict, progress: dict, stop_signal: int | None) -> None:
        """Called by the training loop between steps: save when due or when a stop signal came in, then exit
        on that signal. Nothing is saved during a run of non-finite losses: the last good checkpoint stays."""
        if progress["nonfinite"] == 0 and (progress["step"] % self.every == 0 or stop_signal is not None):
            self.save(objects, progress)
        if stop_signal is not None:
            raise Interrupted(stop_signal)
