"""A masked autoencoder (He et al., 2022, https://arxiv.org/abs/2111.06377), as transformers' ViTMAEForPreTraining.

A random `mask_ratio` of the patches is dropped; the ViT encoder sees the visible ones only, a light decoder
predicts the pixels of the masked ones, and the loss is the mean squared error on the masked patches alone
(per-patch normalized pixels with `norm_pix_loss`). The encoder is then fine-tuned without masking
(encoders.ViTEncoder).
"""

import torch
from torch import nn

from sslflow.encoders import EncoderConfig, ViTEncoder, vit_mae_config


class MAE(nn.Module):
    def __init__(self, cfg: EncoderConfig, mask_ratio: float, decoder_depth: int, norm_pix_loss: bool):
        super().__init__()
        from transformers import ViTMAEForPreTraining

        self.encoder_config = cfg
        self.mae = ViTMAEForPreTraining(
            vit_mae_config(
                cfg, mask_ratio=mask_ratio, norm_pix_loss=norm_pix_loss, decoder_hidden_size=cfg.width,
                decoder_num_hidden_layers=decoder_depth, decoder_num_attention_heads=cfg.heads,
                decoder_intermediate_size=4 * cfg.width,
            )
        )

    def forward(self, x: torch.Tensor, noise: torch.Tensor | None = None):
        """transformers' output: loss, logits (B, L, p*p*C) for every patch, mask (B, L) with 1 = masked."""
        return self.mae(pixel_values=x, noise=noise)

    def encoder(self) -> ViTEncoder:
        """A copy of the encoder's current weights in the unmasked ViTEncoder that finetune rebuilds."""
        with torch.random.fork_rng(devices=[]):  # building it draws initial weights; keep the training RNG as is
            encoder = ViTEncoder(self.encoder_config)
        encoder.vit.load_state_dict(self.mae.vit.state_dict())
        return encoder.to(self.mae.device)


def mae_step(model: nn.Module):
    """The training step: batch is one view (B, C, H, W); a fresh random mask per image and step."""

    def step(x: torch.Tensor) -> torch.Tensor:
        return model(x).loss.float()

    return step


@torch.no_grad()
def show(model: MAE, x: torch.Tensor) -> dict[str, torch.Tensor]:
    """Rows for a picture: the images, what the encoder sees (masked patches at -1), and the reconstruction
    with the visible patches pasted back, as in the paper's figures."""
    was_training = model.training
    model.eval()
    out = model(x)
    mask = out.mask.unsqueeze(-1).expand_as(out.logits)  # (n, L, p*p*C), 1 = masked
    patches = model.mae.patchify(x)
    visible = model.mae.unpatchify(torch.where(mask.bool(), -1.0, patches), x.shape[-2:])
    pasted = model.mae.unpatchify(torch.where(mask.bool(), out.logits, patches), x.shape[-2:])
    model.train(was_training)
    return {"original": x, "visible to the encoder": visible, "reconstruction": pasted.clamp(-1, 1)}
