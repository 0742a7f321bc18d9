"""check: validate every params section a track's pipeline reads, before DVC removes any output.

DVC deletes a stage's outputs just before it runs the stage, so a stage that finds a bad value only then has
already lost its last good outputs. This stage comes first in each track's pipeline (fetch depends on its
output, and every other stage on fetch), so a params error stops `dvc repro` here with one `error:` line and
every output of the pipeline stays as it was. What it writes depends only on the track, so passing it never
reruns anything downstream.
"""

import argparse

from sslflow import config
from sslflow.atomic import write_json
from sslflow.cli import run
from sslflow.errors import SslflowError
from sslflow.paths import Layout
from sslflow.text.config import Text

SHARED = {"base": config.Base, "registry": config.Registry, "promote": config.Promote}
TRACKS = {
    "image": SHARED | {
        "fetch": config.Fetch, "preprocess": config.Preprocess, "pretrain": config.Pretrain,
        "finetune": config.Finetune, "evaluate": config.Evaluate, "select": config.Select,
    },
    "text": SHARED | {"text": Text},
}
OTHERS = {"sweep": config.Sweep}  # read outside the pipelines (bench/label_efficiency.py)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--track", choices=tuple(TRACKS), default="image")
    args = ap.parse_args()
    layout = Layout()
    known = {name for sections in TRACKS.values() for name in sections} | set(OTHERS)
    unknown = sorted(set(config.read(layout.params)) - known)
    if unknown:
        raise SslflowError(
            f"{layout.params}: unknown params section '{unknown[0]}' (the sections are {', '.join(sorted(known))})"
        )
    sections = TRACKS[args.track]
    for name, model in sections.items():
        config.load(layout.params, name, model)
    write_json(layout.reports / "checked.json", {"track": args.track, "sections": sorted(sections)})
    print(f"check: params.yaml is valid for the {args.track} pipeline ({', '.join(sections)})")


if __name__ == "__main__":
    run(main)
