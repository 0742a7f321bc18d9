"""Fetch the dataset named by params `fetch` into the raw form in data/raw."""

from sslflow.cli import run
from sslflow.config import Base, Fetch, load
from sslflow.image.sources import fetch, name_classes, read_class_names
from sslflow.paths import Layout
from sslflow.rawdata import write_raw
from sslflow.safepaths import param_dir
from sslflow.tracking import record_data_stage


def main() -> None:
    layout = Layout()
    cfg = load(layout.params, "fetch", Fetch)
    base = load(layout.params, "base", Base)  # validated before anything is written
    names = read_class_names(cfg.class_names, layout.project)  # before fetch: fails before a download
    data = fetch(
        cfg.source,
        path=None if cfg.path is None else str(param_dir(cfg.path, "fetch.path", layout.project)),
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
        "fetch", run_name=f"image/fetch {cfg.source}", experiment=base.experiment, params=cfg.model_dump(),
        upstream=None, tags={"sslflow.raw_sha256": manifest["sha256"]}, data=(layout.raw, manifest["sha256"], "output"),
        metrics={"count": manifest["count"], "skipped": len(data.skipped)},
        files=[layout.raw / "manifest.json", layout.raw / "classes.json"],
    )
    c, h, w = manifest["shape"]
    test = f", {manifest['test_count']} official test" if manifest["test_count"] is not None else ""
    print(
        f"fetch: {cfg.source} -> {layout.raw}: {manifest['count']} images {c}x{h}x{w}, "
        f"{len(data.classes)} classes{test}, {len(data.skipped)} skipped"
    )


if __name__ == "__main__":
    run(main)
