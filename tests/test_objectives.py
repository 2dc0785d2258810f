"""Losses and stabilisers: gradient penalty, clipping, spectral norm, EMA, DiffAugment, and a few steps of each."""
import csv
import math
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import REPO, TINY, LinearCritic, assert_one_line_error, run_script
from PIL import Image

import train
from fakefacegen.network import Discriminator, Generator, init_dcgan
from fakefacegen.reports import comparison
from fakefacegen.reports.comparison import Terminated, exit_if_failed, outcome
from fakefacegen.settings import DEFAULTS
from fakefacegen.training import diffaug, losses
from fakefacegen.training.iteration import train_iteration, update_ema
from fakefacegen.training.state import make_optimizer


def test_gradient_penalty_matches_the_hand_computed_value():
    # For D(x) = w.x the gradient is w at every point, so the penalty is (||w|| - 1)^2 exactly.
    w = torch.arange(12, dtype=torch.float32).reshape(3, 2, 2) / 10
    gp = losses.gradient_penalty(LinearCritic(w), torch.randn(5, 3, 2, 2), torch.randn(5, 3, 2, 2))
    assert math.isclose(gp.item(), (w.norm().item() - 1) ** 2, rel_tol=1e-5)


def test_wgan_clipping_keeps_every_critic_weight_in_range():
    torch.manual_seed(0)
    G, D = init_dcgan(Generator(32, 16, 8)), init_dcgan(Discriminator(32, 8))
    with torch.no_grad():
        for p in D.parameters():
            p.normal_(0, 1)  # far outside the box before the first step
    cfg = {**DEFAULTS, "batch_size": 8, "nz": 16, "loss": "wgan", "clip": 0.01, "optim": "rmsprop"}
    opt_g, opt_d = (make_optimizer(n.parameters(), cfg, 5e-5) for n in (G, D))
    train_iteration(G, D, opt_g, opt_d, [torch.rand(8, 3, 32, 32) * 2 - 1], cfg, lambda n: torch.randn(n, 16))
    assert all(p.abs().max() <= 0.01 for p in D.parameters())
    assert any(p.abs().max() == 0.01 for p in D.parameters())


def test_spectral_norm_makes_each_layer_1_lipschitz():
    torch.manual_seed(0)
    D = init_dcgan(Discriminator(32, 8, norm="spectral"))
    for _ in range(30):  # each training-mode forward runs one power iteration per layer
        D(torch.randn(4, 3, 32, 32))
    convs = [m for m in D.modules() if isinstance(m, torch.nn.Conv2d)]
    assert len(convs) == 4 and not any(isinstance(m, torch.nn.BatchNorm2d) for m in D.modules())
    for conv in convs:
        sigma = torch.linalg.matrix_norm(conv.weight.detach().reshape(conv.out_channels, -1), ord=2)
        assert abs(sigma.item() - 1) < 0.02


def test_ema_update_is_exact():
    a, b = Generator(32, 4, 4), Generator(32, 4, 4)
    before = [p.detach().clone() for p in a.parameters()]
    update_ema(a, b, 0.1)  # the weight of G: a decay of 0.9
    for old, new, target in zip(before, a.parameters(), b.parameters()):
        assert torch.allclose(new, 0.9 * old + 0.1 * target, atol=1e-7)
    update_ema(a, b, torch.tensor(1.0))  # a 0-dim tensor, as a CUDA graph reads it: the weight 1 copies G
    for new, target in zip(a.parameters(), b.parameters()):
        assert torch.equal(new, target)


def test_diffaug_transforms_are_consistent_and_differentiable():
    torch.manual_seed(0)
    x = torch.rand(6, 3, 16, 16, requires_grad=True)
    shifted = diffaug.translation(x, torch.Generator().manual_seed(1))
    for image, out in zip(x.detach(), shifted.detach()):  # each image moved as a whole, channels together
        matches = [(dy, dx) for dy in range(-2, 3) for dx in range(-2, 3)
                   if torch.equal(torch.roll(image, (dy, dx), (1, 2))[:, 2:-2, 2:-2], out[:, 2:-2, 2:-2])]
        assert matches
    cut = diffaug.cutout(torch.ones(6, 3, 16, 16), torch.Generator().manual_seed(2))
    assert ((cut == 0).all(dim=1).sum(dim=(1, 2)) > 0).all()  # a hole in every image, in every channel
    assert ((cut == 0).all(dim=1).sum(dim=(1, 2)) <= 64).all()  # at most 8x8 (half the side)
    out = diffaug.augment(x, diffaug.parse_policy("color,translation,cutout"), torch.Generator().manual_seed(3))
    out.sum().backward()
    assert out.shape == x.shape and x.grad is not None and x.grad.abs().sum() > 0
    same = diffaug.augment(x, ("color", "translation", "cutout"), torch.Generator().manual_seed(3))
    assert torch.equal(out, same)  # the run's generator makes the draws reproducible
    with pytest.raises(ValueError):
        diffaug.parse_policy("color,zoom")


