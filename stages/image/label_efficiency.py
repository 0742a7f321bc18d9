"""label_efficiency: gather the sweep's cells into one table and one plot.

    python stages/image/label_efficiency.py --cells DIR

Writes reports/label_efficiency.json (and .md), the curve reports/label_efficiency.png (macro-F1 against labels
per class, one line per method and baseline) and its data for DVC, reports/label_efficiency/*.csv; all of them
go to MLflow too.
"""

import argparse
from pathlib import Path

from sslflow import config
from sslflow.cli import run
from sslflow.image import label_efficiency as le
from sslflow.image import pictures
from sslflow.paths import Layout
from sslflow.tracking import stage_run


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--cells", type=Path, required=True, help="the sweep cells' directory")
    args = ap.parse_args()
    layout = Layout()
    base = config.load(layout.params, "base", config.Base)
    sw = config.load(layout.params, "sweep", config.Sweep)

    pooled = [le.with_pool(start, p) for p in sw.pool_methods for start in [*sw.semisupervised, "scratch"]]
    variants = [*sw.methods, *map(le.probe, sw.methods), *le.BASELINES, *pooled]
    table = le.table(le.gather(args.cells, sw.budgets, variants))
    out = {"json": layout.reports / "label_efficiency.json", "md": layout.reports / "label_efficiency.md",
           "csv": layout.reports / "label_efficiency", "png": layout.reports / "label_efficiency.png"}
    le.write(table, out["json"], out["md"], out["csv"])
    title = f"label efficiency: test macro-F1, mean ± std over {sw.draws} label draws"
    baselines = {v for v, row in table["variants"].items() if row["kind"] == "baseline"}
    pictures.label_efficiency_curve(le.curves(table), baselines, out["png"], title)
    with stage_run(
        "sweep/label_efficiency", run_name="image/sweep/label_efficiency", experiment=base.experiment,
        params=sw.model_dump(), upstream=None,
    ) as tracker:
        rows = table["variants"].items()
        means = {f"{v}/{b}/macro_f1": row[b]["macro_f1_mean"] for v, row in rows for b in table["budgets"]}
        tracker.log(means, 0)
        for path in out.values():
            tracker.log_artifact(path, "label_efficiency")
    print(out["md"].read_text())


if __name__ == "__main__":
    run(main)
