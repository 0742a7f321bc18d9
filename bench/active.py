"""Benchmark of the labeling loop (not a test): rounds of select -> label -> fine-tune, with the training split's
hidden labels as the oracle that answers. Images (MNIST-5k, the default image pipeline) or documents (BBC, the
default text pipeline).

    python bench/active.py [--track image|text] [--budgets 10 20 50 100] [--measure 20 50] [--method supervised]
                           [--seeds 0 1 2] [--strategies ...] [--out bench/active]
    python bench/active.py --merge bench/active.json bench/active_10_100.json --out bench/active_mnist

Reads the track's pipeline outputs (the prepared and labeled data and the encoder: run `dvc repro` first) and
params.yaml's finetune and select sections (text: text.finetune, text.select). Per strategy and seed, the labeled
set grows through the budgets; at each the pretrained encoder is fine-tuned with the finetune method on exactly
those labels (the pipeline's ssl model), and scored on val (to choose defaults) and test. Selection needs no
fine-tuned model (margin and badge use a probe on the embedding, as the select stage does), so `--measure` can
fine-tune at some budgets only; `--method` replaces the finetune method. `oracle` is the pipeline's per-class draw
(budget / classes per class), which needs every label: a reference, not a strategy. margin and badge start from
typical until two classes are labeled, as the select stage does.
Writes <out>.json, <out>.md and <out>.png (default out: bench/active, bench/active_text).
"""

import argparse
import functools
import hashlib
import json
import time
from pathlib import Path

import numpy as np
import torch
from sklearn.metrics import f1_score

from sslflow import config
from sslflow.runtime import resolve, seed_everything
from sslflow.selection import probe_probs, propose
from sslflow.splits import draw_budget

REPO = Path(__file__).resolve().parents[1]
STRATEGIES = ("random", "typical", "margin", "badge", "oracle")
NEEDS_LABELS = ("margin", "badge")
METHODS = ("supervised", "self-training", "fixmatch", "distill")


class Images:
    """MNIST-5k through the image pipeline's outputs: the ssl model is finetune.method from models/encoder."""

    name, unit = "MNIST-5k", "images"

    def __init__(self, method: str | None):
        from sslflow.artifacts import load_encoder
        from sslflow.image.embed import apply

        params = REPO / "params.yaml"
        self.cfg = config.load(params, "finetune", config.Finetune)
        if method:
            self.cfg = self.cfg.model_copy(update={"method": method})
        self.select = config.load(params, "select", config.Select)
        self.runtime = resolve(config.load(params, "base", config.Base))
        labeled = REPO / "data" / "labeled"
        self.data = {split: (np.load(labeled / f"{split}_images.npy"), np.load(labeled / f"{split}_labels.npy"))
                     for split in ("train", "val", "test")}
        self.pool = np.load(REPO / "data" / "prepared" / "pool_images.npy")
        self.train_y = self.data["train"][1]
        self.num_classes = len(json.loads((labeled / "classes.json").read_text()))
        self.load = functools.partial(load_encoder, REPO / "models" / "encoder")
        self.embeddings = apply(self.load()[0], self.data["train"][0], self.runtime)  # (n_train, D)

    def fine_tune(self, labeled: np.ndarray, seed: int) -> dict[str, float]:
        """The pipeline's ssl model on these train items (stage logic); macro-F1 on val and test."""
        from sslflow.heads import Classifier
        from sslflow.image.finetune import clone_init, fit_method, predict_proba, train_classifier

        cfg, runtime = self.cfg, self.runtime
        seed_everything(seed)
        encoder, enc_cfg = self.load()
        init = Classifier(encoder, enc_cfg.feature_dim, self.num_classes, freeze_encoder=cfg.mode == "linear")
        generator = torch.Generator().manual_seed(seed)
        quiet = lambda metrics, step: None  # noqa: E731
        train = functools.partial(
            train_classifier, augment_cfg=cfg.augment, optim=cfg.optim, encoder_lr_scale=cfg.encoder_lr_scale,
            epochs=cfg.epochs, head_epochs=cfg.head_epochs, batch_size=cfg.batch_size, runtime=runtime, log=quiet,
            generator=generator,
        )
        x, y = self.data["train"]
        _, model, _ = fit_method(
            cfg.method, clone_init(runtime.prepare(init)), (x[labeled], y[labeled]), self.pool, cfg=cfg, train=train,
            teacher=None, batch_size=cfg.batch_size, runtime=runtime, log=quiet, generator=generator, prefix="ssl",
        )
        return {split: float(f1_score(y, predict_proba(model, x, runtime).argmax(1), average="macro"))
                for split, (x, y) in self.data.items() if split != "train"}


