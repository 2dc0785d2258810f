"""The levers for small face sets: R1, the EMA half-life, the learning-rate schedule, the minibatch standard
deviation feature, label smoothing and adaptive augmentation, each against what it should compute."""
import math

import pytest
import torch
import torch.nn.functional as F
from conftest import TINY, LinearCritic, assert_one_line_error, run_script

from fakefacegen.network import Discriminator, MinibatchStdDev, init_dcgan
from fakefacegen.runs import read_metrics
from fakefacegen.settings import DEFAULTS
from fakefacegen.training import diffaug, losses
from fakefacegen.training.iteration import d_update, ema_decay, lr_factor
from fakefacegen.training.state import make_optimizer


def test_r1_is_the_squared_gradient_norm_at_real_images():
    # D(x) = w.x has gradient w everywhere: R1 = ||w||^2. D(x) = sum(x^2) has gradient 2x: R1 = mean 4||x||^2.
    w = torch.arange(12, dtype=torch.float32).reshape(3, 2, 2) / 10
    assert math.isclose(losses.r1_penalty(LinearCritic(w), torch.randn(5, 3, 2, 2)).item(), w.square().sum().item(),
                        rel_tol=1e-5)
    x = torch.randn(4, 3, 2, 2)
    expected = (4 * x.flatten(1).square().sum(1)).mean().item()
    assert math.isclose(losses.r1_penalty(lambda v: v.square().flatten(1).sum(1), x).item(), expected, rel_tol=1e-5)


def test_lazy_r1_adds_its_weighted_penalty_to_the_d_update():
    w = torch.ones(3, 2, 2)
    cfg = {**DEFAULTS, "loss": "hinge"}
    real, fake = torch.randn(4, 3, 2, 2), torch.randn(4, 3, 2, 2)
    plain, _, _ = d_update(make_optimizer(LinearCritic(w).parameters(), cfg, 0.0), LinearCritic(w), None,
                           real, fake, cfg)
    critic = LinearCritic(w)
    with_r1, _, _ = d_update(make_optimizer(critic.parameters(), cfg, 0.0), critic, None, real, fake, cfg,
                             r1_weight=8.0)  # gamma 1 every 16 updates: 1 * 16 / 2
    assert math.isclose(with_r1.item() - plain.item(), 8.0 * 12, rel_tol=1e-5)  # ||w||^2 = 12


def test_consistency_penalty_is_the_change_of_ds_score_under_translation():
    """bCR: the mean squared change of D's logits when reals and fakes are translated, with the run's generator."""
    real, fake = torch.rand(6, 3, 8, 8), torch.rand(6, 3, 8, 8)
    assert losses.consistency_penalty(lambda x: x.new_ones(len(x)), real, fake, torch.ones(6), torch.ones(6)) == 0
    critic = LinearCritic(torch.randn(3, 8, 8))
    real_logits, fake_logits = critic(real), critic(fake)
    penalty = losses.consistency_penalty(critic, real, fake, real_logits, fake_logits, torch.Generator().manual_seed(5))
    drawn = torch.Generator().manual_seed(5)
    moved_real, moved_fake = (critic(diffaug.translation(x, drawn)) for x in (real, fake))
    expected = (moved_real - real_logits).square().mean() + (moved_fake - fake_logits).square().mean()
    assert penalty.item() == pytest.approx(expected.item(), rel=1e-6) and penalty.item() > 0
    penalty.backward()  # it trains D: its gradient reaches D's weights
    assert critic.weight.grad is not None and critic.weight.grad.abs().sum() > 0


