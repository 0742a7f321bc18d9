"""NT-Xent against a loop written from the SimCLR paper's pseudocode (Chen et al., 2020, Algorithm 1)."""

import math

import pytest
import torch
import torch.nn.functional as F

from sslflow.image.methods.losses import ntxent


def ntxent_reference(z0: torch.Tensor, z1: torch.Tensor, tau: float) -> torch.Tensor:
    z = [F.normalize(v, dim=0) for v in torch.cat([z0, z1])]  # z_1..z_2N, z_k and z_{k+N} are a pair
    n = z0.shape[0]

    def sim(i, j):
        return torch.dot(z[i], z[j])

    def ell(i, j):
        denominator = sum(math.exp(sim(i, k) / tau) for k in range(2 * n) if k != i)
        return -math.log(math.exp(sim(i, j) / tau) / denominator)

    return sum(ell(k, k + n) + ell(k + n, k) for k in range(n)) / (2 * n)


@pytest.mark.parametrize("batch,dim,tau", [(2, 3, 0.5), (5, 8, 0.1), (8, 16, 1.0)])
def test_matches_paper_loop(batch, dim, tau):
    g = torch.Generator().manual_seed(batch)
    z0, z1 = torch.randn(batch, dim, generator=g), torch.randn(batch, dim, generator=g)
    assert ntxent(z0, z1, tau).item() == pytest.approx(float(ntxent_reference(z0, z1, tau)), rel=1e-5)


def test_symmetric_in_the_two_views():
    z0, z1 = torch.randn(6, 4), torch.randn(6, 4)
    assert torch.allclose(ntxent(z0, z1, 0.2), ntxent(z1, z0, 0.2))


def test_known_value_for_orthogonal_pairs():
    # Two images, views identical, embeddings orthogonal: each anchor has sim 1 to its positive and 0 to the
    # two negatives, so the loss is -log(e^(1/t) / (e^(1/t) + 2)).
    e = torch.eye(2)
    tau = 0.5
    expected = -math.log(math.exp(1 / tau) / (math.exp(1 / tau) + 2))
    assert ntxent(e, e.clone(), tau).item() == pytest.approx(expected, rel=1e-6)


def test_invariant_to_embedding_scale_and_gradients_flow():
    z0 = torch.randn(4, 8, requires_grad=True)
    z1 = torch.randn(4, 8)
    loss = ntxent(z0, z1, 0.2)
    assert torch.allclose(loss, ntxent(3.0 * z0, z1, 0.2))
    loss.backward()
    assert torch.isfinite(z0.grad).all() and z0.grad.abs().sum() > 0


def test_lower_when_positives_align():
    z0 = torch.randn(16, 32)
    assert ntxent(z0, z0 + 0.01 * torch.randn(16, 32), 0.2) < ntxent(z0, torch.randn(16, 32), 0.2)
