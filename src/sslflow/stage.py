"""The skeleton both tracks' training stages share, written once: set-up (device, precision, seeds, DDP),
pretraining under one resumable MLflow run, and the fine-tuning run's bookkeeping. Each track's stage supplies only
its data, model and step. (Publishing an evaluation is sslflow.publish.)

Training outputs are `persist` in dvc.yaml: DVC leaves them in place, and the stage replaces them (`replace`) only
once its checks on the data have passed, so a stage stopped by bad input keeps the last good ones.
"""

import shutil
from collections.abc import Callable
from pathlib import Path

import torch

from sslflow import distributed
from sslflow.atomic import write_json
from sslflow.checkpoint import Checkpoints, fingerprint
from sslflow.cli import warn
from sslflow.config import Base
from sslflow.errors import SslflowError
from sslflow.optim import build_optimizer, build_schedule, schedule_warning
from sslflow.runtime import Runtime, resolve, seed_everything
from sslflow.sampling import resumable_loader
from sslflow.splits import data_hash
from sslflow.tracking import StageRun, stage_run
from sslflow.train import fit

Step = Callable[[object], torch.Tensor]  # a batch -> its loss, as train.fit takes it


def start(base: Base) -> Runtime:
    """Device and precision decided once; under torchrun this process joins its group; seeds set."""
    runtime = resolve(base)
    distributed.init(runtime.device, base.nproc_per_node)  # under torchrun: one process per device
    seed_everything(base.seed)
    return runtime


def replace(*outputs: Path) -> None:
    """Remove a stage's previous outputs (rank 0), once its checks have passed and just before it writes anew."""
    if distributed.is_main():
        for path in outputs:
            shutil.rmtree(path) if path.is_dir() else path.unlink(missing_ok=True)


def run_tags(prepared: Path, batch: int) -> dict[str, str]:
    """What a training run's results depend on beyond its params: the data, and how the batch was split."""
    return {
        "sslflow.data_hash": data_hash(prepared),
        "sslflow.world_size": str(distributed.world_size()),  # a position mid-epoch depends on it
        "sslflow.batch_per_rank": str(batch),
    }


def announce(stage: str, what: str, batch: int, unit: str) -> None:
    if distributed.is_main():
        world = distributed.world_size()
        print(f"{stage}: {what}{world} rank(s) x {batch} {unit} = global batch {world * batch}")


def pretrain(
    *, run_name: str, key: str, cfg, base: Base, runtime: Runtime, model: torch.nn.Module,
    make_step: Callable[[torch.nn.Module], Step], data, unit: str, monitor: Callable[[torch.nn.Module], dict],
    prepared: Path, checkpoint_dir: Path, save: Callable[[dict, StageRun], None], outputs: tuple[Path, ...],
    stage: str = "pretrain", tags: dict[str, str] | None = None,
) -> dict | None:
    """Train `model` on the unlabeled `data` with the step `make_step` builds (from the compiled model when
    `base.compile`), under the run `stage`, resuming from `checkpoint_dir` when its newest checkpoint was made
    with the same settings (`cfg` less its `train` knobs, `tags`) and data. `cfg` is the track's pretrain section
    (`key` names it in messages); `monitor(model)` scores the model on val after every epoch. On rank 0, `save`
    writes the outputs inside the run (`outputs`, replaced once the batch fits the data) and the summary is
    returned; other ranks get None."""
    if cfg.batch_size > len(data):  # the loader drops incomplete batches: it would yield nothing
        raise SslflowError(
            f"params key '{key}.batch_size' is {cfg.batch_size}, more than the {len(data)} {unit} of the unlabeled "
            f"pool in {prepared}; lower it to at most {len(data)}"
        )
    batch = distributed.per_rank(cfg.batch_size, f"{key}.batch_size")
    loader = resumable_loader(data, batch_size=batch, seed=base.seed, runtime=runtime)
    optimizer = build_optimizer([{"params": list(model.parameters())}], cfg.optim)
    # The schedule ends where training does: after `epochs`, or at `max_steps` if that comes first.
    total = min(cfg.epochs * len(loader), cfg.max_steps or cfg.epochs * len(loader))
    scheduler = build_schedule(optimizer, cfg.optim, total, len(loader))
    warn(schedule_warning(cfg.optim, total, len(loader), f"{key}.optim"))
    tags = run_tags(prepared, batch) | (tags or {})
    # A text checkpoint to continue from counts by its content (tags: sslflow.init_from_sha256), not its path.
    settings = cfg.model_dump(exclude={"train", "init_from"})
    made_with = fingerprint(base.seed, base.device, base.precision, settings, tags)
    checkpoints = Checkpoints(
        checkpoint_dir, every=cfg.train.checkpoint_every, keep=cfg.train.keep_checkpoints, fingerprint=made_with
    )
    announce(stage, "", batch, unit)
    replace(*outputs)

    def tracking():  # opened once the checkpoints are held: only then is their newest one known
        latest = checkpoints.latest
        run = stage_run(
            stage, run_name=run_name, experiment=base.experiment, params=cfg.model_dump(), upstream="preprocess",
            tags=tags, data=(prepared, tags["sslflow.data_hash"], "pool"),
            resume_run_id=latest.run_id if latest else None, resume_step=latest.step if latest else None,
        )
        return distributed.on_main(run, distributed.Silent())

    with distributed.on_main(checkpoints) as saving, tracking() as tracker:
        checkpoints.run_id = tracker.run_id
        summary = fit(
            model=model, step=make_step(torch.compile(model) if runtime.compile else model), loader=loader,
            optimizer=optimizer, scheduler=scheduler, epochs=cfg.epochs, runtime=runtime, log=tracker.log,
            on_epoch_end=lambda epoch: monitor(model) if distributed.is_main() else {},  # only rank 0 reports
            max_steps=cfg.max_steps, prefix="pretrain", checkpoints=saving, max_nonfinite=cfg.train.max_nonfinite_steps,
        )
        if not distributed.is_main():  # rank 0 writes the outputs
            return None
        save(summary, tracker)
    return summary


def finetune_run(
    *, run_name: str, base: Base, params: dict, prepared: Path, batch: int, what: str, unit: str, outputs: Path
):
    """The fine-tuning stage's MLflow run on rank 0 (a silent stand-in on other ranks), tagged like pretraining's.
    Call it once the budget is drawn: it replaces the previous fitted models (`outputs`)."""
    tags = run_tags(prepared, batch)
    announce("finetune", what, batch, unit)
    replace(outputs)
    tracking = stage_run(
        "finetune", run_name=run_name, experiment=base.experiment, params=params, upstream="pretrain", tags=tags,
        data=(prepared, tags["sslflow.data_hash"], "train"),
    )
    return distributed.on_main(tracking, distributed.Silent())


def record_finetuned(
    finetuned: Path, reports: Path, *, budget, method: str, models: list[str], summary: dict, tracker: StageRun
) -> None:
    """What evaluate and serving read beside the fitted models: the labeled indices, which models were fitted,
    and the run's summary (reports/finetune.json and MLflow)."""
    write_json(finetuned / "budget.json", {"indices": budget.tolist(), "count": len(budget)})
    write_json(finetuned / "models.json", {"method": method, "models": models})
    write_json(reports / "finetune.json", summary)
    tracker.log(summary, 0)
    tracker.log_artifact(finetuned, "finetuned")
