"""`pretrain.method` -> the parts the pretrain stage trains with the one loop in train.fit.

Every method ends in the same kind of encoder (B, C, H, W) -> (B, feature_dim), saved with
artifacts.save_encoder, so finetune and evaluate do not know which method made it.
"""

import functools
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from sslflow.config import Pretrain
from sslflow.encoders import EncoderConfig, build_encoder
from sslflow.errors import SslflowError
from sslflow.image.batch_views import SimCLRView
from sslflow.image.methods import autoencoder, mae, simclr, vae
from sslflow.image.views import TwoViews, augment, normalize


@dataclass(frozen=True)
class Method:
    model: nn.Module  # everything the optimizer trains
    views: Callable[[torch.Tensor], object]  # uint8 image (C, H, W) -> one training item for the step
    batch_views: Callable[[torch.Tensor], object]  # the same for a uint8 batch (B, C, H, W), on its device
    step: Callable[[nn.Module], Callable]  # model (or its compiled form) -> step(batch) -> loss
    encoder: Callable[[], nn.Module]  # the encoder in its current state, to embed with and to save
    encoder_config: EncoderConfig
    show: Callable[[torch.Tensor], dict[str, torch.Tensor]]  # uint8 images (n, C, H, W) -> named rows, in [-1, 1]


def cnn_encoder_config(cfg: Pretrain, in_channels: int) -> EncoderConfig:
    """The CNN of simclr, autoencoder and vae, from `pretrain.encoder`."""
    e = cfg.encoder
    return EncoderConfig(arch=e.arch, in_channels=in_channels, width=e.width, feature_dim=e.feature_dim)


def _vit_config(cfg: Pretrain, in_channels: int, size: tuple[int, int]) -> EncoderConfig:
    m = cfg.mae
    if size[0] != size[1] or size[0] % m.patch_size:
        raise SslflowError(
            f"pretrain.method mae needs square images whose side is a multiple of pretrain.mae.patch_size "
            f"({m.patch_size}); the images are {size[0]}x{size[1]}"
        )
    return EncoderConfig(
        arch="vit", in_channels=in_channels, width=m.hidden_size, feature_dim=m.hidden_size,
        image_size=size[0], patch_size=m.patch_size, depth=m.depth, heads=m.heads,
    )


def build(cfg: Pretrain, in_channels: int, size: tuple[int, int]) -> Method:
    """The method named by `cfg.method`, freshly initialized, for images (in_channels, *size)."""
    view, batch_view = augment(cfg.augment, size), _in_fp32(SimCLRView(cfg.augment))
    if cfg.method == "simclr":
        enc = cnn_encoder_config(cfg, in_channels)
        model = simclr.SimCLR(build_encoder(enc), enc.feature_dim, cfg.proj_dim)
        step = functools.partial(simclr.simclr_step, temperature=cfg.temperature)
        two = TwoViews(batch_view)
        show = functools.partial(_two_views, view)
        return Method(model, TwoViews(view), two, step, lambda: model.backbone, enc, show)
    if cfg.method == "autoencoder":
        enc = cnn_encoder_config(cfg, in_channels)
        model = autoencoder.Autoencoder(build_encoder(enc), enc.feature_dim, in_channels, enc.width, size)
        show = _shown(autoencoder.show, model)
        return Method(model, view, batch_view, autoencoder.autoencoder_step, lambda: model.backbone, enc, show)
    if cfg.method == "vae":
        enc = cnn_encoder_config(cfg, in_channels)
        model = vae.VAE(build_encoder(enc), enc.feature_dim, cfg.vae.latent_dim, in_channels, enc.width, size)
        step = functools.partial(vae.vae_step, beta=cfg.vae.beta)
        return Method(model, view, batch_view, step, lambda: model.backbone, enc, _shown(vae.show, model))
    if cfg.method == "mae":
        enc = _vit_config(cfg, in_channels, size)
        model = mae.MAE(enc, cfg.mae.mask_ratio, cfg.mae.decoder_depth, cfg.mae.norm_pix_loss)
        return Method(model, view, batch_view, mae.mae_step, model.encoder, enc, _shown(mae.show, model))
    raise ValueError(f"unknown pretrain method {cfg.method!r}")


def on_device(augment_on: str, device: torch.device) -> bool:
    """`pretrain.augment_on`: whether the views are made on the training device (auto: on CUDA)."""
    return augment_on == "device" or (augment_on == "auto" and device.type == "cuda")


def augmenting(step: Callable, batch_views: Callable) -> Callable:
    """The step on the views of a uint8 batch, made where the batch is (the loader then only reads rows)."""
    return lambda images: step(batch_views(images))


def unchanged(image: torch.Tensor) -> torch.Tensor:
    """The loader's transform when the views are made on the device: the uint8 image as it is."""
    return image


def _in_fp32(view: Callable[[torch.Tensor], torch.Tensor]) -> Callable[[torch.Tensor], torch.Tensor]:
    """A batch view made outside autocast: its grey levels are computed in float32 whatever the step's precision."""

    def made(images: torch.Tensor) -> torch.Tensor:
        with torch.autocast(images.device.type, enabled=False):
            return view(images)

    return made


def _two_views(view: Callable, images: torch.Tensor) -> dict[str, torch.Tensor]:
    """SimCLR's picture: uint8 images (n, C, H, W) and two random views of each, the pairs it pulls together."""
    return {"original": normalize()(images), **{f"view {k}": torch.stack([view(im) for im in images]) for k in (1, 2)}}


def _shown(show: Callable, model: nn.Module) -> Callable[[torch.Tensor], dict[str, torch.Tensor]]:
    """A module's show(model, x) on uint8 images, normalized and moved to the model's device, and back."""

    def shown(images: torch.Tensor) -> dict[str, torch.Tensor]:
        x = normalize()(images).to(next(model.parameters()).device)
        return {name: row.float().cpu() for name, row in show(model, x).items()}

    return shown
