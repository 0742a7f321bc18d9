"""Fetch the dataset named by params `fetch` into the raw form in data/raw."""

from sslflow.cli import run
from sslflow.config import Base, Fetch, load
from sslflow.paths import Layout
from sslflow.rawdata import write_raw
from sslflow.safepaths import param_dir
from sslflow.sources import fetch, name_classes, read_class_names
from sslflow.tracking import record_data_stage


def main() -> None:
    cfg = load("params.yaml", "fetch", Fetch)
    base = load("params.yaml", "base", Base)  # validated before anything is written
    layout = Layout()
    names = read_class_names(cfg.class_names, layout.root.resolve())  # before fetch: fails before a download
    data = fetch(
        cfg.source,
        path=None if cfg.path is None else str(param_dir(cfg.path, "fetch.path", layout.root.resolve())),
        dataset=cfg.dataset,
        max_bad_files=cfg.max_bad_files,
        image_size=cfg.image_size,
        download_root=layout.downloads,
    )
    data = name_classes(data, names)
    manifest = write_raw(
        layout.raw,
        data.images,
        data.labels,
        data.classes,
        {
            "source": cfg.source,
            "inputs": data.inputs,
            "license": data.license,
            "skipped": data.skipped,
            "class_names": data.class_names,
        },
        test_mask=data.test_mask,
    )
    record_data_stage(
        "fetch", experiment=base.experiment, params=cfg.model_dump(), upstream=None,
        tags={"sslflow.raw_sha256": manifest["sha256"]}, metrics={"count": manifest["count"], "skipped": len(data.skipped)},
        files=[layout.raw / "manifest.json", layout.raw / "classes.json"],
    )  # fmt: skip
    c, h, w = manifest["shape"]
    test = f", {manifest['test_count']} official test" if manifest["test_count"] is not None else ""
    print(
        f"fetch: {cfg.source} -> {layout.raw}: {manifest['count']} images {c}x{h}x{w}, "
        f"{len(data.classes)} classes{test}, {len(data.skipped)} skipped"
    )


if __name__ == "__main__":
    run(main)
