"""The pretraining methods: each loss against its formula, 20 steps of the shared loop lower it, and every method
ends in an encoder that saves, reloads and fine-tunes the same way."""

import json
import math
import subprocess
import sys

import numpy as np
import pytest
import torch
import yaml
from conftest import REPO, env_for, make_project, run_stage
from sklearn.datasets import load_digits
from torch.utils.data import DataLoader

from sslflow import config
from sslflow.artifacts import load_encoder, save_encoder
from sslflow.atomic import write_json
from sslflow.config import Base, Optim
from sslflow.encoders import EncoderConfig
from sslflow.errors import SslflowError
from sslflow.heads import Classifier
from sslflow.image import label_efficiency as le
from sslflow.image import methods, pictures
from sslflow.image.datasets import Images
from sslflow.image.methods.autoencoder import ConvDecoder, reconstruction_mse
from sslflow.image.methods.mae import MAE
from sslflow.image.methods.vae import gaussian_kl, negative_elbo
from sslflow.metrics import read as read_metrics
from sslflow.optim import build_optimizer, build_schedule
from sslflow.runtime import resolve, seed_everything
from sslflow.train import fit

CPU = resolve(Base(device="cpu", num_workers=0))
METHODS = ["simclr", "autoencoder", "vae", "mae"]
# Small enough for 8x8 digits: a 2x2-patch ViT with 16 patches, a width-8 CNN.
TINY = {"encoder": {"width": 8, "feature_dim": 32}, "mae": {"patch_size": 2, "hidden_size": 16, "heads": 2}}


def tiny_cfg(method: str, **extra) -> config.Pretrain:
    augment = {"crop_scale": [0.7, 1.0], "erase_p": 0.0}
    return config.Pretrain.model_validate({"method": method, **TINY, "augment": augment, **extra})


@pytest.fixture(scope="module")
def digits():
    d = load_digits()
    return np.rint(d.images * 255 / 16).astype(np.uint8)[:, None], d.target  # (N, 1, 8, 8) uint8


# maths


def test_reconstruction_mse_by_hand():
    g = torch.Generator().manual_seed(0)
    x, x_hat = torch.randn(3, 2, 4, 5, generator=g), torch.randn(3, 2, 4, 5, generator=g)
    by_hand = sum(float(x_hat[idx] - x[idx]) ** 2 for idx in np.ndindex(*x.shape)) / x.numel()
    assert reconstruction_mse(x_hat, x).item() == pytest.approx(by_hand, rel=1e-5)
    assert reconstruction_mse(x, x).item() == 0


def test_kl_matches_the_closed_form_for_diagonal_gaussians():
    g = torch.Generator().manual_seed(1)
    mu, logvar = torch.randn(4, 6, generator=g), torch.randn(4, 6, generator=g)
    # KL(N(m, s^2) || N(0, 1)) = log(1/s) + (s^2 + m^2) / 2 - 1/2, summed over independent dimensions
    for b in range(4):
        closed = sum(
            math.log(1 / math.exp(0.5 * lv)) + (math.exp(lv) + m**2) / 2 - 0.5
            for m, lv in zip(mu[b].tolist(), logvar[b].tolist(), strict=True)
        )
        assert gaussian_kl(mu, logvar)[b].item() == pytest.approx(closed, rel=1e-5)
    sigma = torch.exp(0.5 * logvar)
    normal = torch.distributions.Normal
    reference = torch.distributions.kl_divergence(normal(mu, sigma), normal(0.0, 1.0)).sum(1)
    torch.testing.assert_close(gaussian_kl(mu, logvar), reference)


def test_kl_is_zero_only_at_the_prior():
    assert gaussian_kl(torch.zeros(2, 3), torch.zeros(2, 3)).tolist() == [0.0, 0.0]
    assert (gaussian_kl(torch.randn(5, 3), torch.randn(5, 3)) > 0).all()


def test_kl_against_monte_carlo():
    mu, logvar = torch.tensor([[0.7, -0.3]]), torch.tensor([[-0.5, 0.4]])
    q = torch.distributions.Normal(mu, torch.exp(0.5 * logvar))
    z = q.sample((200_000,))  # KL = E_q[log q(z) - log p(z)]
    estimate = (q.log_prob(z) - torch.distributions.Normal(0.0, 1.0).log_prob(z)).sum(-1).mean()
    assert gaussian_kl(mu, logvar).item() == pytest.approx(estimate.item(), abs=0.01)


