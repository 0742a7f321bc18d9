"""The GPU check: what a short session on a bare CUDA machine must measure, in one command (scripts/gpu_check.sh).

    python bench/gpu_check.py [--out DIR] [--device cuda] [--profile default|tiny] [--mlm-steps 300]

1. The CUDA-only tests (`pytest -m gpu`): counts of passed, failed and skipped.
2. The default image pipeline on the embedded data (fetch, preprocess, then the timed pretrain, finetune and
   evaluate) on the device at `base.precision: auto` (bf16 on CUDA): wall time per stage, pretraining's
   images/s, data wait vs compute, peak device memory, and every model's test macro-F1 beside the CPU run's
   (the committed reports/metrics/, same seeds and params; bf16 is not bit-identical, so the difference
   is what to read).
3. One MLM pretraining segment (BBC News, `text.pretrain.max_steps` = --mlm-steps) with the same measures.
4. torch.compile off and on: two epochs of image pretraining each, wall time and the second epoch's images/s.

Everything goes to DIR/gpu_check.json (DIR: --out, else $OUT, else bench/gpu_check), and a short table is
printed and written beside it. `--profile tiny --device cpu` is the dry run the test suite makes, so the check
cannot rot between GPU sessions.
"""

import argparse
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import yaml

from sslflow.metrics import read as read_metrics

REPO = Path(__file__).resolve().parents[1]

TINY = {  # the test suite's profile (tests/conftest.py), and a few-step MLM
    "base": {"num_workers": 0},
    "fetch": {"source": "sklearn-digits"},
    "pretrain": {"epochs": 1, "batch_size": 64, "encoder": {"width": 8}, "optim": {"warmup_epochs": 0}},
    "finetune": {"epochs": 2, "labels_per_class": 3, "fixmatch": {"steps": 3}, "distill": {"steps": 3}},
    "text": {
        "preprocess": {"vocab_size": 300, "max_length": 32, "stride": 4},
        "pretrain": {"batch_size": 8, "model": {"hidden_size": 32, "layers": 1, "intermediate_size": 64}},
    },
}


def merge(tree: dict, overrides: dict) -> dict:
    out = dict(tree)
    for key, value in overrides.items():
        out[key] = merge(out.get(key, {}), value) if isinstance(value, dict) else value
    return out


class Project:
    """A scratch project: params.yaml, data, models and reports; the repo's stage scripts run in it."""

    def __init__(self, path: Path, params: dict):
        self.path, self.params = path, params
        path.mkdir(parents=True, exist_ok=True)
        self.env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{path / 'mlflow.db'}"}

    def stage(self, modality: str, name: str, overrides: dict | None = None) -> float:
        (self.path / "params.yaml").write_text(yaml.safe_dump(merge(self.params, overrides or {}), sort_keys=False))
        start = time.perf_counter()
        result = subprocess.run(
            [sys.executable, str(REPO / "stages" / modality / f"{name}.py")],
            cwd=self.path, env=self.env, capture_output=True, text=True, check=False,
        )
        seconds = time.perf_counter() - start
        if result.returncode != 0:
            raise SystemExit(f"error: {modality} {name} failed in {self.path}:\n{result.stderr[-3000:]}")
        print(f"  {modality} {name}: {seconds:.1f} s", flush=True)
        return round(seconds, 2)

    def json(self, relative: str) -> dict:
        return json.loads((self.path / relative).read_text())


def loop_figures(summary: dict, prefix: str = "pretrain") -> dict:
    """The last epoch's data path from a stage's summary (reports/<stage>.json)."""
    wait, compute = summary[f"{prefix}/data_wait_s"], summary[f"{prefix}/compute_s"]
    return {
        "samples_per_s": round(summary[f"{prefix}/samples_per_s"], 1),
        "data_wait_s": round(wait, 3),
        "compute_s": round(compute, 3),
        "data_wait_share": round(wait / max(wait + compute, 1e-9), 4),
        "peak_memory_mib": round(summary.get(f"{prefix}/peak_memory_mib", float("nan")), 1),
    }


def cuda_tests() -> dict:
    start = time.perf_counter()
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-m", "gpu", "-p", "no:cacheprovider", "tests/test_gpu.py"],
        cwd=REPO, capture_output=True, text=True, check=False,
    )
    counts = {k: int(n) for n, k in re.findall(r"(\d+) (passed|failed|skipped|error)", result.stdout)}
    print(result.stdout.strip().splitlines()[-1] if result.stdout.strip() else result.stderr[-500:], flush=True)
    return {
        "rc": result.returncode,
        **counts,
        "seconds": round(time.perf_counter() - start, 1),
        "output_tail": result.stdout[-1500:],
    }


def image_pipeline(project: Project, reference: dict | None) -> dict:
    stages = ("fetch", "preprocess", "label", "pretrain", "finetune", "evaluate")
    times = {name: project.stage("image", name) for name in stages}
    metrics = read_metrics(project.path / "reports")
    f1 = {model: round(m["macro_f1"], 4) for model, m in metrics.items() if model != "lift"}
    out = {
        "stages_s": times,
        "pretrain_finetune_evaluate_s": round(times["pretrain"] + times["finetune"] + times["evaluate"], 1),
        "pretrain": loop_figures(project.json("reports/pretrain.json")),
        "test_macro_f1": f1,
    }
    if reference:
        cpu = {model: round(m["macro_f1"], 4) for model, m in reference.items() if model != "lift"}
        out["cpu_test_macro_f1"] = cpu
        out["difference"] = {model: round(f1[model] - cpu[model], 4) for model in f1 if model in cpu}
    return out


