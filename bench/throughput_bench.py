"""Throughput benchmark (not a test): the shared training loop against reference loops, all in one run.

    python bench/throughput_bench.py [--steps 20] [--repeats 3] [--workers 1] [--out bench/throughput]

- SimCLR and MLM pretraining through sslflow.train.fit with their real loaders: samples/s, and the step time
  split into waiting for data and computing.
- The SimCLR step in fit against a minimal plain-PyTorch loop on the same model, optimizer and batches.
- The MLM step in fit against HF `Trainer` on the same BertForMaskedLM, masking collator, optimizer and batch
  size (Trainer needs `accelerate`).
- Peak RSS of the pretrain stage (a subprocess) at 1x and 10x the pool's rows (synthetic 28x28 images).

Each comparison times steady-state steps (the first step of a run is left out) and alternates which loop goes
first; the numbers are medians over `--repeats`. Ratios are reference time / sslflow time (>= 1: sslflow is
as fast or faster). Writes <out>.json and a Markdown table <out>.md.
"""

import argparse
import copy
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import torch
import yaml

from sslflow import config
from sslflow.encoders import EncoderConfig, build_encoder
from sslflow.image.datasets import Images
from sslflow.image.methods.losses import ntxent
from sslflow.image.methods.simclr import SimCLR, simclr_step
from sslflow.image.views import TwoViews, augment
from sslflow.optim import build_optimizer, build_schedule
from sslflow.runtime import Runtime, resolve, seed_everything
from sslflow.sampling import resumable_loader
from sslflow.train import fit, to_device

REPO = Path(__file__).resolve().parents[1]
SIZE = (28, 28)  # MNIST-shaped synthetic images


class Ticks:
    """Wall-clock time after each step (the device synced first); per-step time leaves the first step out."""

    def __init__(self, device: torch.device):
        self.device, self.times = device, []

    def __call__(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        self.times.append(time.perf_counter())

    def per_step(self) -> float:
        return (self.times[-1] - self.times[0]) / (len(self.times) - 1)


def images(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, 1, *SIZE), dtype=np.uint8)


def run_fit(model, step, loader, cfg_optim, steps: int, runtime: Runtime, prefix: str) -> tuple[float, dict]:
    optimizer = build_optimizer([{"params": list(model.parameters())}], cfg_optim)
    scheduler = build_schedule(optimizer, cfg_optim, steps, steps)
    ticks = Ticks(runtime.device)
    summary = fit(
        model=model, step=step, loader=loader, optimizer=optimizer, scheduler=scheduler, epochs=1, runtime=runtime,
        log=lambda m, s: ticks() if f"{prefix}/loss" in m else None, max_steps=steps, prefix=prefix,
    )
    return ticks.per_step(), summary


def pipeline(summary: dict, prefix: str, steps: int) -> dict:
    return {
        "samples_per_s": summary[f"{prefix}/samples_per_s"],
        "data_wait_per_step_s": summary[f"{prefix}/data_wait_s"] / steps,
        "compute_per_step_s": summary[f"{prefix}/compute_s"] / steps,
    }


def compare(ours, reference, repeats: int) -> dict:
    """Median per-step seconds of two loop runners (called alternately, after one warm-up each)."""
    ours(), reference()
    times = {"sslflow": [], "reference": []}
    for r in range(repeats):
        order = [("sslflow", ours), ("reference", reference)]
        for name, runner in order if r % 2 == 0 else order[::-1]:
            times[name].append(runner())
    med = {k: statistics.median(v) for k, v in times.items()}
    return {
        "sslflow_step_s": med["sslflow"],
        "reference_step_s": med["reference"],
        "ratio": med["reference"] / med["sslflow"],
        "runs": times,
    }