@pytest.mark.parametrize("beta", [0.0, 1.0, 4.0])
def test_negative_elbo_by_hand(beta):
    g = torch.Generator().manual_seed(2)
    x, x_hat = torch.randn(3, 1, 4, 4, generator=g), torch.randn(3, 1, 4, 4, generator=g)
    mu, logvar = torch.randn(3, 5, generator=g), torch.randn(3, 5, generator=g)
    per_image = [((x_hat[b] - x[b]) ** 2).sum().item() + beta * gaussian_kl(mu, logvar)[b].item() for b in range(3)]
    assert negative_elbo(x_hat, x, mu, logvar, beta).item() == pytest.approx(np.mean(per_image), rel=1e-5)


def _patches(x: torch.Tensor, p: int) -> torch.Tensor:
    """(B, C, H, W) -> (B, L, p*p*C), patches in row-major order, pixels (row, col, channel) inside each."""
    b, c, h, w = x.shape
    rows = [
        x[:, :, i : i + p, j : j + p].permute(0, 2, 3, 1).reshape(b, -1) for i in range(0, h, p) for j in range(0, w, p)
    ]
    return torch.stack(rows, dim=1)


@pytest.mark.parametrize("norm_pix_loss", [False, True])
def test_mae_loss_is_the_mse_on_masked_patches(norm_pix_loss):
    torch.manual_seed(0)
    cfg = EncoderConfig("vit", 1, 16, 16, image_size=8, patch_size=2, depth=1, heads=2)
    model = MAE(cfg, mask_ratio=0.75, decoder_depth=1, norm_pix_loss=norm_pix_loss)
    x, noise = torch.randn(3, 1, 8, 8), torch.rand(3, 16)
    out = model(x, noise=noise)
    # 16 patches, 4 kept: the masked ones are the 12 with the largest noise
    assert out.mask.shape == (3, 16) and out.mask.sum(1).tolist() == [12, 12, 12]
    assert torch.equal(out.mask.bool(), noise >= noise.sort(1).values[:, 4:5])
    target = _patches(x, 2)
    if norm_pix_loss:  # the paper's per-patch normalized pixels
        target = (target - target.mean(-1, keepdim=True)) / (target.var(-1, keepdim=True) + 1e-6).sqrt()
    per_patch = ((out.logits - target) ** 2).mean(-1)  # (B, L)
    by_hand = (per_patch * out.mask).sum() / out.mask.sum()
    assert out.loss.item() == pytest.approx(by_hand.item(), rel=1e-5)


# small-model behaviour


def _loss_at(step, batch, seed: int) -> float:
    """The step's loss with the RNG fixed (VAE noise, MAE masks), so that two evaluations compare."""
    with torch.random.fork_rng(devices=[]), torch.no_grad():
        torch.manual_seed(seed)
        return step(batch).item()


@pytest.mark.parametrize("method", METHODS)
def test_twenty_steps_lower_the_loss(method, digits):
    images, _ = digits
    seed_everything(0)
    m = methods.build(tiny_cfg(method), in_channels=1, size=(8, 8))
    batch = next(iter(DataLoader(Images(images[:64], m.views), batch_size=64)))
    step = m.step(m.model)
    before = _loss_at(step, batch, 123)
    opt = build_optimizer([{"params": list(m.model.parameters())}], Optim(lr=3e-3))
    calls = []
    # the same batch of views 20 times: one epoch of one batch each
    scheduler = build_schedule(opt, Optim(schedule="constant"), 20, 1)
    fit(model=m.model, step=step, loader=[batch], optimizer=opt, scheduler=scheduler, epochs=20, runtime=CPU,
        log=lambda metrics, s: calls.append(metrics), prefix="pretrain")
    assert sum("pretrain/loss" in c for c in calls) == 20
    after = _loss_at(step, batch, 123)
    assert after < 0.9 * before, (before, after)


