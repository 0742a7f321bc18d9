"""Fail when a committed dvc.lock is stale: code, params or a stage's command changed without rerunning it.

    python scripts/check_lock.py        # from the project root; .ci/run runs it on a fresh clone

`dvc status` over every pipeline may report outputs (and the data deps they feed) as missing, as in a fresh
clone where nothing has run; any modified or new dep, changed param or changed command means the lock no longer
describes the committed code, so `dvc repro` would rerun a stage whose recorded results are out of date.
"""

import json
import subprocess
import sys

PIPELINES = ("dvc.yaml", "text/dvc.yaml")


def stale(status: dict) -> list[str]:
    """'pipeline:stage: what changed' for every change that is not a missing file."""
    found = []
    for stage, changes in status.items():
        for change in changes:
            if isinstance(change, str):  # e.g. "changed command", "always changed"
                found.append(f"{stage}: {change}")
                continue
            for kind, items in change.items():
                if kind == "changed outs":
                    continue  # outputs: missing before a run, rewritten by it
                for path, state in items.items():
                    if kind == "changed params" or state != "deleted":
                        found.append(f"{stage}: {kind}: {path} ({state})")
    return found


def main() -> int:
    found = []
    for pipeline in PIPELINES:
        out = subprocess.run(["dvc", "status", "--json", pipeline], capture_output=True, text=True)
        if out.returncode != 0:
            print(f"error: dvc status {pipeline} failed: {out.stderr.strip()}", file=sys.stderr)
            return 2
        found += stale(json.loads(out.stdout or "{}"))  # stage names carry their dvc.yaml (but the root's)
    for line in found:
        print(f"stale: {line}", file=sys.stderr)
    if found:
        print("error: dvc.lock does not match the committed code and params; rerun the pipeline "
              "(dvc repro --all-pipelines) and commit the lock files", file=sys.stderr)
        return 1
    print(f"dvc.lock up to date with the code and params ({', '.join(PIPELINES)})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
