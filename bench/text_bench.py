"""Text track benchmark: the real stages, run in a scratch project with the repo's params.yaml.

BBC News: pretrain once, then finetune + evaluate at 1, 5 and 10 labels per class over several label draws;
macro-F1 of every model evaluate scores: ssl, scratch and TF-IDF + logistic regression ("classical"), and with
`--method fixmatch` also ssl-supervised and scratch-supervised (their starting points), on test and on val (the
finetune stage's val scores, for choosing settings). wikigold (if present, unless --no-ner): pretrain once,
then entity F1 at two budgets of labeled sentences. Wall time of every stage run. Writes <out>.json and <out>.md.

    python bench/text_bench.py [--seeds 3] [--budgets 1 5 10] [--ner-budgets 50 200] [--method fixmatch]
        [--no-ner] [--work DIR] [--out bench/text]
"""

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

from sslflow.metrics import read as read_metrics

REPO = Path(__file__).resolve().parents[1]
WIKIGOLD = REPO.parent / "shared" / "data" / "wikigold" / "wikigold.conll.txt"


def stage(name: str, project: Path, params: dict, times: dict) -> None:
    (project / "params.yaml").write_text(yaml.safe_dump(params))
    start = time.perf_counter()
    result = subprocess.run(
        [sys.executable, str(REPO / "stages" / "text" / f"{name}.py")],
        cwd=project, capture_output=True, text=True, check=False,
    )
    times.setdefault(name, []).append(round(time.perf_counter() - start, 1))
    if result.returncode != 0:
        raise SystemExit(f"{name} failed in {project}:\n{result.stderr[-3000:]}")
    print(result.stdout.strip().splitlines()[-1], flush=True)


def sweep(project: Path, params: dict, budgets: list[int], seeds: int, score: str, times: dict) -> dict:
    """{budget: {model: [score per label draw]}} from finetune + evaluate at each budget and label_seed."""
    results = {}
    for budget in budgets:
        for seed in range(seeds):
            params["text"]["finetune"].update(labels_per_class=budget, label_seed=seed)
            stage("finetune", project, params, times)
            stage("evaluate", project, params, times)
            metrics = read_metrics(project / "reports")
            val = json.loads((project / "reports" / "finetune.json").read_text())
            for model in (m for m in metrics if m != "lift"):
                results.setdefault(budget, {}).setdefault(model, []).append(metrics[model][score])
                if f"{model}/val_{score}" in val:
                    results[budget].setdefault(f"{model} (val)", []).append(val[f"{model}/val_{score}"])
    return results


def track(project: Path, params: dict, budgets: list[int], seeds: int, score: str) -> dict:
    project.mkdir(parents=True)
    times: dict[str, list[float]] = {}
    for name in ("fetch", "preprocess", "label", "pretrain"):
        stage(name, project, params, times)
    pretrain = json.loads((project / "reports" / "pretrain.json").read_text())
    scores = sweep(project, params, budgets, seeds, score, times)
    return {"params": params["text"], "pretrain": pretrain, "scores": scores, "wall_s": times}


def table(name: str, result: dict, score: str) -> list[str]:
    lines = [
        f"## {name}: {score}, mean ± sd over label draws",
        "",
    ]
    columns = list(next(iter(result["scores"].values())))
    lines += ["| budget | " + " | ".join(columns) + " |", "|---" * (len(columns) + 1) + "|"]
    for budget, models in result["scores"].items():
        cells = [f"{statistics.mean(models[c]):.3f} ± {statistics.pstdev(models[c]):.3f}" for c in columns]  # by name
        lines.append(f"| {budget} | " + " | ".join(cells) + " |")
    walls = ", ".join(f"{k} {statistics.mean(v):.0f}" for k, v in result["wall_s"].items())
    lines += [
        "",
        f"Wall time per stage run (s): {walls}",
        f"Val perplexity after pretraining: {result['pretrain']['monitor/val_perplexity']:.1f}",
        "",
    ]
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--budgets", type=int, nargs="+", default=[1, 5, 10])
    parser.add_argument("--ner-budgets", type=int, nargs="+", default=[50, 200])
    parser.add_argument(
        "--method", choices=["supervised", "fixmatch"], help="text.finetune.method (default: params.yaml's)"
    )
    parser.add_argument("--no-ner", action="store_true", help="BBC only")
    parser.add_argument("--work", type=Path, default=None, help="scratch directory (default: a new temp dir)")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "text")
    args = parser.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="text-bench-"))
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["base"].update(experiment="text-bench")
    if args.method:
        params["text"]["finetune"]["method"] = args.method

    results = {
        "bbc-news": track(work / "bbc", json.loads(json.dumps(params)), args.budgets, args.seeds, "macro_f1")
    }
    lines = [
        "# Text benchmark",
        "",
        f"Budgets: BBC labels per class; wikigold labeled sentences. {args.seeds} label draws.",
        "",
    ]
    lines += table("BBC News (5 topics)", results["bbc-news"], "macro_f1")
    if WIKIGOLD.is_file() and not args.no_ner:
        ner = json.loads(json.dumps(params))
        ner["text"].update(task="token-classification")
        ner["text"]["fetch"].update(source="conll", path=str(WIKIGOLD))
        results["wikigold"] = track(work / "wikigold", ner, args.ner_budgets, args.seeds, "entity_f1")
        lines += table("wikigold NER", results["wikigold"], "entity_f1 (seqeval strict IOB2, micro)")
    args.out.with_suffix(".json").write_text(json.dumps(results, indent=2) + "\n")
    args.out.with_suffix(".md").write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
