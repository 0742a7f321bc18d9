"""How many word classes the NER tagger takes from the encoder, and whether they come from pretraining (issue #13).

In a project that `bench/ner_bench.py run` prepared and pretrained (default: its bbc-cased variant), fits the ssl
word-class tagger (sslflow.text.wordclasses) for each K in --classes, the same tagger on a randomly initialised
encoder of the same shape (the control: clusters that learned nothing), and the classical per-word logistic
regression, on the same labeled sentences for each label draw; val and test entity F1 (Viterbi decoding) go to
<out>.json and <out>.md (mean ± sd over draws). Choose on val, never test.

    python bench/ner_wordclasses.py [--project bench/ner-work/bbc-cased] [--budget 200] [--seeds 3]
        [--classes 50 100 200 800] [--out bench/ner_wordclasses]
"""

import argparse
import hashlib
import json
import statistics
from pathlib import Path

import numpy as np
import torch

from sslflow.splits import draw_budget
from sslflow.text import baselines, wordclasses
from sslflow.text.corpus import read_json, read_jsonl
from sslflow.text.decode import decode
from sslflow.text.entities import entity_report
from sslflow.text.models import build_bert, load_encoder
from sslflow.text.tokenizer import load_tokenizer

REPO = Path(__file__).resolve().parents[1]
C = 10.0  # text.finetune.classical_c, the pipeline's default


def entity_f1(probas: list[np.ndarray], sentences: list[dict], tags: list[str]) -> float:
    pred = [decode(p, tags, "viterbi") for p in probas]
    return entity_report([s["tags"] for s in sentences], pred)["summary"]["entity_f1"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--project", type=Path, default=REPO / "bench" / "ner-work" / "bbc-cased")
    parser.add_argument("--budget", type=int, default=200)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--classes", type=int, nargs="+", default=[50, 100, 200, 800])
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "ner_wordclasses")
    args = parser.parse_args()
    prepared = args.project / "data" / "prepared"
    tokenizer = load_tokenizer(prepared / "tokenizer.json")
    tags, max_length = read_json(prepared / "classes.json"), read_json(prepared / "encoding.json")["max_length"]
    splits = {name: read_jsonl(prepared / f"{name}.jsonl") for name in ("train", "val", "test")}
    sha = hashlib.sha256((prepared / "tokenizer.json").read_bytes()).hexdigest()
    pretrained, config = load_encoder(args.project / "models" / "encoder", sha)
    torch.manual_seed(0)
    encoders = {"pretrained": pretrained, "random init": build_bert(config)}
    index = {t: i for i, t in enumerate(tags)}
    pool = [s["tokens"] for s in splits["train"]]

    rows = []
    for seed in range(args.seeds):
        budget = draw_budget(np.zeros(len(pool), dtype=np.int64), labels_per_class=args.budget, label_fraction=None,
                             seed=seed, classes=["sentence"])
        labeled = [splits["train"][i] for i in budget]
        words, ids = [s["tokens"] for s in labeled], [[index[t] for t in s["tags"]] for s in labeled]
        fits = {("classical", "-"): baselines.fit_word_logreg(words, ids, len(tags), C, 0)}
        for k in args.classes:
            for name, encoder in encoders.items():
                if name == "pretrained" or k == min(args.classes):
                    fits[(name, k)] = wordclasses.fit_tagger(encoder, tokenizer, pool, words, ids, num_tags=len(tags),
                                                             classes=k, max_length=max_length, c=C, seed=0)
        for (encoder, k), model in fits.items():
            row = {"encoder": encoder, "classes": k, "seed": seed}
            for split in ("val", "test"):
                sentences = [s["tokens"] for s in splits[split]]
                probas = (baselines.predict_words(model, sentences) if encoder == "classical"
                          else wordclasses.predict(model, tokenizer, sentences))
                row[split] = entity_f1(probas, splits[split], tags)
            rows.append(row)
            print(json.dumps(row), flush=True)

    cells: dict[tuple, list[dict]] = {}
    for row in rows:
        cells.setdefault((row["encoder"], row["classes"]), []).append(row)

    def mean_sd(values: list[float]) -> str:
        return f"{statistics.mean(values):.3f} ± {statistics.pstdev(values):.3f}"

    lines = [
        f"# NER word classes: wikigold, {args.budget} labeled sentences, entity F1 (Viterbi), {args.seeds} label draws",
        "",
        f"Project: `{args.project.relative_to(REPO) if args.project.is_relative_to(REPO) else args.project}`. "
        "Tagger = per-word logistic regression on the classical features plus the classes (k-means over the "
        "encoder's layer 0) of the word and its neighbours; classical = the same without classes.",
        "",
        "| encoder | word classes | val | test |",
        "|---|---|---|---|",
        *(f"| {e} | {k} | {mean_sd([r['val'] for r in g])} | {mean_sd([r['test'] for r in g])} |"
          for (e, k), g in cells.items()),
        "",
    ]
    args.out.with_suffix(".json").write_text(json.dumps(rows, indent=2) + "\n")
    args.out.with_suffix(".md").write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
