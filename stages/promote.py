"""promote: move the registry alias `champion` to the `challenger` that evaluate registered, if it passes the gate.

The same for every track: `python stages/promote.py` (image, dvc.yaml) or `--track text` (text/dvc.yaml, which
registered model `text.task` picks), run from the track's directory.
Writes reports/promotion.json; any registry problem stops it before an alias changes (exit code 2).
"""

import argparse

from sslflow import config
from sslflow.atomic import write_json
from sslflow.cli import run
from sslflow.errors import SslflowError
from sslflow.paths import Layout
from sslflow.promotion import decide, report
from sslflow.text.config import Text
from sslflow.tracking import read_lineage
from sslflow.tracking.registry import CHALLENGER, CHAMPION, ModelRegistry


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--track", choices=("image", "text"), default="image")
    args = ap.parse_args()
    layout = Layout()
    reg = config.load(layout.params, "registry", config.Registry)
    cfg = config.load(layout.params, "promote", config.Promote)
    track = "image" if args.track == "image" else config.load(layout.params, "text", Text).task
    name = reg.model_name(track)

    registry = ModelRegistry(name)
    challenger = registry.candidate(CHALLENGER)
    if challenger is None:
        raise SslflowError(f"no version of '{name}' has the alias '{CHALLENGER}'; run the evaluate stage first")
    evaluated = read_lineage("evaluate").get("run_id")
    if evaluated and evaluated != challenger.run_id:
        raise SslflowError(
            f"the challenger (version {challenger.version}, run {challenger.run_id}) is not the model this "
            f"workspace evaluated (run {evaluated}); rerun evaluate"
        )
    champion = registry.candidate(CHAMPION)
    thresholds = {"min_delta": cfg.min_delta, "min_class_recall": cfg.min_class_recall}
    decision = decide(challenger, champion, **thresholds)

    registry.settle(decision, challenger)
    write_json(layout.reports / "promotion.json", report(decision, challenger, champion, **thresholds))
    outcome = "is champion" if decision.promote else "stays challenger"
    print(f"promote: {name} version {challenger.version} {outcome}: {decision.reason}")


if __name__ == "__main__":
    run(main)