@pytest.mark.parametrize("flags", [
    ["--loss", "hinge", "--lecam", "0.3"], ["--loss", "wgan", "--optim", "rmsprop", "--lr-d", "5e-5", "--d-steps", "2"],
    ["--loss", "wgan-gp", "--d-norm", "none", "--beta1", "0", "--beta2", "0.9"],
    ["--d-norm", "spectral", "--ema", "0.99", "--diffaug", "color,translation,cutout"],
    ["--g-loss", "saturating", "--g-act", "leaky", "--init", "default"],
    ["--r1", "1", "--r1-every", "2", "--mbstd", "4", "--d-norm", "none", "--ema-kimg", "1",
     "--label-smooth", "0.9", "--lr-schedule", "linear", "--lr-decay-start", "0.25", "--bcr", "10"],
])
def test_each_objective_trains_with_finite_losses(tmp_path, monkeypatch, flags):
    monkeypatch.chdir(tmp_path)
    train.main([*TINY, "--toy-size", "256", "--max-steps", "4", "--run", "o", *flags])
    with open(tmp_path / "outputs" / "o" / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 4
    assert all(math.isfinite(float(r[k])) for r in rows for k in ("loss_d", "loss_g", "d_real", "d_fake"))
    assert (tmp_path / "outputs" / "o" / "samples" / "step_000004.png").is_file()


def test_wgan_gp_with_batchnorm_is_refused(tmp_path):
    result = run_script("train.py", *TINY, "--loss", "wgan-gp", "--max-steps", "1", cwd=tmp_path, check=False)
    assert_one_line_error(result, "--d-norm none")
    assert_one_line_error(run_script("train.py", *TINY, "--diffaug", "zoom", cwd=tmp_path, check=False), "zoom")


def test_compare_draws_every_config_on_one_figure(tmp_path):
    configs = [str(REPO / "configs" / "ablation" / name) for name in ("adam_dcgan_init.toml", "sgd.toml")]
    result = run_script("compare.py", *configs, "--steps", "3", "--out", "cmp", "--", *TINY, cwd=tmp_path,
                        separate=True)
    table = (tmp_path / "cmp" / "comparison.md").read_text().splitlines()
    assert [line.split(" | ")[0] for line in table[2:]] == ["| compare-adam_dcgan_init", "| compare-sgd"]
    assert all(line.split(" | ")[1] == "3" for line in table[2:])  # the same budget for each
    assert (tmp_path / "cmp" / "comparison.png").stat().st_size > 10_000
    assert "compare-sgd" in result.stdout
    sheet = np.asarray(Image.open(tmp_path / "cmp" / "samples.png"))
    last_grid = np.asarray(Image.open(tmp_path / "outputs" / "compare-sgd" / "samples" / "step_000003.png"))
    width, top = last_grid.shape[1], round(last_grid.shape[0] / 2)
    assert sheet.shape[1] == 2 * width + 10  # the two runs side by side
    assert np.array_equal(sheet[18:18 + top, width + 10:], last_grid[:top, :, :3])
    # Run again with the same names: both runs are at their budget already, so nothing trains further; the
    # earlier comparison's files are replaced only with --force.
    kept = run_script("compare.py", *configs, "--steps", "3", "--out", "cmp", "--", *TINY, cwd=tmp_path, check=False)
    assert_one_line_error(kept, "earlier comparison", "--force")
    again = run_script("compare.py", *configs, "--steps", "3", "--out", "cmp", "--force", "--", *TINY, cwd=tmp_path,
                       separate=True)  # its train.py children print to the process's own stdout
    assert again.stdout.count("already at iteration 3") == 2
    assert (tmp_path / "cmp" / "comparison.md").read_text().splitlines() == table


def test_compare_refuses_clashing_names_and_reports_failed_runs(tmp_path):
    for folder in ("a", "b"):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "same.toml").write_text("batch_size = 16\n")
    clash = run_script("compare.py", "a/same.toml", "b/same.toml", "--steps", "1", cwd=tmp_path, check=False)
    assert_one_line_error(clash, "a/same.toml and b/same.toml", "--tag")
    assert not (tmp_path / "outputs").exists()

    (tmp_path / "refused.toml").write_text("loss = 'wgan-gp'\n")  # BatchNorm in D: refused before any run trains
    refused = run_script("compare.py", "a/same.toml", "refused.toml", "--steps", "1", "--out", "cmp", "--", *TINY,
                         cwd=tmp_path, check=False)
    assert_one_line_error(refused, "refused.toml", "--d-norm none")
    assert not (tmp_path / "outputs").exists()
    (tmp_path / "broken.toml").write_text("data = 'no/such/folder'\n")  # a run that fails once it starts
    failed = run_script("compare.py", "a/same.toml", "broken.toml", "--steps", "1", "--out", "cmp", "--", *TINY,
                        cwd=tmp_path, check=False)
    assert failed.returncode == 1 and "1 of 2 runs failed: compare-broken" in failed.stderr
    assert "failed (exit 2)" in (tmp_path / "cmp" / "comparison.md").read_text()


