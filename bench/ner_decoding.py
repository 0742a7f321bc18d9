"""NER decoding on val: argmax vs constrained Viterbi (sslflow.text.decode), to choose `text.finetune.decoding`.

wikigold through the real stages in a scratch project (text_bench's): pretrain once, then fine-tune at one budget
of labeled sentences over several label draws; every fitted model (ssl, scratch and the per-word classical
baseline) is decoded both ways on the val split (never test), since decoding is post-hoc. Writes <out>.json and
<out>.md.

    python bench/ner_decoding.py [--seeds 3] [--budget 200] [--pretrain-steps N] [--work DIR] [--out bench/ner_decoding]
"""

import argparse
import json
import statistics
import tempfile
from pathlib import Path

import torch
import yaml
from text_bench import REPO, WIKIGOLD, stage

from sslflow.config import Base
from sslflow.paths import Layout
from sslflow.runtime import Runtime, resolve
from sslflow.text import baselines
from sslflow.text.corpus import read_json, read_jsonl
from sslflow.text.decode import decode
from sslflow.text.entities import entity_report
from sslflow.text.models import load_classifier
from sslflow.text.tasks import TASKS
from sslflow.text.tokenizer import load_tokenizer

DECODINGS = ("argmax", "viterbi")


def val_scores(project: Path, runtime: Runtime) -> dict[str, dict[str, float]]:
    """{model: {decoding: val entity F1}} for the models the last finetune fitted."""
    layout, task = Layout(project), TASKS["token-classification"]
    val = read_jsonl(layout.prepared / "val.jsonl")
    tags = read_json(layout.finetuned / "classes.json")
    tokenizer = load_tokenizer(layout.finetuned / "tokenizer.json")
    encoding = read_json(layout.finetuned / "encoding.json")
    probas = {
        name: task.predict(load_classifier(layout.finetuned, name), tokenizer, val, encoding, runtime)
        for name in read_json(layout.finetuned / "models.json")["models"]
    }
    probas["classical"] = task.predict_classical(baselines.load(layout.finetuned / "classical.npz"), val)
    truth = [e["tags"] for e in val]
    return {
        name: {
            d: entity_report(truth, [decode(p, tags, d) for p in word_probas])["summary"]["entity_f1"]
            for d in DECODINGS
        }
        for name, word_probas in probas.items()
    }


def markdown(result: dict) -> list[str]:
    lines = [
        "# NER decoding on val: argmax vs constrained Viterbi",
        "",
        f"wikigold, {result['budget']} labeled sentences, label_seed 0..{result['seeds'] - 1}; MLM pretraining "
        f"{result['pretrain_steps']} steps (val perplexity {result['pretrain_val_perplexity']:.0f}). Entity F1 "
        "(seqeval strict IOB2, micro) on the val split, mean ± sd over label draws; each fitted model decoded both "
        "ways. Command: `python bench/ner_decoding.py`.",
        "",
        "| model | " + " | ".join(DECODINGS) + " | viterbi − argmax |",
        "|---" * (len(DECODINGS) + 2) + "|",
    ]
    for model, by in result["val_entity_f1"].items():
        diff = [v - a for a, v in zip(by["argmax"], by["viterbi"], strict=True)]
        cells = [f"{statistics.mean(by[d]):.3f} ± {statistics.pstdev(by[d]):.3f}" for d in DECODINGS]
        cells.append(f"{statistics.mean(diff):+.3f} ± {statistics.pstdev(diff):.3f}")
        lines.append(f"| {model} | " + " | ".join(cells) + " |")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--budget", type=int, default=200, help="labeled sentences")
    parser.add_argument("--pretrain-steps", type=int, help="text.pretrain.max_steps (default: params.yaml's)")
    parser.add_argument("--work", type=Path, default=None, help="scratch directory (default: a new temp dir)")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "ner_decoding")
    args = parser.parse_args()
    torch.set_num_threads(1)
    project = (args.work or Path(tempfile.mkdtemp(prefix="ner-decoding-"))) / "wikigold"
    project.mkdir(parents=True)
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["base"].update(experiment="ner-decoding-bench")
    params["text"].update(task="token-classification")
    params["text"]["fetch"].update(source="conll", path=str(WIKIGOLD))
    if args.pretrain_steps:
        params["text"]["pretrain"]["max_steps"] = args.pretrain_steps
    times: dict[str, list[float]] = {}
    for name in ("fetch", "preprocess", "label", "pretrain"):
        stage(name, project, params, times)

    scores: dict[str, dict[str, list[float]]] = {}
    for seed in range(args.seeds):
        params["text"]["finetune"].update(labels_per_class=args.budget, label_seed=seed)
        stage("finetune", project, params, times)
        for model, by_decoding in val_scores(project, resolve(Base(**params["base"]))).items():
            for decoding, f1 in by_decoding.items():
                scores.setdefault(model, {}).setdefault(decoding, []).append(f1)
        print(json.dumps(scores), flush=True)

    pretrain = json.loads((project / "reports" / "pretrain.json").read_text())
    logged = (project / "reports" / "pretrain_metrics.jsonl").read_text().splitlines()
    result = {
        "budget": args.budget, "seeds": args.seeds, "pretrain_steps": json.loads(logged[-1])["step"],
        "pretrain_val_perplexity": pretrain["monitor/val_perplexity"], "val_entity_f1": scores, "wall_s": times,
    }
    lines = markdown(result)
    args.out.with_suffix(".json").write_text(json.dumps(result, indent=2) + "\n")
    args.out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
