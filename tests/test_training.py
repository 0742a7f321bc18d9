"""Small-model behaviour: shapes, the shared loop lowers the loss, artifacts round-trip."""

import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits
from torch.utils.data import DataLoader

from sslflow.artifacts import load_classifier, load_encoder, save_classifier, save_encoder
from sslflow.config import Augment, Base, Optim
from sslflow.encoders import EncoderConfig, build_encoder
from sslflow.heads import Classifier
from sslflow.image import classical
from sslflow.image.datasets import Images
from sslflow.image.finetune import predict_proba, train_classifier
from sslflow.image.methods.simclr import SimCLR, simclr_step
from sslflow.image.views import TwoViews, augment
from sslflow.optim import build_optimizer, build_schedule, schedule_warning
from sslflow.runtime import resolve, seed_everything
from sslflow.train import fit

CPU = resolve(Base(device="cpu", num_workers=0))


@pytest.fixture(scope="module")
def digits():
    d = load_digits()
    images = np.rint(d.images * 255 / 16).astype(np.uint8)[:, None]  # (N, 1, 8, 8)
    return images, d.target


@pytest.mark.parametrize("arch,size", [("small_cnn", 28), ("resnet18", 32)])
def test_encoder_shapes(arch, size):
    enc = build_encoder(EncoderConfig(arch, in_channels=3, width=8, feature_dim=24))
    assert enc(torch.randn(2, 3, size, size)).shape == (2, 24)


def _losses(log_calls):
    return [m["pretrain/loss"] for m, _ in log_calls if "pretrain/loss" in m]


def test_twenty_simclr_steps_lower_the_loss(digits):
    images, _ = digits
    seed_everything(0)
    cfg = EncoderConfig("small_cnn", 1, 8, 32)
    model = SimCLR(build_encoder(cfg), cfg.feature_dim, 16)
    views = TwoViews(augment(Augment(crop_scale=(0.7, 1.0), rotation=10, erase_p=0), (8, 8)))
    loader = DataLoader(Images(images[:64], views), batch_size=64, shuffle=False)
    optim = Optim(lr=3e-3)
    opt = build_optimizer([{"params": list(model.parameters())}], optim)
    calls = []
    fit(
        model=model, step=simclr_step(model, 0.2), loader=loader, optimizer=opt,
        scheduler=build_schedule(opt, Optim(lr=3e-3, schedule="constant"), 20, 1), epochs=20, runtime=CPU,
        log=lambda m, s: calls.append((m, s)), prefix="pretrain",
    )
    losses = _losses(calls)
    assert len(losses) == 20
    assert np.mean(losses[-5:]) < np.mean(losses[:5]) - 0.2


def test_finetune_fits_the_labeled_set(digits):
    images, labels = digits
    seed_everything(0)
    cfg = EncoderConfig("small_cnn", 1, 8, 32)
    model = Classifier(build_encoder(cfg), cfg.feature_dim, 10)
    still = Augment(
        crop_scale=(1.0, 1.0), rotation=0, translate=0, shear=0, brightness=0, contrast=0, blur_p=0, erase_p=0
    )
    calls = []
    model = train_classifier(
        model, images[:100], labels[:100], None, augment_cfg=still, optim=Optim(lr=1e-2), encoder_lr_scale=1.0,
        epochs=30, batch_size=50, runtime=CPU, log=lambda m, s: calls.append(m),
        generator=torch.Generator().manual_seed(0), prefix="ft",
    )
    losses = [m["ft/loss"] for m in calls if "ft/loss" in m]
    assert losses[-1] < 0.5 * losses[0]
    proba = predict_proba(model, images[:100], CPU)
    assert proba.shape == (100, 10) and np.allclose(proba.sum(1), 1, atol=1e-5)
    assert (proba.argmax(1) == labels[:100]).mean() > 0.8