@pytest.mark.parametrize("method", METHODS)
def test_every_method_saves_the_same_kind_of_encoder(method, digits, tmp_path):
    images, _ = digits
    torch.manual_seed(0)
    m = methods.build(tiny_cfg(method), in_channels=1, size=(8, 8))
    x = torch.randn(5, 1, 8, 8)
    encoder = m.encoder().eval()
    dim = m.encoder_config.feature_dim
    assert encoder(x).shape == (5, dim)
    save_encoder(encoder, m.encoder_config, tmp_path)
    loaded, cfg = load_encoder(tmp_path)
    assert cfg == m.encoder_config
    torch.testing.assert_close(loaded.eval()(x), encoder(x))
    logits = Classifier(loaded, cfg.feature_dim, 10)(x)  # what finetune builds on any encoder
    assert logits.shape == (5, 10)
    rows = m.show(torch.from_numpy(images[:4]))
    assert rows and all(r.shape == (4, 1, 8, 8) and r.min() >= -1 and r.max() <= 1 for r in rows.values())


def test_mae_encoder_is_the_trained_vit_without_masking():
    torch.manual_seed(0)
    m = methods.build(tiny_cfg("mae"), in_channels=1, size=(8, 8))
    with torch.no_grad():
        next(m.model.mae.vit.parameters()).add_(1.0)  # a change the copy must carry
    encoder = m.encoder()
    for (name, a), b in zip(m.model.mae.vit.state_dict().items(), encoder.vit.state_dict().values(), strict=True):
        assert torch.equal(a, b), name
    assert encoder.vit.config.mask_ratio == 0.0 and m.model.mae.config.mask_ratio == 0.75
    state = torch.get_rng_state()  # neither embedding nor copying draws random numbers
    encoder.eval()(torch.zeros(2, 1, 8, 8))
    m.encoder()
    assert torch.equal(torch.get_rng_state(), state)


@pytest.mark.parametrize("size", [(8, 8), (28, 28), (9, 13)])
def test_decoder_output_matches_the_image(size):
    assert ConvDecoder(7, 3, 4, size)(torch.randn(2, 7)).shape == (2, 3, *size)


def test_mae_rejects_images_it_cannot_patch():
    with pytest.raises(SslflowError, match="pretrain.mae.patch_size"):
        methods.build(tiny_cfg("mae", mae={"patch_size": 3, "hidden_size": 16, "heads": 2}), in_channels=1, size=(8, 8))


def test_mae_heads_must_divide_the_hidden_size(tmp_path):
    params = tmp_path / "params.yaml"
    params.write_text("pretrain:\n  method: mae\n  mae:\n    hidden_size: 30\n    heads: 4\n")
    with pytest.raises(SslflowError, match="pretrain.mae"):
        config.load(params, "pretrain", config.Pretrain)


# the label-efficiency sweep


@pytest.mark.parametrize(
    "n,max_steps,epochs",
    [(10, 1200, 200), (100, 1200, 200), (400, 1200, 200), (3600, 1200, 21), (3600, None, 200), (6400, 50, 1)],
)
def test_capped_epochs_keep_small_budgets_and_cut_big_ones(n, max_steps, epochs):
    # batch 64: one batch per epoch up to 64 images (and 100, whose last partial batch is dropped), n // 64 beyond
    assert le.capped_epochs(n, 64, 200, max_steps) == epochs


def test_budgets():
    assert le.budget_kwargs(5) == {"labels_per_class": 5, "label_fraction": None}
    assert le.budget_kwargs("all") == {"labels_per_class": None, "label_fraction": 1.0}
    assert le.parse_budget("40") == 40 and le.parse_budget("all") == "all"
    for bad in ("0", "-1", "half"):
        with pytest.raises(SslflowError, match="sweep budget"):
            le.parse_budget(bad)


def test_linear_probe_separates_separable_embeddings():
    g = np.random.default_rng(0)
    centers = np.eye(4)[:3] * 5  # three classes of a four-class problem, on orthogonal directions
    labels = np.repeat([0, 1, 3], 5)
    train = np.repeat(centers, 5, axis=0) + g.normal(0, 0.1, (15, 4))
    proba = le.linear_probe(train, labels, centers + g.normal(0, 0.1, (3, 4)), num_classes=4, c=100.0, seed=0)
    assert proba.shape == (3, 4) and np.allclose(proba.sum(1), 1)
    assert proba.argmax(1).tolist() == [0, 1, 3] and (proba[:, 2] == 0).all()


