"""The pipeline's file layout; each track's dvc.yaml names the same paths.

A stage writes under its working directory: the project root for the image track (dvc.yaml), `text/` for the
text track (text/dvc.yaml). params.yaml is the project's one, found in that directory or the nearest above it.
"""

from dataclasses import dataclass
from pathlib import Path

PARAMS = "params.yaml"


def project_dir(cwd: Path | None = None) -> Path:
    """The nearest directory at or above `cwd` holding params.yaml (`cwd` itself if none does)."""
    cwd = (cwd or Path.cwd()).resolve()
    return next((d for d in (cwd, *cwd.parents) if (d / PARAMS).is_file()), cwd)


@dataclass(frozen=True)
class Layout:
    root: Path = Path(".")

    @property
    def raw(self) -> Path:
        return self.root / "data" / "raw"

    @property
    def downloads(self) -> Path:
        return self.root / "data" / "downloads"

    @property
    def prepared(self) -> Path:
        return self.root / "data" / "prepared"

    @property
    def labeled(self) -> Path:
        """The label stage's output: the labeled train/val/test splits, source labels merged with fetch.labels."""
        return self.root / "data" / "labeled"

    @property
    def labels(self) -> Path:
        """Where people put label files (fetch.labels names one); the label stage depends on the folder."""
        return self.root / "labels"

    @property
    def encoder(self) -> Path:
        return self.root / "models" / "encoder"

    @property
    def finetuned(self) -> Path:
        return self.root / "models" / "finetuned"

    @property
    def checkpoints(self) -> Path:
        return self.root / "checkpoints"

    @property
    def reports(self) -> Path:
        return self.root / "reports"

    @property
    def lineage(self) -> Path:
        """Each stage's MLflow run and pipeline id, `<stage>.json`, for the stages downstream (DVC outputs)."""
        return self.reports / "lineage"

    @property
    def project(self) -> Path:
        """Where params.yaml is: relative paths in it (fetch.path, ...) are relative to this directory."""
        return project_dir(self.root)

    @property
    def params(self) -> Path:
        return self.project / PARAMS