def test_stopping_compare_stops_its_training_run(tmp_path):
    """SIGTERM to compare.py: its train.py child saves, stops, and is gone before compare exits."""
    cmd = [sys.executable, str(REPO / "compare.py"), str(REPO / "configs" / "demo.toml"), "--steps", "100000",
           "--", *TINY, "--toy-size", "256"]
    proc = subprocess.Popen(cmd, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    metrics = tmp_path / "outputs" / "compare-demo" / "metrics.csv"
    deadline = time.time() + 120
    while time.time() < deadline and not (metrics.exists() and len(metrics.read_text().splitlines()) > 3):
        time.sleep(0.1)
    children = child_pids(proc.pid)
    assert children, "compare.py should be running train.py by now"
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=120)
    assert not [pid for pid in children if Path(f"/proc/{pid}").exists()]
    assert (tmp_path / "checkpoints" / "compare-demo" / "latest.pt").is_file()  # the child saved on its way out


def test_a_run_stopped_by_a_signal_is_reported_as_stopped_not_failed(capsys):
    """compare.py and protocol.py go on after a child a signal stopped (it saved; running the command again
    resumes it), say so, and end with the stop's status; a failure still wins with status 1."""
    assert outcome(143) == "stopped by SIGTERM (exit 143; run the command again to resume it)"
    assert outcome(2) == "failed (exit 2)"
    with pytest.raises(SystemExit) as stopped:
        exit_if_failed([{"name": "a", "code": 0}, {"name": "b", "code": 143}])
    assert stopped.value.code == 143 and "1 of 2 runs were stopped before their budget (b)" in capsys.readouterr().err
    with pytest.raises(SystemExit) as failed:
        exit_if_failed([{"name": "a", "code": 2}, {"name": "b", "code": 130}])
    assert failed.value.code == 1 and "1 of 2 runs failed: a (exit 2)" in capsys.readouterr().err
    exit_if_failed([{"name": "a", "code": 0}])


def child_pids(pid):
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(p) for p in path.read_text().split()] if path.exists() else []


@pytest.mark.parametrize("stop, sent", [(KeyboardInterrupt, signal.SIGTERM), (Terminated, signal.SIGINT)],
                         ids=["Ctrl-C", "SIGTERM"])
def test_a_stopped_parent_stops_its_child_with_the_other_signal(monkeypatch, stop, sent):
    """A terminal's Ctrl-C reaches the child as well as compare.py or protocol.py, and pkill's or systemd's
    SIGTERM does too; train.py takes a second signal of another kind as the same request and finishes its save,
    but the same one twice as 'stop now', which would cut a save of latest.pt short."""
    class Child:
        def __init__(self, *args, **kwargs):
            self.signals, self.waits = [], 0

        def wait(self):
            self.waits += 1
            if self.waits == 1:
                raise stop
            return 130

        def send_signal(self, signum):
            self.signals.append(signum)

        def poll(self):
            return 130 if self.signals else None

    children = []
    monkeypatch.setattr(comparison.subprocess, "Popen", lambda *a, **k: children.append(Child()) or children[-1])
    with pytest.raises(stop):
        comparison.train_one("demo.toml", "run", "cpu", [])
    assert children[0].signals == [sent] and children[0].waits == 2
