"""The fast paths compute what the plain ones do; torchrun with gloo trains, stays in sync and resumes; `auto`
resolves as documented."""
import csv
import socket
import subprocess
import sys

import pytest
import torch
from conftest import REPO, TINY, assert_one_line_error, run_script

from benchmarks.bench import naive_iteration
from fakefacegen.cli import UserError
from fakefacegen.data import dataloader
from fakefacegen.network import models_from_config
from fakefacegen.settings import DEFAULTS
from fakefacegen.training.iteration import d_update, train_iteration
from fakefacegen.training.speed import native_bf16, speed_settings
from fakefacegen.training.state import make_optimizer


def losses_of(path):
    with open(path) as f:
        return [(r["step"], r["loss_d"], r["loss_g"]) for r in csv.DictReader(f) if r["loss_d"]]


def test_data_on_device_draws_the_same_batches_as_the_loader():
    dataset = dataloader.ToyFaces(64, 32, seed=5)
    batches = dataloader.epoch_batches(len(dataset), 16, seed=5, epoch=3)
    on_device = list(dataloader.device_batches(dataloader.load_to_device(dataset, torch.device("cpu")), batches))
    through_loader = list(dataloader.BatchLoader(dataset, workers=1)(batches))
    assert len(on_device) == len(through_loader) == 4
    for (a, _), (b, _) in zip(on_device, through_loader):
        assert torch.equal(a, b)


def test_one_loader_serves_every_epoch_even_after_a_pass_left_unfinished():
    """The workers stay up from epoch to epoch; a pass broken off (a save mid-epoch) leaves nothing behind
    for the next one, which starts at the batch it is given."""
    dataset = dataloader.ToyFaces(96, 32, seed=1)
    loader = dataloader.BatchLoader(dataset, workers=2)
    first = dataloader.epoch_batches(len(dataset), 8, seed=1, epoch=0)
    started = loader(first)
    assert torch.equal(next(started)[0], dataset[first[0].tolist()][0])  # then left with batches read ahead
    for epoch, start in ((0, 5), (1, 0), (2, 3)):
        batches = dataloader.epoch_batches(len(dataset), 8, seed=1, epoch=epoch)[start:]
        got = [images for images, _ in loader(batches)]
        assert len(got) == len(batches)
        assert all(torch.equal(images, dataset[b.tolist()][0]) for images, b in zip(got, batches))
    assert len(loader.loader._iterator._workers) == 2  # the same two processes throughout


def test_bf16_forwards_after_an_update_see_the_new_weights():
    """Autocast keeps bf16 copies of weights for the rest of its region; after an optimiser step they are stale.
    A second D update in the same iteration (--d-steps 2) must see D's new weights, as a fresh region does."""
    cfg = {**DEFAULTS, "res": 32, "ngf": 8, "ndf": 8, "batch_size": 8}
    G, D = models_from_config(cfg, "cpu")
    opt_d = make_optimizer(D.parameters(), cfg, 1e-2)
    real, fake = torch.rand(8, 3, 32, 32) * 2 - 1, G(torch.randn(8, 100)).detach()
    with torch.autocast("cpu", torch.bfloat16):
        d_update(opt_d, D, D, real, fake, cfg)
        inside = D(real).float()
    with torch.autocast("cpu", torch.bfloat16):
        fresh = D(real).float()
    assert torch.equal(inside, fresh)


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
    assert torch.allclose(ours[:4], torch.tensor(textbook), atol=1e-5)  # the textbook has no ADA signal
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
    assert sorted(p.name for p in (tmp_path / "checkpoints" / "ddp").iterdir()) == [".lock", "latest.pt"]

    second = torchrun(tmp_path, "--max-steps", "7", "--run-name", "ddp", "--resume", "auto")
    assert "resuming" in second.stdout and "weights identical on all 2 processes" in second.stdout
    assert [int(s) for s, _, _ in losses_of(tmp_path / "outputs" / "ddp" / "metrics.csv")] == list(range(1, 8))
    ckpt = torch.load(tmp_path / "checkpoints" / "ddp" / "latest.pt", weights_only=True)
    assert ckpt["step"] == 7 and ckpt["config"]["batch_size"] == 16  # the global batch, 8 per process


@pytest.mark.parametrize("device, capability, processes, expected", [
    # AVX-512 CPU: oneDNN's bf16 kernels, 2.2x (bench.py); AVX2: emulated bf16, 18x slower
    ("cpu", "AVX512", 1, {"cuda_graph": False, "channels_last": True, "amp": True}),
    ("cpu", "AVX2", 1, {"cuda_graph": False, "channels_last": False, "amp": False}),
    # H100: the graph with bf16 48.2k img/s against 27.4k in fp32; eager, bf16 was slower (11.8k against 14.5k)
    ("cuda", (9, 0), 1, {"cuda_graph": True, "channels_last": True, "amp": True}),
    ("cuda", (9, 0), 2, {"cuda_graph": False, "channels_last": True, "amp": False}),  # torchrun: eager
    ("cuda", (7, 5), 1, {"cuda_graph": True, "channels_last": True, "amp": False}),  # T4: no native bf16
    ("mps", None, 1, {"cuda_graph": False, "channels_last": False, "amp": False}),
])
def test_auto_speed_settings_resolve_as_documented(monkeypatch, device, capability, processes, expected):
    if device == "cpu":
        monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: capability)
    else:
        monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability)
    speed = speed_settings(DEFAULTS, torch.device(device), processes)
    assert {key: speed[key] for key in expected} == expected
    assert (speed["cuda_graph_off"] is not None) == (device == "cuda" and processes > 1)
    assert native_bf16(torch.device(device)) == (capability in ("AVX512", (9, 0)))
    asked = speed_settings({**DEFAULTS, "channels_last": "off", "amp": "bf16", "cuda_graph": "off"},
                           torch.device(device))
    assert {key: asked[key] for key in expected} == {"cuda_graph": False, "channels_last": False, "amp": True}
    assert asked["cuda_graph_off"] is None  # asked for: nothing to explain


def test_what_a_graph_cannot_capture_runs_eagerly_and_says_why(monkeypatch):
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (9, 0))
    cuda = torch.device("cuda")
    speed = speed_settings({**DEFAULTS, "lr_schedule": "linear", "optim": "sgd"}, cuda)
    assert not speed["cuda_graph"] and "--optim sgd" in speed["cuda_graph_off"]
    assert not speed["amp"]  # without the graph, auto keeps fp32 on CUDA
    assert speed_settings({**DEFAULTS, "lr_schedule": "linear"}, cuda)["cuda_graph"]  # fused Adam reads a tensor
    with pytest.raises(UserError, match="needs a CUDA GPU"):
        speed_settings({**DEFAULTS, "cuda_graph": "on"}, torch.device("cpu"))
    with pytest.raises(UserError, match="--cuda-graph on: under torchrun"):  # asked for, and impossible
        speed_settings({**DEFAULTS, "cuda_graph": "on"}, cuda, processes=2)


def test_cuda_graph_on_without_a_gpu_is_one_line_before_anything_is_written(tmp_path):
    result = run_script("train.py", *TINY, "--cuda-graph", "on", "--max-steps", "1", cwd=tmp_path, check=False)
    assert_one_line_error(result, "--cuda-graph on", "CUDA")
    assert not (tmp_path / "outputs").exists() and not (tmp_path / "checkpoints").exists()
