"""Rewrite the code deps of every stage in dvc.yaml and text/dvc.yaml from the stage script's import closure.

A stage's code deps are its script and the project modules it imports, transitively (read from the source, no
import runs); tests/test_dvc_deps.py checks the same. A folder already listed stays a folder (the stage must
import every module in it). Other deps (data, lineage files) and comments are kept.
Run it after changing imports:  python scripts/write_deps.py     (--check: only say whether one would change)
"""

import ast
import re
import shlex
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
SRC = REPO / "src"
PIPELINES = ("dvc.yaml", "text/dvc.yaml")
READ_AS_DATA = {  # code a stage reads as data: the model code MLflow packages with a registered model
    "stages/image/evaluate.py": ["src/sslflow/tracking/pyfunc.py"],
    "stages/text/evaluate.py": ["src/sslflow/tracking/text_pyfunc.py"],
}
CODE_DEP = re.compile(r"^(\s+)- (\.\./)?(src|stages)/\S+\s*$")


def module_file(name: str) -> Path | None:
    path = SRC.joinpath(*name.split("."))
    return next((c for c in (path / "__init__.py", path.with_suffix(".py")) if c.is_file()), None)


def imported(path: Path) -> set[Path]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module, *(f"{node.module}.{alias.name}" for alias in node.names)]
        else:
            continue
        for name in names:
            parts = name.split(".")
            if parts[0] == "sslflow":
                found |= {f for i in range(1, len(parts) + 1) if (f := module_file(".".join(parts[:i])))}
    return found


def code_of(script: Path) -> list[Path]:
    seen, todo = set(), [script]
    while todo:
        path = todo.pop()
        if path not in seen:
            seen.add(path)
            todo.extend(imported(path))
    return sorted(p for p in seen if p.stat().st_size > 0)


def generated(pipeline: str) -> str:
    """The text of `pipeline` with every stage's code deps written from its imports."""
    file = REPO / pipeline
    folder = file.parent
    spec = yaml.safe_load(file.read_text())["stages"]
    out, stage, written = [], None, set()
    for line in file.read_text().splitlines():
        top = re.match(r"^  (\w+):", line)
        if top:
            stage = top.group(1)
        match = CODE_DEP.match(line)
        if match is None:
            out.append(line)
            continue
        if stage in written:
            continue
        written.add(stage)
        script = (folder / shlex.split(spec[stage]["cmd"])[1]).resolve()
        files = [str(p.relative_to(REPO)) for p in code_of(script)]
        files += READ_AS_DATA.get(str(script.relative_to(REPO)), [])
        # A folder listed as a dep stays one (new modules in it need no dvc.yaml edit): its files are not listed.
        dirs = [str((folder / d).resolve().relative_to(REPO)) for d in spec[stage]["deps"]
                if CODE_DEP.match(f"  - {d}") and (folder / d).is_dir()]
        files = [f for f in files if not any(f.startswith(d + "/") for d in dirs)] + dirs
        files = sorted(files, key=lambda f: (not f.startswith("stages/"), f))
        out += [f"{match.group(1)}- {Path('..') / f if folder != REPO else f}" for f in files]
    return "\n".join(out) + "\n"


if __name__ == "__main__":
    check = sys.argv[1:] == ["--check"]  # compare only: exit 1 if a dvc.yaml would change
    stale = [p for p in PIPELINES if generated(p) != (REPO / p).read_text()]
    for p in [] if check else stale:
        (REPO / p).write_text(generated(p))
    for p in stale:
        print(f"{p}: code deps {'differ from the imports' if check else 'rewritten'}", file=sys.stderr)
    sys.exit(1 if check and stale else 0)
