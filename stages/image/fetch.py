"""Fetch the dataset named by params `fetch` into the raw form in data/raw, with the images of `fetch.unlabeled`
after the labeled ones (label -1)."""

from sslflow.cli import run
from sslflow.config import Base, Fetch, load
from sslflow.image.sources import fetch, name_classes, read_class_names
from sslflow.image.unlabeled import resolve_unlabeled, with_unlabeled
from sslflow.paths import Layout
from sslflow.rawdata import NO_LABELED_SOURCE, write_raw
from sslflow.safepaths import param_dir
from sslflow.tracking import record_data_stage


def main() -> None:
    layout = Layout()
    cfg = load(layout.params, "fetch", Fetch)
    base = load(layout.params, "base", Base)  # validated before anything is written
    names = read_class_names(cfg.class_names, layout.project)  # before fetch: fails before a download
    sources = resolve_unlabeled(cfg.unlabeled, layout.project)  # likewise
    labeled = None  # fetch.source none: every image is unlabeled
    if cfg.source != NO_LABELED_SOURCE:
        labeled = fetch(
            cfg.source,
            path=None if cfg.path is None else str(param_dir(cfg.path, "fetch.path", layout.project)),
            dataset=cfg.dataset,
            max_bad_files=cfg.max_bad_files,
            image_size=cfg.image_size,
            download_root=layout.downloads,
        )
    data = with_unlabeled(labeled, sources, image_size=cfg.image_size, max_bad_files=cfg.max_bad_files)
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
            "unlabeled": data.unlabeled,
        },
        test_mask=data.test_mask,
        ids=data.ids,
        paths=data.paths,
    )
    skipped = len(data.skipped) + sum(len(u["skipped"]) for u in manifest["unlabeled"])
    unlabeled_hashes = {f"sslflow.unlabeled.{i}.sha256": u["sha256"] for i, u in enumerate(manifest["unlabeled"])}
    record_data_stage(
        "fetch", run_name=f"image/fetch {cfg.source}", experiment=base.experiment,
        params=cfg.model_dump(exclude={"labels"}),  # fetch.labels is the label stage's
        upstream=None, tags={"sslflow.raw_sha256": manifest["sha256"], **unlabeled_hashes},
        data=(layout.raw, manifest["sha256"], "output"),
        metrics={k: manifest[k] for k in ("count", "labeled_count", "unlabeled_count")} | {"skipped": skipped},
        files=[layout.raw / "manifest.json", layout.raw / "classes.json"],
    )
    c, h, w = manifest["shape"]
    test = f", {manifest['test_count']} official test" if manifest["test_count"] is not None else ""
    print(
        f"fetch: {cfg.source} -> {layout.raw}: {manifest['count']} images {c}x{h}x{w} "
        f"({manifest['labeled_count']} labeled, {manifest['unlabeled_count']} unlabeled), "
        f"{len(data.classes)} classes{test}, {skipped} skipped"
    )

if __name__ == "__main__":
    run(main)
