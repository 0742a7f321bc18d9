"""Split data/raw into fixed train/val/test sets of the labeled images and the unlabelled pool in data/prepared."""

from sslflow.cli import run
from sslflow.config import Base, Preprocess, load
from sslflow.paths import Layout
from sslflow.rawdata import read_raw
from sslflow.splits import split_items, write_prepared
from sslflow.tracking import record_data_stage


def main() -> None:
    layout = Layout()
    cfg = load(layout.params, "preprocess", Preprocess)
    base = load(layout.params, "base", Base)  # validated before anything is written
    raw = read_raw(layout.raw)
    splits = split_items(
        raw.images,
        raw.labels,
        raw.classes,
        test_fraction=cfg.test_fraction,
        val_fraction=cfg.val_fraction,
        seed=cfg.split_seed,
        test_mask=raw.test_mask,
    )
    info = write_prepared(layout.prepared, raw.images, raw.labels, raw.classes, splits, ids=raw.ids, paths=raw.paths)
    n = info["counts"]
    record_data_stage(
        "preprocess", run_name="image/preprocess", experiment=base.experiment, params=cfg.model_dump(),
        upstream="fetch", tags={"sslflow.data_hash": info["data_hash"]},
        data=(layout.prepared, info["data_hash"], "output"), metrics=n, files=[layout.prepared / "split.json"],
    )
    test_from = "official test split" if raw.test_mask is not None else f"test_fraction={cfg.test_fraction}"
    print(
        f"preprocess: train {n['train']} / val {n['val']} / test {n['test']} ({test_from}), "
        f"unlabeled {n['unlabeled']} ({n['unlabeled_duplicates']} dropped as copies of val/test images), "
        f"pool {n['pool']} -> {layout.prepared}, data_hash {info['data_hash'][:12]}"
    )


if __name__ == "__main__":
    run(main)