def test_bcr_adds_its_weighted_penalty_to_the_d_update():
    cfg = {**DEFAULTS, "loss": "hinge", "bcr": 10.0}
    real, fake = torch.rand(4, 3, 8, 8), torch.rand(4, 3, 8, 8)
    w = torch.randn(3, 8, 8)
    plain, _, _ = d_update(make_optimizer(LinearCritic(w).parameters(), cfg, 0.0), LinearCritic(w), None, real, fake,
                           {**cfg, "bcr": 0.0})
    critic = LinearCritic(w)
    with_bcr, real_logits, fake_logits = d_update(make_optimizer(critic.parameters(), cfg, 0.0), critic, None, real,
                                                  fake, cfg, torch.Generator().manual_seed(1))
    penalty = losses.consistency_penalty(LinearCritic(w), real, fake, real_logits, fake_logits,
                                         torch.Generator().manual_seed(1))
    assert with_bcr.item() - plain.item() == pytest.approx(10.0 * penalty.item(), rel=1e-4)


def test_lecam_penalty_and_its_moving_averages():
    """LeCam: relu(D(x) - avg fake)^2 + relu(avg real - D(G(z)))^2, and each D update moves the averages."""
    real_logits, fake_logits = torch.tensor([1.0, 3.0]), torch.tensor([-2.0, 0.5])
    anchors = torch.tensor([2.0, 0.0])  # (average on reals, average on fakes)
    expected = ((1.0**2 + 3.0**2) / 2) + ((4.0**2 + 1.5**2) / 2)
    assert losses.lecam_penalty(real_logits, fake_logits, anchors).item() == pytest.approx(expected)
    cfg = {**DEFAULTS, "loss": "hinge", "lecam": 0.5, "lecam_decay": 0.9}
    w = torch.randn(3, 8, 8)
    real, fake = torch.rand(4, 3, 8, 8), torch.rand(4, 3, 8, 8)
    plain, _, _ = d_update(make_optimizer(LinearCritic(w).parameters(), cfg, 0.0), LinearCritic(w), None, real, fake,
                           {**cfg, "lecam": 0.0})
    anchors = torch.tensor([0.3, -0.2])
    critic = LinearCritic(w)
    with_lecam, real_logits, fake_logits = d_update(make_optimizer(critic.parameters(), cfg, 0.0), critic, None,
                                                    real, fake, cfg, lecam_anchors=anchors)
    penalty = losses.lecam_penalty(real_logits, fake_logits, torch.tensor([0.3, -0.2]))
    assert penalty.requires_grad  # it trains D
    assert with_lecam.item() - plain.item() == pytest.approx(0.5 * penalty.item(), rel=1e-4)
    moved = 0.9 * torch.tensor([0.3, -0.2]) + 0.1 * torch.stack([real_logits.mean(), fake_logits.mean()])
    assert torch.allclose(anchors, moved.detach())


def test_a_lecam_run_resumes_exactly(tmp_path):
    """The averages are part of the checkpoint: 2 + 2 iterations equal 4."""
    flags = [*TINY, "--lecam", "0.3", "--lecam-decay", "0.5"]
    run_script("train.py", *flags, "--max-steps", "4", "--run", "whole", cwd=tmp_path)
    run_script("train.py", *flags, "--max-steps", "2", "--run", "split", cwd=tmp_path)
    run_script("train.py", *flags, "--max-steps", "4", "--run", "split", "--resume", "auto", cwd=tmp_path)
    whole, split = (torch.load(tmp_path / "checkpoints" / run / "latest.pt", weights_only=True)
                    for run in ("whole", "split"))
    assert whole["lecam_anchors"].abs().sum() > 0 and torch.equal(whole["lecam_anchors"], split["lecam_anchors"])
    for name, tensor in whole["D"].items():
        assert torch.equal(tensor, split["D"][name]), name