def _cell(variant, kind, budget, f1s, labeled=20):
    draws = [
        {"label_seed": i, "labeled": labeled, "macro_f1": f, "accuracy": f, "wall_s": 1.0} for i, f in enumerate(f1s)
    ]
    return le.summarize(variant, kind, budget, 10, draws)


def test_table_gathers_cells_and_compares_the_best_pretrained_with_each_baseline(tmp_path):
    cells = [
        _cell("vae", "ssl", 2, [0.5, 0.7]), _cell("vae-probe", "probe", 2, [0.8, 0.8]),
        _cell("vae-fixmatch", "semisupervised", 2, [0.6, 0.6]), _cell("scratch-fixmatch", "baseline", 2, [0.85, 0.85]),
        _cell("scratch", "baseline", 2, [0.2, 0.4]), _cell("classical", "baseline", 2, [0.9, 0.7]),
        _cell("vae", "ssl", "all", [0.9, 0.9], labeled=1000),
        _cell("vae-probe", "probe", "all", [0.95, 0.95], labeled=1000),
        _cell("vae-fixmatch", "semisupervised", "all", [0.9, 0.9], labeled=1000),
        _cell("scratch-fixmatch", "baseline", "all", [0.9, 0.9], labeled=1000),
        _cell("scratch", "baseline", "all", [0.9, 0.9], labeled=1000),
        _cell("classical", "baseline", "all", [0.96, 0.96], labeled=1000),
    ]
    for c in cells:
        write_json(le.cell_path(tmp_path, c["budget"], c["variant"]), c)
    variants = ["vae", "vae-probe", "vae-fixmatch", "scratch", "classical", "scratch-fixmatch"]
    table = le.table(le.gather(tmp_path, [2, "all"], variants))
    assert table["budgets"] == ["2", "all"]
    vae = table["variants"]["vae"]["2"]
    assert vae["macro_f1_mean"] == pytest.approx(0.6) and vae["macro_f1_std"] == pytest.approx(0.1)
    assert vae["labels_per_class"] == 2
    assert table["variants"]["vae"]["all"]["labels_per_class"] == 100
    # scratch-fixmatch is a baseline: it never counts as the best pretrained variant
    assert table["best"]["2"] == {
        "best_pretrained": "vae-probe", "macro_f1": 0.8, "minus_scratch": pytest.approx(0.5),
        "minus_classical": pytest.approx(0.0),
    }
    assert table["best"]["all"]["minus_classical"] == pytest.approx(-0.01)  # a loss is shown as a loss
    csvs = le.plot_csvs(table)
    assert set(csvs) == {"ssl.csv", "probe.csv", "fixmatch.csv", "baselines.csv"}
    assert csvs["probe.csv"].splitlines() == ["labels_per_class,vae", "2.0,0.8", "100.0,0.95"]
    assert csvs["fixmatch.csv"].splitlines() == ["labels_per_class,vae,scratch", "2.0,0.6,0.85", "100.0,0.9,0.9"]
    assert csvs["baselines.csv"].splitlines()[0] == "labels_per_class,scratch,classical"
    assert "| vae-probe | 0.800 ± 0.000 | 0.950 ± 0.000 |" in le.markdown(table)
    curve = le.curves(table)["classical"]
    assert curve == {
        "budget": ["2", "all"], "labels_per_class": [2.0, 100.0], "mean": [0.8, 0.96], "std": [pytest.approx(0.1), 0.0]
    }
    pictures.label_efficiency_curve(le.curves(table), set(le.BASELINES), tmp_path / "curve.png", "test")
    assert (tmp_path / "curve.png").read_bytes()[:4] == b"\x89PNG"
    with pytest.raises(SslflowError, match="sweep cell .* not found"):
        le.gather(tmp_path, [5], variants)


