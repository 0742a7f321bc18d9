"""NER benchmark (issue #13): wikigold entity F1 through the real text stages, with the ablations that say what
mattered: the unlabeled corpus, the vocabulary's casing, the decoding and the fine-tuning length.

A variant is one pretraining (`--corpus`, `--lowercase`) in its own scratch project under `--work`, pretrained
once, then fine-tuned and evaluated for each `--fit BUDGET:LENGTH:DECODING` over `--seeds` label draws; every fitted
model's val and test entity F1 is appended to <work>/results.jsonl. `report` turns that file into <out>.json and
<out>.md (mean ± sd over label draws). Settings are chosen on the val column, never on test.

    python bench/ner_bench.py run --name bbc-cased --corpus bbc-news --lowercase false \
        --fit 200:200:viterbi --fit 50:40e:viterbi [--seeds 3] [--work DIR]
    python bench/ner_bench.py report [--work DIR] [--out bench/ner]

BUDGET is a number of labeled sentences or `all`; LENGTH the optimizer steps of each neural fit (`200`:
text.finetune.steps) or epochs over the labeled sentences (`40e`: text.finetune.epochs). An optional fourth field
says what the ssl model is: `tune` (the encoder fine-tuned as a token classifier; rows without the field) or
`wcK` (the per-word tagger with K word classes from the encoder: text.finetune.word_classes).
"""

import argparse
import json
import statistics
from pathlib import Path

import yaml
from text_bench import REPO, WIKIGOLD, stage

from sslflow.metrics import read as read_metrics

WORK = REPO / "bench" / "ner-work"
MODELS = ("ssl", "scratch", "classical")


def params_for(corpus: str, lowercase: bool) -> dict:
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["base"].update(experiment="ner-bench")
    text = params["text"]
    text.update(task="token-classification")
    text["fetch"].update(source="conll", path=str(WIKIGOLD), unlabeled=[] if corpus == "none" else [{"source": corpus}])
    text["preprocess"].update(lowercase=lowercase)
    return params


def run(args) -> None:
    project = args.work / args.name
    params = params_for(args.corpus, args.lowercase == "true")
    times: dict[str, list[float]] = {}
    if not (project / "reports" / "pretrain.json").is_file():
        project.mkdir(parents=True, exist_ok=True)
        for name in ("fetch", "preprocess", "label", "pretrain"):
            stage(name, project, params, times)
    pretrain = json.loads((project / "reports" / "pretrain.json").read_text())
    for fit in args.fit:
        budget, length, decoding, ssl = (fit.split(":") + ["tune"])[:4]
        for seed in range(args.seeds):
            finetune = params["text"]["finetune"]
            finetune.update(decoding=decoding, label_seed=seed, word_classes=None if ssl == "tune" else int(ssl[2:]))
            finetune.update(epochs=int(length[:-1])) if length.endswith("e") else finetune.update(
                steps=int(length), epochs=None)
            finetune.update(labels_per_class=None, label_fraction=1.0) if budget == "all" else finetune.update(
                labels_per_class=int(budget), label_fraction=None)
            stage("finetune", project, params, times)
            stage("evaluate", project, params, times)
            test = read_metrics(project / "reports")
            val = json.loads((project / "reports" / "finetune.json").read_text())
            row = {"variant": args.name, "corpus": args.corpus, "lowercase": args.lowercase, "budget": budget,
                   "length": length, "decoding": decoding, "ssl": ssl, "seed": seed,
                   "val_perplexity": pretrain["monitor/val_perplexity"], "wall_s": {k: v[-1] for k, v in times.items()}}
            row |= {f"{m}/test": test[m]["entity_f1"] for m in MODELS}
            row |= {f"{m}/val": val[f"{m}/val_entity_f1"] for m in MODELS}
            with (args.work / "results.jsonl").open("a") as out:
                out.write(json.dumps(row) + "\n")
            print(json.dumps(row), flush=True)


def mean_sd(values: list[float]) -> str:
    return f"{statistics.mean(values):.3f} ± {statistics.pstdev(values):.3f}"


def report(args) -> None:
    rows = [json.loads(line) for line in (args.work / "results.jsonl").read_text().splitlines()]
    cells: dict[tuple, list[dict]] = {}
    for row in rows:
        key = (row["variant"], row["budget"], row["length"], row["decoding"], row.get("ssl", "tune"))
        cells.setdefault(key, []).append(row)
    lines = [
        "# NER benchmark: wikigold entity F1 (seqeval strict IOB2, micro), mean ± sd over label draws",
        "",
        "Variant = pretraining: unlabeled corpus (none | bbc-news) and vocabulary casing. ssl model: `tune` = the",
        "encoder fine-tuned as a token classifier, `wcK` = the per-word tagger with K word classes from the encoder",
        "(text.finetune.word_classes). Choose on val, never test.",
        "",
        "| variant | budget | length | decoding | ssl model | draws | "
        + " | ".join(f"{m} val | {m} test" for m in MODELS) + " |",
        "|---" * (6 + 2 * len(MODELS)) + "|",
    ]
    for (variant, budget, length, decoding, ssl), group in cells.items():
        scores = " | ".join(
            f"{mean_sd([r[f'{m}/val'] for r in group])} | {mean_sd([r[f'{m}/test'] for r in group])}" for m in MODELS
        )
        lines.append(f"| {variant} | {budget} | {length} | {decoding} | {ssl} | {len(group)} | {scores} |")
    perplexity = {r["variant"]: r["val_perplexity"] for r in rows}
    pretrain_s = {r["variant"]: r["wall_s"]["pretrain"] for r in rows if "pretrain" in r["wall_s"]}
    lines += [
        "",
        "Val perplexity after pretraining: " + ", ".join(f"{k} {v:.1f}" for k, v in perplexity.items()),
        "Pretrain wall time (s; one thread per run, beside other jobs: not idle figures): "
        + ", ".join(f"{k} {v:.0f}" for k, v in pretrain_s.items()),
        "",
    ]
    args.out.with_suffix(".json").write_text(json.dumps(rows, indent=2) + "\n")
    args.out.with_suffix(".md").write_text("\n".join(lines))
    print("\n".join(lines))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    variant = commands.add_parser("run", help="pretrain one variant (once) and fine-tune it")
    variant.add_argument("--name", required=True)
    variant.add_argument("--corpus", choices=["none", "bbc-news"], required=True)
    variant.add_argument("--lowercase", choices=["true", "false"], required=True)
    variant.add_argument("--fit", action="append", required=True, help="BUDGET:LENGTH:DECODING")
    variant.add_argument("--seeds", type=int, default=3)
    table = commands.add_parser("report", help="the table of every fit so far")
    table.add_argument("--out", type=Path, default=REPO / "bench" / "ner")
    for command in (variant, table):
        command.add_argument("--work", type=Path, default=WORK)
    args = parser.parse_args()
    run(args) if args.command == "run" else report(args)


if __name__ == "__main__":
    main()