def simclr(args, runtime: Runtime) -> dict:
    cfg = config.Pretrain()
    enc = EncoderConfig(cfg.encoder.arch, 1, cfg.encoder.width, cfg.encoder.feature_dim)
    seed_everything(0)
    init = runtime.prepare(SimCLR(build_encoder(enc), enc.feature_dim, cfg.proj_dim))
    views = TwoViews(augment(cfg.augment, SIZE))
    pool = images(cfg.batch_size * (args.steps + 1))

    loader = resumable_loader(Images(pool, views), batch_size=cfg.batch_size, seed=0, runtime=runtime)
    model = copy.deepcopy(init)
    _, summary = run_fit(model, simclr_step(model, cfg.temperature), loader, cfg.optim, args.steps, runtime, "pretrain")

    cpu = resolve(config.Base(device="cpu"))
    data = resumable_loader(Images(pool, views), batch_size=cfg.batch_size, seed=0, runtime=cpu)
    # The first args.steps batches: range comes first, so zip stops before drawing one more from the loader.
    batches = [to_device(b, runtime) for _, b in zip(range(args.steps), data, strict=False)]

    def ours() -> float:
        model = copy.deepcopy(init)
        step = simclr_step(model, cfg.temperature)
        return run_fit(model, step, batches, cfg.optim, args.steps, runtime, "pretrain")[0]

    def plain() -> float:
        model = copy.deepcopy(init)
        optimizer = build_optimizer([{"params": list(model.parameters())}], cfg.optim)
        scheduler = build_schedule(optimizer, cfg.optim, args.steps, args.steps)
        ticks = Ticks(runtime.device)
        model.train()
        for x0, x1 in batches:
            with runtime.autocast():
                z0, z1 = model(torch.cat([x0, x1])).chunk(2)
                loss = ntxent(z0.float(), z1.float(), cfg.temperature)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            ticks()
        return ticks.per_step()

    return {
        "batch": cfg.batch_size,
        "pipeline": pipeline(summary, "pretrain", args.steps),
        "vs_plain_pytorch": compare(ours, plain, args.repeats),
    }


def mlm(args, runtime: Runtime) -> dict:
    from transformers import Trainer, TrainerCallback, TrainingArguments

    from sslflow.text.config import TextPreprocess, TextPretrain
    from sslflow.text.mlm import MaskedChunks, build_mlm, masker, mlm_step
    from sslflow.text.models import bert_config
    from sslflow.text.tokenizer import SPECIAL, for_transformers, train_wordpiece

    cfg, length = TextPretrain(), TextPreprocess().max_length
    rng = np.random.default_rng(0)
    words = [f"w{i}" for i in range(3000)]
    corpus = [" ".join(rng.choice(words, 64)) for _ in range(500)]
    tokenizer = for_transformers(train_wordpiece(corpus, vocab_size=4000, min_frequency=1, lowercase=False))
    # Full-length rows ([CLS] ... [SEP], no padding), so both loops see batches of the same shape.
    ids = rng.integers(len(SPECIAL), len(tokenizer), (cfg.batch_size * (args.steps + 1), length)).astype(np.int32)
    ids[:, 0], ids[:, -1] = tokenizer.cls_token_id, tokenizer.sep_token_id
    seed_everything(0)
    init = runtime.prepare(build_mlm(bert_config(cfg.model, len(tokenizer), length)))
    collator = masker(tokenizer, cfg.mlm_probability)

    def loader():
        return resumable_loader(MaskedChunks(ids, collator), batch_size=cfg.batch_size, seed=0, runtime=runtime)

    model = copy.deepcopy(init)
    _, summary = run_fit(model, mlm_step(model), loader(), cfg.optim, args.steps, runtime, "pretrain")

    def ours() -> float:
        model = copy.deepcopy(init)
        return run_fit(model, mlm_step(model), loader(), cfg.optim, args.steps, runtime, "pretrain")[0]

    class Tick(TrainerCallback):
        def __init__(self, ticks: Ticks):
            self.ticks = ticks

        def on_step_end(self, *_, **__):
            self.ticks()

    rows = [{"input_ids": row.tolist()} for row in ids]

    def trainer() -> float:
        model = copy.deepcopy(init)
        optimizer = build_optimizer([{"params": list(model.parameters())}], cfg.optim)
        ticks = Ticks(runtime.device)
        targs = TrainingArguments(
            output_dir=tempfile.mkdtemp(prefix="sslflow-hf-"), per_device_train_batch_size=cfg.batch_size,
            max_steps=args.steps, logging_strategy="no", save_strategy="no", report_to="none", disable_tqdm=True,
            max_grad_norm=0.0,  # fit does not clip either
            dataloader_num_workers=runtime.num_workers, remove_unused_columns=False,
            use_cpu=runtime.device.type == "cpu", bf16=runtime.dtype == torch.bfloat16, seed=0,
        )
        scheduler = build_schedule(optimizer, cfg.optim, args.steps, args.steps)
        hf = Trainer(
            model=model, args=targs, train_dataset=rows, data_collator=collator, callbacks=[Tick(ticks)],
            optimizers=(optimizer, scheduler),
        )
        hf.train()
        shutil.rmtree(targs.output_dir, ignore_errors=True)
        return ticks.per_step()

    return {
        "batch": cfg.batch_size,
        "sequence_length": length,
        "pipeline": pipeline(summary, "pretrain", args.steps),
        "vs_hf_trainer": compare(ours, trainer, args.repeats),
    }