class Documents:
    """BBC through the text pipeline's outputs: the ssl model is text.finetune.method from text/models/encoder."""

    name, unit = "BBC", "documents"

    def __init__(self, method: str | None):
        from sslflow.text.config import Text
        from sslflow.text.corpus import read_json, read_jsonl
        from sslflow.text.embed import embed, first_chunks
        from sslflow.text.models import load_encoder
        from sslflow.text.tasks import TASKS
        from sslflow.text.tokenizer import load_tokenizer
        from sslflow.text.trainset import fixmatch_pool

        params, root = REPO / "params.yaml", REPO / "text"
        text = config.load(params, "text", Text)
        if text.task != "text-classification":
            raise SystemExit("error: params key 'text.task': the benchmark proposes documents (text-classification)")
        self.cfg = text.finetune if not method else text.finetune.model_copy(update={"method": method})
        self.select, self.task = text.select, TASKS[text.task]
        self.runtime = resolve(config.load(params, "base", config.Base))
        prepared, labeled = root / "data" / "prepared", root / "data" / "labeled"
        self.tokenizer = load_tokenizer(prepared / "tokenizer.json")
        self.encoding = read_json(prepared / "encoding.json")
        self.classes = read_json(labeled / "classes.json")
        self.data = {split: read_jsonl(labeled / f"{split}.jsonl") for split in ("train", "val", "test")}
        self.train_y = self.task.budget_labels(self.data["train"])
        self.num_classes = len(self.classes)
        sha = hashlib.sha256((prepared / "tokenizer.json").read_bytes()).hexdigest()
        self.load = functools.partial(load_encoder, root / "models" / "encoder", sha)
        self.pool = fixmatch_pool(self.cfg, self.tokenizer, self.encoding, prepared, labeled)
        chunks = first_chunks(self.tokenizer, [e["text"] for e in self.data["train"]], self.encoding["max_length"],
                              self.encoding["stride"])
        self.embeddings = embed(self.runtime.prepare(self.load()[0]), chunks, self.runtime)  # (n_train, H)

    def fine_tune(self, labeled: np.ndarray, seed: int) -> dict[str, float]:
        from sslflow.text.finetune import fit_method
        from sslflow.text.views import specials

        task, runtime = self.task, self.runtime
        seed_everything(seed)
        init = task.head(self.load()[0], self.num_classes)
        examples = [self.data["train"][i] for i in labeled]
        arrays = task.training_arrays(self.tokenizer, examples, self.classes, self.encoding)
        _, model, _ = fit_method(
            runtime.prepare(init), arrays, self.pool, cfg=self.cfg, specials=specials(self.tokenizer), loss=task.loss,
            batch_size=self.cfg.batch_size, runtime=runtime, log=lambda metrics, step: None,
            generator=torch.Generator().manual_seed(seed), prefix="ssl",
        )
        scores = {}
        for split in ("val", "test"):
            proba = task.predict(model, self.tokenizer, self.data[split], self.encoding, runtime)
            y = task.budget_labels(self.data[split])
            scores[split] = float(f1_score(y, proba.argmax(1), average="macro", labels=range(self.num_classes)))
        return scores


TRACKS = {"image": Images, "text": Documents}