def test_pictures_are_pngs(tmp_path):
    rows = {"original": np.zeros((3, 1, 8, 8)), "reconstruction": np.ones((3, 1, 8, 8))}
    pictures.image_rows(rows, tmp_path / "rows.png", "rows")
    rgb = {"original": np.random.default_rng(0).uniform(-1, 1, (2, 3, 8, 8))}
    pictures.image_rows(rgb, tmp_path / "rgb.png", "rgb")
    points = pictures.tsne(np.random.default_rng(0).normal(size=(40, 5)), seed=0)
    assert points.shape == (40, 2)
    pictures.embedding_map(points, np.arange(40) % 3, ["a", "b", "c"], tmp_path / "map.png", "map")
    for name in ("rows", "rgb", "map"):
        assert (tmp_path / f"{name}.png").read_bytes()[:4] == b"\x89PNG"


def test_the_embedding_picture_takes_a_seeded_stratified_sample():
    labels = np.repeat(np.arange(4), [5000, 3000, 1990, 10])  # 10,000 test labels, one class rare
    shown = pictures.stratified_sample(labels, 2000, seed=0)
    assert len(shown) <= 2000 and np.all(np.diff(shown) > 0)
    assert np.bincount(labels[shown]).tolist() == [1000, 600, 398, 2]  # in proportion
    assert np.array_equal(shown, pictures.stratified_sample(labels, 2000, seed=0))
    assert not np.array_equal(shown, pictures.stratified_sample(labels, 2000, seed=1))
    assert np.array_equal(pictures.stratified_sample(labels[:1000], 2000, seed=0), np.arange(1000))  # small: all
    assert np.bincount(labels[pictures.stratified_sample(labels, 20, seed=0)]).tolist() == [10, 6, 3, 1]


# stage runs on tiny data

SMALL_MAE = {"mae": {"patch_size": 2, "hidden_size": 16, "heads": 2}}


def _sh(project, *args):
    proc = subprocess.run(args, cwd=project, env=env_for(project), capture_output=True, text=True, timeout=1800)
    assert proc.returncode == 0, f"{' '.join(args)} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc.stdout


@pytest.mark.slow
def test_an_mae_encoder_goes_through_finetune_and_evaluate(tmp_path):
    project = make_project(tmp_path / "p", {"pretrain": {"method": "mae", **SMALL_MAE}})
    for stage in ("fetch", "preprocess", "label", "pretrain", "finetune", "evaluate"):
        run_stage(project, stage)
    assert json.loads((project / "models" / "encoder" / "encoder.json").read_text())["arch"] == "vit"
    assert (project / "models" / "encoder" / "pretext.png").is_file()
    assert (project / "reports" / "figures" / "embedding_tsne.png").is_file()
    metrics = read_metrics(project / "reports")
    assert 0 <= metrics["ssl"]["macro_f1"] <= 1


@pytest.mark.slow
def test_the_sweep_runs_with_its_driver_and_stays_out_of_every_pipeline(tmp_path):
    """The opt-in sweep (bench/label_efficiency.py) on the tiny profile: every variant at every budget and draw."""
    sweep = {"methods": ["autoencoder", "mae"], "semisupervised": ["autoencoder"],
             "pool_methods": ["fixmatch", "distill"], "budgets": [2, "all"], "draws": 2, "max_steps": 10}
    project = make_project(tmp_path / "p", {"sweep": sweep, "pretrain": SMALL_MAE})
    out = tmp_path / "label_efficiency"
    driver = str(REPO / "bench" / "label_efficiency.py")
    _sh(project, sys.executable, driver, "--continue", str(project), "--draws", "2", "--out", str(out))
    table = json.loads(out.with_suffix(".json").read_text())["table"]
    assert table["budgets"] == ["2", "all"]
    expected = {
        "autoencoder", "mae", "autoencoder-probe", "mae-probe", "autoencoder-fixmatch", "autoencoder-distill",
        "scratch", "classical", "scratch-fixmatch", "scratch-distill",
    }
    assert set(table["variants"]) == expected
    assert all(len(table["variants"][v][b]["macro_f1_draws"]) == 2 for v in expected for b in ("2", "all"))
    assert out.with_suffix(".png").is_file() and out.with_suffix(".md").is_file()
    for pipeline in ("dvc.yaml", "text/dvc.yaml"):  # no pipeline names the sweep's outputs
        assert "sweep" not in yaml.safe_load((REPO / pipeline).read_text())["stages"]