def mlm_segment(project: Project, steps: int) -> dict:
    overrides = {"text": {"pretrain": {"max_steps": steps}}}
    for name in ("fetch", "preprocess"):
        project.stage("text", name, overrides)
    seconds = project.stage("text", "pretrain", overrides)
    return {"max_steps": steps, "pretrain_s": seconds, **loop_figures(project.json("reports/pretrain.json"))}


def compile_on_off(project: Project) -> dict:
    """Two epochs of image pretraining with base.compile off, then on; the data is the image run's."""
    out = {}
    for on in (False, True):
        shutil.rmtree(project.path / "checkpoints", ignore_errors=True)  # a fresh run each time, never a resume
        seconds = project.stage("image", "pretrain", {"base": {"compile": on}, "pretrain": {"epochs": 2}})
        out["on" if on else "off"] = {"pretrain_s": seconds, **loop_figures(project.json("reports/pretrain.json"))}
    out["speedup_second_epoch"] = round(out["on"]["samples_per_s"] / max(out["off"]["samples_per_s"], 1e-9), 3)
    return out


def machine(device: str) -> dict:
    info = {"python": platform.python_version(), "torch": torch.__version__, "cpus": os.cpu_count(), "device": device}
    if device == "cuda" and torch.cuda.is_available():
        info.update(gpu=torch.cuda.get_device_name(0), cuda=torch.version.cuda, bf16=torch.cuda.is_bf16_supported())
    return info


def table(result: dict) -> str:
    img, mlm, comp = result["image"], result["mlm"], result["compile"]
    rows = [
        f"GPU check on {result['machine'].get('gpu', result['machine']['device'])} ({result['profile']} profile), "
        f"total {result['total_s']:.0f} s",
        f"CUDA tests: {result['tests'].get('passed', 0)} passed, {result['tests'].get('failed', 0)} failed, "
        f"{result['tests'].get('skipped', 0)} skipped",
        "",
        "| run | wall (s) | samples/s | data-wait share | peak memory (MiB) |",
        "|---|---|---|---|---|",
        f"| image pretrain + finetune + evaluate | {img['pretrain_finetune_evaluate_s']} "
        f"| {img['pretrain']['samples_per_s']} | {img['pretrain']['data_wait_share']:.1%} "
        f"| {img['pretrain']['peak_memory_mib']} |",
        f"| MLM pretrain, {mlm['max_steps']} steps | {mlm['pretrain_s']} | {mlm['samples_per_s']} "
        f"| {mlm['data_wait_share']:.1%} | {mlm['peak_memory_mib']} |",
        *(
            f"| image pretrain 2 epochs, compile {k} | {comp[k]['pretrain_s']} | {comp[k]['samples_per_s']} "
            f"| {comp[k]['data_wait_share']:.1%} | {comp[k]['peak_memory_mib']} |"
            for k in ("off", "on")
        ),
        "",
        "| model | test macro-F1 | CPU run | difference |",
        "|---|---|---|---|",
        *(
            f"| {m} | {f1} | {img.get('cpu_test_macro_f1', {}).get(m, '-')} | {img.get('difference', {}).get(m, '-')} |"
            for m, f1 in img["test_macro_f1"].items()
        ),
    ]
    return "\n".join(rows)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    default_out = Path(os.environ["OUT"]) if os.environ.get("OUT") else REPO / "bench" / "gpu_check"
    ap.add_argument("--out", type=Path, default=default_out)
    ap.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    ap.add_argument("--profile", default="default", choices=["default", "tiny"])
    ap.add_argument("--mlm-steps", type=int, help="default: 300, or 4 with --profile tiny")
    ap.add_argument("--work", type=Path, help="keep the scratch project here (default: a temporary directory)")
    args = ap.parse_args()
    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("error: --device cuda, but torch sees no CUDA device (torch.cuda.is_available() is False)")
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params = merge(params, {"base": {"device": args.device, "precision": "auto"}})
    if args.profile == "tiny":
        params = merge(params, TINY)
    reference = read_metrics(REPO / "reports") if args.profile == "default" else None
    start = time.perf_counter()
    result = {"profile": args.profile, "machine": machine(args.device), "date": time.strftime("%Y-%m-%d %H:%M")}
    with tempfile.TemporaryDirectory() as tmp:
        work = args.work or Path(tmp)
        print("CUDA-only tests", flush=True)
        result["tests"] = cuda_tests()
        print("image pipeline", flush=True)
        result["image"] = image_pipeline(Project(work / "image", params), reference)
        print("MLM segment", flush=True)
        steps = args.mlm_steps or (4 if args.profile == "tiny" else 300)
        result["mlm"] = mlm_segment(Project(work / "text", params), steps)
        print("torch.compile off / on", flush=True)
        result["compile"] = compile_on_off(Project(work / "image", params))
    result["total_s"] = round(time.perf_counter() - start, 1)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "gpu_check.json").write_text(json.dumps(result, indent=2) + "\n")
    (args.out / "gpu_check.md").write_text(table(result) + "\n")
    print(table(result))
    print(f"-> {args.out / 'gpu_check.json'}")


if __name__ == "__main__":
    main()
