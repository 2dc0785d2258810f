"""The fast paths compute what the plain ones do; torchrun with gloo trains, stays in sync and resumes."""
import csv
import socket
import subprocess
import sys

import pytest
import torch

import dataloader
from bench import naive_iteration
from conftest import REPO, TINY, run_script
from checkpoint import make_optimizer
from network import models_from_config
from settings import DEFAULTS
from training_step import native_bf16, speed_settings, train_iteration


def losses_of(path):
    with open(path) as f:
        return [(r["step"], r["loss_d"], r["loss_g"]) for r in csv.DictReader(f) if r["loss_d"]]


def test_data_on_device_draws_the_same_batches_as_the_loader():
    dataset = dataloader.ToyFaces(64, 32, seed=5)
    batches = dataloader.epoch_batches(len(dataset), 16, seed=5, epoch=3)
    on_device = list(dataloader.device_batches(dataloader.load_to_device(dataset, torch.device("cpu")), batches))
    through_loader = list(dataloader.batch_loader(dataset, batches, workers=1))
    assert len(on_device) == len(through_loader) == 4
    for (a, _), (b, _) in zip(on_device, through_loader):
        assert torch.equal(a, b)


def test_training_on_device_equals_training_through_the_loader(tmp_path):
    for mode in ("on", "off"):
        run_script("train.py", *TINY, "--flip", "--max-steps", "5", "--data-on-device", mode, "--run", mode,
                   cwd=tmp_path)
    assert losses_of(tmp_path / "outputs" / "on" / "metrics.csv") == \
        losses_of(tmp_path / "outputs" / "off" / "metrics.csv")


def test_fast_and_textbook_steps_compute_the_same_losses():
    cfg = {**DEFAULTS, "res": 32, "ngf": 16, "ndf": 16, "batch_size": 8, "nz": 16}
    G1, D1 = models_from_config(cfg, "cpu")
    G2, D2 = models_from_config(cfg, "cpu")  # same seed: the same weights
    real = torch.rand(8, 3, 32, 32) * 2 - 1
    z = torch.randn(8, 16)
    textbook = naive_iteration(G1, D1, *(make_optimizer(m.parameters(), cfg, 2e-4) for m in (G1, D1)), real, z)
    ours = train_iteration(G2, D2, *(make_optimizer(m.parameters(), cfg, 2e-4) for m in (G2, D2)), [real], cfg,
                           lambda n: z)
    assert torch.allclose(ours, torch.tensor(textbook), atol=1e-5)
    for a, b in zip(G1.parameters(), G2.parameters()):  # and leave the same weights behind
        assert torch.allclose(a, b, atol=1e-6)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def torchrun(cwd, *args):
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
           "--master_port", str(free_port()), str(REPO / "train.py"), *TINY, *args]
    result = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=300,
                            env={**__import__("os").environ, "OMP_NUM_THREADS": "1"})
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def test_two_processes_with_gloo_train_in_sync_and_resume(tmp_path):
    first = torchrun(tmp_path, "--max-steps", "4", "--run-name", "ddp")
    assert first.stdout.count("weights identical on all 2 processes") == 1
    assert first.stdout.count("done: 4 iterations") == 1  # only rank 0 reports and writes
    assert [int(s) for s, _, _ in losses_of(tmp_path / "outputs" / "ddp" / "metrics.csv")] == [1, 2, 3, 4]
    assert sorted(p.name for p in (tmp_path / "checkpoints" / "ddp").iterdir()) == ["latest.pt"]

    second = torchrun(tmp_path, "--max-steps", "7", "--run-name", "ddp", "--resume", "auto")
    assert "resuming" in second.stdout and "weights identical on all 2 processes" in second.stdout
    assert [int(s) for s, _, _ in losses_of(tmp_path / "outputs" / "ddp" / "metrics.csv")] == list(range(1, 8))
    ckpt = torch.load(tmp_path / "checkpoints" / "ddp" / "latest.pt", weights_only=True)
    assert ckpt["step"] == 7 and ckpt["config"]["batch_size"] == 16  # the global batch, 8 per process


@pytest.mark.parametrize("device, capability, expected", [
    ("cpu", "AVX512", {"channels_last": True, "amp": True}),   # oneDNN's bf16 kernels: 2.0x (bench.py)
    ("cpu", "AVX2", {"channels_last": False, "amp": False}),   # emulated bf16: 18x slower
    ("cuda", (9, 0), {"channels_last": True, "amp": False}),   # H100: fp32 NHWC beat bf16 in eager steps
    ("cuda", (7, 5), {"channels_last": True, "amp": False}),   # T4: no native bf16 at all
])
def test_auto_speed_settings_resolve_as_documented(monkeypatch, device, capability, expected):
    if device == "cpu":
        monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: capability)
    else:
        monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability)
    auto = {"channels_last": "auto", "amp": "auto"}
    assert speed_settings(auto, torch.device(device)) == expected
    assert native_bf16(torch.device(device)) == (capability in ("AVX512", (9, 0)))
    assert speed_settings({"channels_last": "off", "amp": "bf16"}, torch.device(device)) == \
        {"channels_last": False, "amp": True}  # what is asked for is what runs