def _anon_kib(pid: int) -> int:
    """RssAnon (kB) of `pid` and its descendants: the memory they own, without the file pages they map."""
    children = {}
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            ppid = int((d / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except OSError:  # the process ended meanwhile
            continue
        children.setdefault(ppid, []).append(int(d.name))
    total, todo = 0, [pid]
    while todo:
        p = todo.pop()
        todo += children.get(p, [])
        try:
            total += int(Path(f"/proc/{p}/status").read_text().split("RssAnon:")[1].split()[0])
        except (OSError, IndexError):
            continue
    return total


def pretrain_stage_rss(rows: int, steps: int, workers: int) -> dict:
    """Peak memory of the image pretrain stage on `rows` images: peak RSS (largest process; it includes the
    pages of the memory-mapped pool that reads have mapped in) and peak anonymous RSS summed over the stage and
    its loader workers, sampled every 50 ms."""
    project = Path(tempfile.mkdtemp(prefix="sslflow-rss-"))
    try:
        shutil.copytree(REPO / "stages", project / "stages")
        params = yaml.safe_load((REPO / "params.yaml").read_text())
        params["base"].update(num_workers=workers, nproc_per_node=1)
        params["pretrain"].update(epochs=1, max_steps=steps)
        (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
        prepared = project / "data" / "prepared"
        prepared.mkdir(parents=True)
        pool = np.lib.format.open_memmap(
            prepared / "pool_images.npy", mode="w+", dtype=np.uint8, shape=(rows, 1, *SIZE)
        )
        for i in range(0, rows, 50_000):  # written in chunks: this process stays small too
            pool[i : i + 50_000] = images(min(50_000, rows - i), seed=i)
        pool.flush()
        del pool
        np.save(prepared / "val_images.npy", images(500, seed=1))
        np.save(prepared / "val_labels.npy", np.arange(500) % 10)
        (prepared / "split.json").write_text(json.dumps({"data_hash": f"synthetic-{rows}"}))
        env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{project / 'mlflow.db'}"}
        start = time.perf_counter()
        proc = subprocess.Popen(
            [sys.executable, "stages/image/pretrain.py"],
            cwd=project, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )
        anon, done = [0], threading.Event()

        def sample() -> None:
            while not done.wait(0.05):
                anon[0] = max(anon[0], _anon_kib(proc.pid))

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        out = proc.stdout.read()
        done.set()
        sampler.join()
        _, status, usage = os.wait4(proc.pid, 0)
        if os.waitstatus_to_exitcode(status) != 0:
            raise SystemExit(f"pretrain on {rows} rows failed:\n{out[-3000:]}")
        return {
            "rows": rows,
            "pool_file_mib": (prepared / "pool_images.npy").stat().st_size / 2**20,
            "peak_rss_mib": usage.ru_maxrss / 1024,
            "peak_anon_rss_mib": anon[0] / 1024,
            "wall_s": time.perf_counter() - start,
        }
    finally:
        shutil.rmtree(project, ignore_errors=True)


def table(result: dict) -> str:
    s, m, r = result["simclr"], result["mlm"], result["peak_rss"]
    lines = [
        f"Machine: {result['machine']['cpus']} CPUs, device {result['machine']['device']}; "
        f"torch {result['machine']['torch']}.",
        "Load average (1, 5, 15 min) before and after each part: "
        + "; ".join(
            f"{p} {result[p]['run']['load_before']} -> {result[p]['run']['load_after']} ({result[p]['run']['date']})"
            for p in PARTS
        ),
        "",
        "| pretrain | batch | samples/s | data wait / step (s) | compute / step (s) |",
        "|---|---|---|---|---|",
    ]
    for name, x in (("SimCLR", s), ("MLM", m)):
        p = x["pipeline"]
        lines.append(
            f"| {name} | {x['batch']} | {p['samples_per_s']:.1f} | {p['data_wait_per_step_s']:.4f} "
            f"| {p['compute_per_step_s']:.4f} |"
        )
    lines += ["", "| step | sslflow fit (s) | reference (s) | ratio (reference / sslflow) |", "|---|---|---|---|"]
    for name, c in (("SimCLR vs plain PyTorch loop", s["vs_plain_pytorch"]), ("MLM vs HF Trainer", m["vs_hf_trainer"])):
        lines.append(f"| {name} | {c['sslflow_step_s']:.4f} | {c['reference_step_s']:.4f} | {c['ratio']:.2f} |")
    lines += [
        "",
        "| pretrain stage | pool rows | pool file (MiB) | peak RSS (MiB) | peak anonymous RSS, all processes (MiB) |",
        "|---|---|---|---|---|",
    ]
    for scale in ("1x", "10x"):
        x = r[scale]
        lines.append(
            f"| {scale} | {x['rows']} | {x['pool_file_mib']:.0f} | {x['peak_rss_mib']:.0f} "
            f"| {x['peak_anon_rss_mib']:.0f} |"
        )
    lines.append(f"\n10x / 1x: peak RSS {r['ratio_10x_1x']:.2f}, peak anonymous RSS {r['anon_ratio_10x_1x']:.2f}")
    return "\n".join(lines) + "\n"


PARTS = {"simclr": simclr, "mlm": mlm, "peak_rss": None}  # peak_rss: pretrain_stage_rss at 1x and 10x


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=20, help="steps per timed run")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--workers", type=int, default=1, help="DataLoader workers (params base.num_workers)")
    ap.add_argument("--rows", type=int, default=60_000, help="pool rows at 1x for the memory runs")
    ap.add_argument("--out", default=str(REPO / "bench" / "throughput"))
    ap.add_argument(
        "--parts", nargs="+", choices=PARTS, default=list(PARTS),
        help="rerun only these; the others are kept from the existing <out>.json",
    )
    args = ap.parse_args()

    out = Path(args.out)
    runtime = resolve(config.Base(num_workers=args.workers))
    result = json.loads(out.with_suffix(".json").read_text()) if set(args.parts) != set(PARTS) else {}
    for part in args.parts:
        load_before = os.getloadavg()
        if part == "peak_rss":
            rss = {
                scale: pretrain_stage_rss(args.rows * k, args.steps, args.workers)
                for scale, k in (("1x", 1), ("10x", 10))
            }
            rss["ratio_10x_1x"] = rss["10x"]["peak_rss_mib"] / rss["1x"]["peak_rss_mib"]
            rss["anon_ratio_10x_1x"] = rss["10x"]["peak_anon_rss_mib"] / rss["1x"]["peak_anon_rss_mib"]
            result[part] = rss
        else:
            result[part] = PARTS[part](args, runtime)
        result[part]["run"] = {
            "date": time.strftime("%Y-%m-%d %H:%M"), "load_before": [round(x, 2) for x in load_before],
            "load_after": [round(x, 2) for x in os.getloadavg()],
        }
    result["machine"] = {
        "cpus": os.cpu_count(), "device": str(runtime.device), "torch": torch.__version__,
        "python": platform.python_version(), "steps": args.steps, "repeats": args.repeats, "num_workers": args.workers,
    }

    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(result, indent=2) + "\n")
    out.with_suffix(".md").write_text(table(result))
    print(table(result))


if __name__ == "__main__":
    main()
