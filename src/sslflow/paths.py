"""The pipeline's file layout, relative to the project root; dvc.yaml names the same paths."""

from dataclasses import dataclass
from pathlib import Path


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
    def params(self) -> Path:
        return self.root / "params.yaml"
