"""Models saved as safetensors weights plus a JSON config, so they rebuild without params.yaml.

Weights are only ever read from safetensors, which holds tensors and nothing executable: no pickle is loaded.
"""

import json
from pathlib import Path

import torch
from safetensors.torch import load_file, save

from sslflow.atomic import write_json, write_with
from sslflow.encoders import EncoderConfig, build_encoder
from sslflow.errors import SslflowError
from sslflow.faults import disk_full_is_clear
from sslflow.heads import Classifier


def _plain_state(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    """State dict of the plain module: no DDP `module.` or torch.compile `_orig_mod.` wrappers."""
    while hasattr(module, "module") or hasattr(module, "_orig_mod"):
        module = getattr(module, "module", None) or module._orig_mod
    return {k: v.detach().cpu().contiguous() for k, v in module.state_dict().items()}


def save_module(module: torch.nn.Module, config: dict, directory: Path, name: str) -> None:
    """Write `name.safetensors` and `name.json` (the config that rebuilds the module)."""
    data = save(_plain_state(module))  # bytes first, so a full disk is a plain OSError from the write below
    path = directory / f"{name}.safetensors"
    with disk_full_is_clear(path, f"no file in {directory} was left half-written"):
        write_with(path, lambda tmp: tmp.write_bytes(data))
        write_json(directory / f"{name}.json", config)


def load_config(directory: Path, name: str) -> dict:
    path = directory / f"{name}.json"
    if not path.is_file():
        raise SslflowError(f"model config not found: {path}")
    return json.loads(path.read_text())


def load_state(module: torch.nn.Module, directory: Path, name: str) -> torch.nn.Module:
    path = directory / f"{name}.safetensors"
    if not path.is_file():
        raise SslflowError(f"model weights not found: {path}")
    try:
        module.load_state_dict(load_file(str(path)))
    except Exception as err:  # safetensors header or shape mismatch
        raise SslflowError(f"cannot load weights {path}: {err}") from None
    return module


def save_encoder(encoder: torch.nn.Module, cfg: EncoderConfig, directory: Path) -> None:
    save_module(encoder, cfg.to_dict(), directory, "encoder")


def load_encoder(directory: Path) -> tuple[torch.nn.Module, EncoderConfig]:
    cfg = EncoderConfig(**load_config(directory, "encoder"))
    return load_state(build_encoder(cfg), directory, "encoder"), cfg


def save_classifier(model: torch.nn.Module, cfg: EncoderConfig, num_classes: int, directory: Path, name: str) -> None:
    save_module(model, {"encoder": cfg.to_dict(), "num_classes": num_classes}, directory, name)


def load_classifier(directory: Path, name: str) -> torch.nn.Module:
    config = load_config(directory, name)
    cfg = EncoderConfig(**config["encoder"])
    model = Classifier(build_encoder(cfg), cfg.feature_dim, config["num_classes"])
    return load_state(model, directory, name).eval()


def load_classifier_file(path: str, key: str) -> torch.nn.Module:
    """A classifier named by a params value `key` as its .safetensors file, with its config (same name, .json)
    beside it (e.g. finetune.distill.teacher)."""
    file = Path(path)
    if file.suffix != ".safetensors" or not file.is_file() or not file.with_suffix(".json").is_file():
        raise SslflowError(
            f"params key '{key}': no classifier at {path} (a .safetensors file with its .json beside it)"
        )
    return load_classifier(file.parent, file.stem)