@pytest.mark.parametrize("batch", [32, 128])
def test_ema_half_life_is_in_images_whatever_the_batch(batch):
    cfg = {**DEFAULTS, "ema_kimg": 10.0, "ema_rampup": 0.0, "batch_size": batch}
    decay = ema_decay(cfg, images_seen=10**6)
    assert math.isclose(decay ** (10_000 / batch), 0.5, rel_tol=1e-9)  # an old value halves every 10k images
    ramped = {**cfg, "ema_rampup": 0.05}
    assert ema_decay(ramped, images_seen=0) == 0.0  # the first update copies G
    assert ema_decay(ramped, images_seen=20_000) < decay  # 5% of 20k images: a 1k-image half-life for now
    assert ema_decay(ramped, images_seen=10**6) == decay  # ramped up to the full half-life
    assert ema_decay({**DEFAULTS, "ema": 0.999}, images_seen=5) == 0.999


def test_linear_schedule_holds_then_falls_to_zero():
    cfg = {**DEFAULTS, "lr_schedule": "linear", "lr_decay_start": 0.5}
    assert [lr_factor(cfg, step, 100) for step in (0, 49, 50, 75, 100)] == [1.0, 1.0, 1.0, 0.5, 0.0]


def test_minibatch_stddev_adds_one_map_per_group():
    x = torch.randn(8, 5, 4, 4)
    out = MinibatchStdDev(4)(x)
    assert out.shape == (8, 6, 4, 4) and torch.equal(out[:, :5], x)
    groups = x.reshape(4, 2, 5, 4, 4)  # image i is in group i % 2
    by_hand = groups.std(0, unbiased=False).mean((1, 2, 3))
    assert torch.allclose(out[:, 5, 0, 0], by_hand.repeat(4), atol=1e-4)
    same = MinibatchStdDev(4)(x[:1].repeat(8, 1, 1, 1))
    assert same[:, 5].abs().max() < 1e-3  # a collapsed batch: no spread at all
    assert MinibatchStdDev(4)(torch.randn(6, 5, 4, 4)).shape == (6, 6, 4, 4)  # 6 images: groups of 3
    D = init_dcgan(Discriminator(32, 8, "none", mbstd=4))
    assert D(torch.randn(6, 3, 32, 32)).shape == (6,) and D(torch.randn(1, 3, 32, 32)).shape == (1,)


def test_label_smoothing_changes_only_the_real_targets():
    real, fake = torch.randn(16), torch.randn(16)
    smoothed = losses.d_loss("bce", real, fake, real_target=0.9)
    by_hand = (F.binary_cross_entropy_with_logits(real, torch.full_like(real, 0.9))
               + F.binary_cross_entropy_with_logits(fake, torch.zeros_like(fake)))
    assert torch.allclose(smoothed, by_hand)
    unchanged_fake = losses.d_loss("bce", real, fake) - F.binary_cross_entropy_with_logits(real, torch.ones_like(real))
    assert torch.allclose(smoothed - F.binary_cross_entropy_with_logits(real, torch.full_like(real, 0.9)),
                          unchanged_fake)


@pytest.mark.parametrize("flags, words", [
    (["--mbstd", "4", "--loss", "wgan-gp", "--d-norm", "none"], ["--mbstd", "WGAN-GP"]),
    (["--ema", "0.99", "--ema-kimg", "10"], ["--ema-kimg"]),
    (["--label-smooth", "0.9", "--loss", "hinge"], ["--label-smooth"]),
    (["--label-smooth", "0.4"], ["--label-smooth"]),
    (["--lr-schedule", "linear", "--max-minutes", "5"], ["--max-steps"]),
])
def test_levers_that_do_not_go_together_are_refused(tmp_path, flags, words):
    assert_one_line_error(run_script("train.py", *TINY, *flags, cwd=tmp_path, check=False), *words)