def test_linear_probe_leaves_the_encoder_unchanged():
    cfg = EncoderConfig("small_cnn", 1, 4, 8)
    enc = build_encoder(cfg)
    before = {k: v.clone() for k, v in enc.state_dict().items()}
    model = Classifier(enc, cfg.feature_dim, 3, freeze_encoder=True)
    opt = build_optimizer([{"params": list(model.head.parameters())}], Optim(lr=0.1))
    model.train()
    loss = torch.nn.functional.cross_entropy(model(torch.randn(8, 1, 8, 8)), torch.randint(0, 3, (8,)))
    loss.backward()
    opt.step()
    after = enc.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # weights and BatchNorm statistics


def test_artifacts_round_trip(tmp_path):
    cfg = EncoderConfig("small_cnn", 1, 4, 8)
    enc = build_encoder(cfg).eval()
    save_encoder(enc, cfg, tmp_path)
    loaded, loaded_cfg = load_encoder(tmp_path)
    x = torch.randn(2, 1, 8, 8)
    assert loaded_cfg == cfg and torch.equal(enc(x), loaded.eval()(x))
    clf = Classifier(enc, cfg.feature_dim, 3).eval()
    save_classifier(clf, cfg, 3, tmp_path, "ssl")
    assert torch.equal(clf(x), load_classifier(tmp_path, "ssl")(x))


def test_cosine_schedule_warms_up_then_decays():
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0)
    sched = build_schedule(opt, Optim(lr=1.0, warmup_epochs=1), total_steps=10, steps_per_epoch=2)
    lrs = []
    for _ in range(10):
        lrs.append(sched.get_last_lr()[0])
        opt.step()
        sched.step()
    assert lrs[0] == pytest.approx(0.5) and lrs[1] == pytest.approx(1.0)
    assert all(a >= b for a, b in zip(lrs[1:], lrs[2:], strict=False)) and lrs[-1] < 0.05


def test_a_warm_up_as_long_as_training_is_named_and_the_defaults_are_not():
    from sslflow.config import Finetune, Pretrain

    # the reported case: a 60,000-image pool at batch 256 is 234 steps an epoch; 2 warm-up epochs outlast 400 steps
    message = schedule_warning(Optim(warmup_epochs=2), total_steps=400, steps_per_epoch=234, key="pretrain.optim")
    assert message.startswith("pretrain.optim.warmup_epochs is 2 epoch(s) = 468 steps") and "400 steps" in message
    assert "cosine decay never runs" in message
    assert schedule_warning(Optim(warmup_epochs=1), total_steps=400, steps_per_epoch=234, key="pretrain.optim") is None
    pretrain, finetune = Pretrain(epochs=12), Finetune()
    assert schedule_warning(pretrain.optim, 12 * 15, 15, "pretrain.optim") is None  # 3,600 pool images at 256
    assert schedule_warning(finetune.optim, finetune.epochs * 2, 2, "finetune.optim") is None
    assert schedule_warning(Optim(warmup_epochs=0), 1, 100, "x") is None  # no warm-up, nothing to outlast


def test_classical_baseline_probabilities(digits, tmp_path):
    images, labels = digits
    model = classical.fit_logreg(images[:200], labels[:200], 10, 1.0, 0)
    classical.save(model, tmp_path / "c.npz")
    proba = classical.predict_proba(classical.load(tmp_path / "c.npz"), images[200:400])
    assert proba.shape == (200, 10) and np.allclose(proba.sum(1), 1)
    assert (proba.argmax(1) == labels[200:400]).mean() > 0.8


def test_classical_baseline_with_a_class_missing_from_the_budget(digits):
    images, labels = digits
    keep = labels < 9  # class 9 never labeled
    model = classical.fit_logreg(images[keep][:200], labels[keep][:200], 10, 1.0, 0)
    proba = classical.predict_proba(model, images[:50])
    assert proba.shape == (50, 10) and np.all(proba[:, 9] == 0)