def grow(strategy, labeled, budget, embeddings, train_y, num_classes, sel, seed):
    """`labeled` (train indices) grown to `budget` items by `strategy`; the oracle answers with train_y."""
    if strategy == "oracle":
        return draw_budget(train_y, labels_per_class=budget // num_classes, label_fraction=None, seed=seed)
    candidates = ~np.isin(np.arange(len(train_y)), labeled)
    known = train_y[labeled]
    probs = None
    if strategy in NEEDS_LABELS and len(np.unique(known)) >= 2:
        probs = probe_probs(embeddings, labeled, known, c=sel.probe_c, seed=seed, num_classes=num_classes)
    used = strategy if strategy not in NEEDS_LABELS or probs is not None else "typical"
    new = propose(used, embeddings=embeddings, candidates=candidates, labeled=labeled, probs=probs,
                  budget=budget - len(labeled), seed=seed).indices
    return np.concatenate([labeled, new]).astype(np.int64)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--track", choices=list(TRACKS), default="image")
    ap.add_argument("--budgets", type=int, nargs="+", help="rounds (default: 10 20 50 100 images, 5 10 25 50 texts)")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--measure", type=int, nargs="+", help="budgets to fine-tune at (default: every budget)")
    ap.add_argument("--method", choices=METHODS)
    ap.add_argument("--strategies", nargs="+", default=list(STRATEGIES), choices=STRATEGIES)
    ap.add_argument("--out", help="default: bench/active (image), bench/active_text (text)")
    ap.add_argument("--merge", nargs="+", metavar="JSON", help="run nothing: one table and plot from earlier runs")
    args = ap.parse_args()
    if args.merge:
        return merge([Path(f) for f in args.merge], args)
    args.budgets = args.budgets or ([10, 20, 50, 100] if args.track == "image" else [5, 10, 25, 50])
    args.out = args.out or ("bench/active" if args.track == "image" else "bench/active_text")
    measure = set(args.measure or args.budgets)
    track = TRACKS[args.track](args.method)

    rows = []
    for strategy in args.strategies:
        for seed in args.seeds:
            labeled = np.zeros(0, dtype=np.int64)
            for budget in args.budgets:
                start = time.perf_counter()
                labeled = grow(strategy, labeled, budget, track.embeddings, track.train_y, track.num_classes,
                               track.select, seed)
                if budget not in measure:
                    continue
                scores = track.fine_tune(labeled, seed)
                rows.append({"strategy": strategy, "seed": seed, "budget": int(len(labeled)),
                             "classes_covered": int(len(np.unique(track.train_y[labeled]))), **scores,
                             "seconds": round(time.perf_counter() - start, 1)})
                print(json.dumps(rows[-1]), flush=True)
        write(Path(args.out), rows, args, track)  # after each strategy: a cut-short run keeps what it measured


def merge(files: list[Path], args) -> None:
    """<out>.json, .md and .png of the runs in `files` together (runs of one track and method, other budgets)."""
    found = [json.loads(f.read_text()) for f in files]
    for m in found:  # files written before the text track existed are MNIST-5k's
        m["meta"] = {"track": "image", "data": "MNIST-5k", **m["meta"]}
    meta = found[0]["meta"]
    if any((m["meta"]["track"], m["meta"]["method"]) != (meta["track"], meta["method"]) for m in found):
        raise SystemExit("error: --merge: the files differ in track or method")
    rows = [r for m in found for r in m["runs"]]
    args.track, args.seeds = meta["track"], meta["seeds"]
    args.budgets = sorted({b for m in found for b in m["meta"]["rounds"]})
    args.measure = sorted({r["budget"] for r in rows})
    unit = "images" if meta["track"] == "image" else "documents"
    track = argparse.Namespace(name=meta["data"], unit=unit, cfg=argparse.Namespace(method=meta["method"]))
    write(Path(args.out), rows, args, track)


def write(out: Path, rows: list[dict], args, track) -> None:
    cfg = track.cfg
    summary = {}
    done = [s for s in args.strategies if any(r["strategy"] == s for r in rows)]
    for strategy in done:
        for budget in sorted(set(args.measure or args.budgets)):
            cell = [r for r in rows if r["strategy"] == strategy and r["budget"] == budget]
            if cell:
                summary[f"{strategy}/{budget}"] = {
                    k: [float(np.mean([r[k] for r in cell])), float(np.std([r[k] for r in cell]))]
                    for k in ("val", "test", "classes_covered")
                }
    out.parent.mkdir(parents=True, exist_ok=True)
    meta = {"track": args.track, "data": track.name, "method": cfg.method, "seeds": args.seeds, "rounds": args.budgets,
            "measured": args.measure or args.budgets,
            "threads": torch.get_num_threads()}
    out.with_suffix(".json").write_text(json.dumps({"meta": meta, "summary": summary, "runs": rows}, indent=2) + "\n")
    budgets = sorted(set(args.measure or args.budgets))
    how = f"python bench/active.py --merge {' '.join(args.merge)}" if args.merge else \
        f"python bench/active.py --track {args.track}"
    lines = [
        f"{track.name}, {track.unit} chosen per round ({args.budgets}) then fine-tuned with method={cfg.method}; "
        f"macro-F1 mean ± std over seeds {args.seeds} (`{how}`). oracle = k per "
        "class, which needs every label.", "",
        "| strategy | " + " | ".join(f"{b} {track.unit}: val" + " | test" for b in budgets) + " |",
        "|---|" + "---|---|" * len(budgets),
    ]
    for strategy in done:
        cells = []
        for b in budgets:
            s = summary.get(f"{strategy}/{b}")
            cells += [f"{s['val'][0]:.3f} ± {s['val'][1]:.3f}", f"{s['test'][0]:.3f} ± {s['test'][1]:.3f}"] if s \
                else ["", ""]
        lines.append(f"| {strategy} | " + " | ".join(cells) + " |")
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    title = f"{track.name}: {track.unit} chosen by each strategy, then {cfg.method}"
    plot(out.with_suffix(".png"), summary, done, budgets, title)


def plot(path: Path, summary: dict, strategies: list[str], budgets: list[int], title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for strategy in strategies:
        pts = [(b, *summary[f"{strategy}/{b}"]["test"]) for b in budgets if f"{strategy}/{b}" in summary]
        b, m, s = map(np.array, zip(*pts, strict=True))
        style = "--" if strategy == "oracle" else "-"
        ax.errorbar(b, m, yerr=s, marker="o", capsize=3, label=strategy, linestyle=style)
    ax.set_xscale("log")
    ax.set_xticks(budgets, [str(b) for b in budgets])
    ax.minorticks_off()
    ax.set_xlabel("labels (log scale)")
    ax.set_ylabel("test macro-F1")
    ax.set_title(title)
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    main()