def test_adaptive_probability_follows_the_sign_of_the_overfitting_signal():
    p = torch.zeros(())
    diffaug.adapt_probability(p, torch.tensor(0.9), 0.6, images=128, ada_kimg=100)
    assert math.isclose(p.item(), 128 / 100_000, rel_tol=1e-5)  # 0 to 1 takes ada_kimg thousand images
    diffaug.adapt_probability(p, torch.tensor(0.2), 0.6, images=64, ada_kimg=100)
    assert math.isclose(p.item(), 64 / 100_000, rel_tol=1e-4)
    diffaug.adapt_probability(p, torch.tensor(0.0), 0.6, images=10**6, ada_kimg=1)
    assert p.item() == 0.0  # never below 0
    diffaug.adapt_probability(p, torch.tensor(1.0), 0.6, images=10**6, ada_kimg=1)
    assert p.item() == 1.0  # nor above 1
    assert diffaug.overfitting(torch.tensor([3.0, -1.0, 2.0, 0.5])).item() == 0.5


def test_each_transform_applies_to_each_image_with_the_probability():
    x = torch.rand(2000, 3, 8, 8) + 1  # no pixel is 0, so cutout's zeros show where it applied
    never = diffaug.augment(x, ("cutout",), torch.Generator().manual_seed(0), torch.tensor(0.0))
    assert torch.equal(never, x)
    always = diffaug.augment(x, ("cutout",), torch.Generator().manual_seed(0), torch.tensor(1.0))
    assert torch.equal(always, diffaug.augment(x, ("cutout",), torch.Generator().manual_seed(0)))
    half = diffaug.augment(x, ("cutout",), torch.Generator().manual_seed(0), torch.tensor(0.3))
    changed = (half == 0).flatten(1).any(1).float().mean().item()
    assert 0.26 < changed < 0.34  # 600 of 2000 expected; 3 standard deviations are 0.03
    both = diffaug.augment(x, ("color", "cutout"), torch.Generator().manual_seed(0), torch.tensor(0.5))
    assert not torch.equal(both, x) and both.shape == x.shape


def test_adaptive_augmentation_is_logged_and_resumes_exactly(tmp_path):
    """D overfits the 32 toy faces at once, so p rises from 0; a run resumed at its epoch's end carries p on
    exactly as an uninterrupted one."""
    args = [*TINY, "--toy-size", "32", "--diffaug", "color,translation,cutout", "--ada-target", "0.1",
            "--ada-kimg", "0.5"]
    run_script("train.py", *args, "--epochs", "6", "--run", "straight", cwd=tmp_path)
    run_script("train.py", *args, "--epochs", "3", "--run", "resumed", cwd=tmp_path)
    run_script("train.py", *args, "--epochs", "6", "--run", "resumed", "--resume", "auto", cwd=tmp_path)
    rows = {run: [{k: v for k, v in row.items() if k not in ("images_per_s", "elapsed_s")}  # times differ
                  for row in read_metrics(tmp_path / "outputs" / run / "metrics.csv")]
            for run in ("straight", "resumed")}
    assert rows["straight"] == rows["resumed"] and len(rows["straight"]) == 12
    p = [float(row["augment_p"]) for row in rows["straight"]]
    assert p[0] == 0 and p[-1] > p[1] > 0  # from 0, up by 16 / 500 a step while D is sure of the real faces
    straight, resumed = (torch.load(tmp_path / "checkpoints" / run / "latest.pt", weights_only=True)
                         for run in ("straight", "resumed"))
    assert straight["augment_p"].item() == resumed["augment_p"].item() > 0
    assert all(torch.equal(straight["D"][k], resumed["D"][k]) for k in straight["D"])


@pytest.mark.parametrize("flags, words", [
    (["--ada-target", "0.6"], ["--diffaug"]),
    (["--ada-target", "0.6", "--diffaug", "color", "--loss", "wgan"], ["--loss wgan"]),
    (["--ada-target", "1.5", "--diffaug", "color"], ["--ada-target"]),
])
def test_adaptive_augmentation_settings_that_do_not_go_together_are_refused(tmp_path, flags, words):
    assert_one_line_error(run_script("train.py", *TINY, *flags, "--max-steps", "1", cwd=tmp_path, check=False),
                          *words)
