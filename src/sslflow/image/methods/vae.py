"""A variational autoencoder (Kingma & Welling, 2014, https://arxiv.org/abs/1312.6114).

The encoder f and a linear layer give the posterior q(z|x) = N(mu, diag(exp(logvar))); a sample
z = mu + exp(logvar / 2) * eps (the reparameterization trick) is decoded back to the image. The loss is the
negative ELBO: reconstruction error plus beta times KL(q(z|x) || N(0, I)); beta = 1 is the ELBO itself, other
values the beta-VAE (Higgins et al., 2017, https://openreview.net/forum?id=Sy2fzU9gl).
"""

import torch
from torch import nn

from sslflow.image.methods.autoencoder import ConvDecoder


class VAE(nn.Module):
    def __init__(
        self,
        backbone: nn.Module,
        feature_dim: int,
        latent_dim: int,
        out_channels: int,
        width: int,
        size: tuple[int, int],
    ):
        super().__init__()
        self.backbone = backbone
        self.posterior = nn.Linear(feature_dim, 2 * latent_dim)  # -> [mu, logvar]
        self.decoder = ConvDecoder(latent_dim, out_channels, width, size)
        self.latent_dim = latent_dim

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mu, logvar = self.posterior(self.backbone(x)).chunk(2, dim=1)  # (B, latent_dim) each
        return mu, logvar

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Returns the reconstruction of a posterior sample (B, C, H, W), and mu, logvar (B, latent_dim)."""
        mu, logvar = self.encode(x)
        z = mu + torch.exp(0.5 * logvar) * torch.randn_like(mu)
        return self.decoder(z), mu, logvar


def gaussian_kl(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(mu, diag(exp(logvar))) || N(0, I)) per row, in closed form (Kingma & Welling, 2014, appendix B):
    0.5 * sum_j (mu_j^2 + sigma_j^2 - 1 - log sigma_j^2). mu, logvar: (B, D) -> (B,)."""
    return 0.5 * (mu.pow(2) + logvar.exp() - 1.0 - logvar).sum(dim=1)


def negative_elbo(
    x_hat: torch.Tensor, x: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor, beta: float
) -> torch.Tensor:
    """Mean over the batch of sum_pixels (x_hat - x)^2 + beta * KL.

    The squared error summed over pixels is -log p(x|z) of a Gaussian decoder with variance 1/2, up to a
    constant: summed, not averaged, so that its scale against the KL term is the ELBO's.
    """
    reconstruction = (x_hat - x).pow(2).flatten(1).sum(dim=1)  # (B,)
    return (reconstruction + beta * gaussian_kl(mu, logvar)).mean()


def vae_step(model: nn.Module, beta: float):
    """The training step: batch is one view (B, C, H, W); the target is the view itself."""

    def step(x: torch.Tensor) -> torch.Tensor:
        x_hat, mu, logvar = model(x)
        return negative_elbo(x_hat.float(), x.float(), mu.float(), logvar.float(), beta)

    return step


@torch.no_grad()
def show(model: VAE, x: torch.Tensor) -> dict[str, torch.Tensor]:
    """Rows for a picture: the images, their reconstructions from the posterior mean, and samples from the prior."""
    was_training = model.training
    model.eval()
    mu, _ = model.encode(x)
    prior = torch.randn(len(x), model.latent_dim, device=x.device)
    rows = {"original": x, "reconstruction": model.decoder(mu), "sample from prior": model.decoder(prior)}
    model.train(was_training)
    return rows
