"""promote: move the registry alias `champion` to the version this workspace's evaluate registered (its run id is
in reports/lineage/evaluate.json; without it, the `challenger`), if it passes the gate.

The same for every track: `python stages/promote.py` (image, dvc.yaml) or `--track text` (text/dvc.yaml, which
registered model `text.task` picks), run from the track's directory. Decisions are serialised by a lock, and
any version left undecided (a killed or concurrent run) is decided too (tracking/registry.py).
Writes reports/promotion.json; any registry problem stops it before an alias changes (exit code 2). On a team
server, a user without EDIT on the registered model is refused (tracking/team.py): promotion.json says so.
"""

import argparse

from sslflow import config
from sslflow.atomic import write_json
from sslflow.cli import run
from sslflow.errors import SslflowError
from sslflow.paths import Layout
from sslflow.promotion import report
from sslflow.text.config import Text
from sslflow.tracking import read_lineage
from sslflow.tracking.registry import CHALLENGER, CHAMPION, ModelRegistry, Refused, decide_all


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
    thresholds = {"min_delta": cfg.min_delta, "min_class_recall": cfg.min_class_recall}
    evaluated = read_lineage("evaluate").get("run_id")
    try:
        decision, challenger, champion = _decide(registry, evaluated, thresholds)
    except Refused as err:
        write_json(layout.reports / "promotion.json", {"promoted": False, "refused": str(err), "evaluated": evaluated})
        raise
    write_json(layout.reports / "promotion.json", report(decision, challenger, champion, **thresholds))
    outcome = "is champion" if decision.promote else "stays challenger"
    print(f"promote: {name} version {challenger.version} {outcome}: {decision.reason}")


def _decide(registry: ModelRegistry, evaluated: str | None, thresholds: dict):
    """(decision, challenger, champion) for the version `evaluated` registered (or the challenger)."""
    name = registry.name
    registry.require_write(f"move '{CHAMPION}'")
    with registry.deciding():
        if evaluated:
            challenger = registry.evaluated_by(evaluated)
            if challenger is None:
                raise SslflowError(
                    f"no version of '{name}' is the model this workspace evaluated (run {evaluated}); rerun evaluate"
                )
        else:  # evaluate's record is missing (promote run by hand in a fresh copy): the latest registered version
            challenger = registry.candidate(CHALLENGER)
            if challenger is None:
                raise SslflowError(f"no version of '{name}' has the alias '{CHALLENGER}'; run the evaluate stage first")
        decision, champion = decide_all(registry, challenger, **thresholds)
    return decision, challenger, champion


if __name__ == "__main__":
    run(main)
