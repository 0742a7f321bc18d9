"""Every pipeline stage's code deps are exactly what it runs: the stage script and the project modules it imports,
transitively, as read from the source (no import runs); a folder dep is right only if the stage imports every
module in it. Training stages do not depend on operational params."""

import ast
import shlex
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
SRC = REPO / "src"
PIPELINES = ("dvc.yaml", "text/dvc.yaml")
# Code a stage reads as data rather than imports: the model code MLflow packages with a registered model.
READ_AS_DATA = {
    "stages/image/evaluate.py": {"src/sslflow/tracking/pyfunc.py"},
    "stages/text/evaluate.py": {"src/sslflow/tracking/text_pyfunc.py"},
}
# Settings that change how a run goes, not what it produces (results are the same whatever their value).
OPERATIONAL = (
    "base.experiment", "base.num_workers", "base.pin_memory", "base.channels_last", "base.compile",
    "pretrain.train", "text.pretrain.train",
)


def module_file(name: str) -> Path | None:
    path = SRC.joinpath(*name.split("."))
    for candidate in (path / "__init__.py", path.with_suffix(".py")):
        if candidate.is_file():
            return candidate
    return None


def imported(path: Path) -> set[Path]:
    """The project modules `path` imports directly (packages too, for `from sslflow.x import y`)."""
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


def code_of(script: Path) -> set[str]:
    """`script` and every project module it imports, transitively; empty `__init__.py` files hold no code."""
    seen, todo = set(), [script]
    while todo:
        path = todo.pop()
        if path not in seen:
            seen.add(path)
            todo.extend(imported(path))
    return {str(p.relative_to(REPO) if p.is_relative_to(REPO) else p) for p in seen if p.stat().st_size > 0}


def stages(pipeline: str) -> list[tuple[str, Path, dict]]:
    """(name, working directory, stage) for each stage of a dvc.yaml."""
    folder = (REPO / pipeline).parent
    return [(name, (folder / stage.get("wdir", ".")).resolve(), stage)
            for name, stage in yaml.safe_load((REPO / pipeline).read_text())["stages"].items()]


def declared_code(wdir: Path, stage: dict) -> set[str]:
    """The code files a stage's deps name; a folder names every (non-empty) module in it."""
    found = set()
    for dep in stage.get("deps", []):
        path = (wdir / dep).resolve()
        files = sorted(f for f in path.rglob("*.py") if f.stat().st_size > 0) if path.is_dir() else [path]
        found |= {str(f.relative_to(REPO)) for f in files}
    return {p for p in found if p.startswith(("src/", "stages/"))}


def script_of(wdir: Path, stage: dict) -> Path:
    words = shlex.split(stage["cmd"])
    assert words[0] == "python", f"a stage runs one python script: {stage['cmd']}"
    return (wdir / words[1]).resolve()


def params_of(stage: dict) -> list[str]:
    """The params keys a stage lists; "*" for a params file listed whole."""
    keys = []
    for entry in stage.get("params", []):
        keys += [k for group in entry.values() for k in group or ["*"]] if isinstance(entry, dict) else [entry]
    return keys


ALL = [(pipeline, *s) for pipeline in PIPELINES for s in stages(pipeline)]
IDS = [f"{pipeline}:{name}" for pipeline, name, *_ in ALL]


@pytest.mark.parametrize(("pipeline", "name", "wdir", "stage"), ALL, ids=IDS)
def test_code_deps_are_what_the_stage_imports(pipeline, name, wdir, stage):
    script = script_of(wdir, stage)
    expected = code_of(script) | READ_AS_DATA.get(str(script.relative_to(REPO)), set())
    declared = declared_code(wdir, stage)
    assert not expected - declared, f"{pipeline}:{name} imports but does not declare {sorted(expected - declared)}"
    assert not declared - expected, f"{pipeline}:{name} declares but does not import {sorted(declared - expected)}"


@pytest.mark.parametrize(("pipeline", "name", "wdir", "stage"), ALL, ids=IDS)
def test_operational_params_do_not_rerun_a_stage(pipeline, name, wdir, stage):
    keys = params_of(stage)
    if name == "check":  # it validates the whole file, and what it writes depends only on the track
        assert keys == ["*"], f"{pipeline}:check lists {keys}, not the whole params file"
        outs = stage["outs"]
        assert outs == [{"reports/checked.json": {"persist": True}}], f"{pipeline}:check writes {outs}"
        return
    assert "*" not in keys, f"{pipeline}:{name} lists a whole params file"
    for key in keys:
        dragged = [op for op in OPERATIONAL if op == key or op.startswith(f"{key}.")]
        assert not dragged, f"{pipeline}:{name} lists params '{key}', which includes {dragged}"


def test_an_undeclared_import_is_caught(tmp_path):
    """The check itself: preprocess's script gaining an import its deps lack is found missing."""
    [(wdir, stage)] = [(w, s) for name, w, s in stages("dvc.yaml") if name == "preprocess"]
    broken = tmp_path / "preprocess.py"
    broken.write_text("from sslflow.image import pictures\n" + script_of(wdir, stage).read_text())
    assert "src/sslflow/image/pictures.py" in code_of(broken) - declared_code(wdir, stage)


def test_the_committed_deps_are_what_write_deps_generates():
    """scripts/write_deps.py writes the code deps from the imports; the committed dvc.yaml files are its output."""
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "scripts/write_deps.py", "--check"], cwd=REPO, capture_output=True,
                          text=True)
    assert proc.returncode == 0, proc.stderr
