"""The GPU path's fixes, each where a CPU can show it, and beside them what only a GPU can show (skipped here):
the optimiser state's layout after a resume with another --channels-last, the EMA of G in G's layout, the
current device set for cuda:N, plain eager iterations after a failed capture, an epoch's end with nothing due,
DiffAugment's draws in float32, and the bench's timed window free of /proc reads, its faces rendered once per
resolution, its JSON written after every size and each size's models freed before the next. The GPU-only tests
carry the `gpu` mark: benchmarks.gpu_check runs those alone (tests/test_gpu_check.py checks it)."""
import gc
import json
import weakref

import numpy as np
import pytest
import torch
from conftest import TINY, needs_gpu, run_script

import train
from benchmarks import bench
from fakefacegen.data import dataloader
from fakefacegen.network import models_from_config
from fakefacegen.settings import DEFAULTS
from fakefacegen.training import cuda_graphs, diffaug, distributed
from fakefacegen.training.distributed import Distributed
from fakefacegen.training.iteration import Iteration
from fakefacegen.training.speed import speed_settings
from fakefacegen.training.state import TrainState

SMALL = {**DEFAULTS, "res": 32, "ngf": 8, "ndf": 8, "batch_size": 8, "nz": 16, "recal_samples": 16}
needs_cuda = needs_gpu(torch.cuda.is_available(), "needs a CUDA GPU")
needs_two_gpus = needs_gpu(torch.cuda.device_count() >= 2, "needs two CUDA GPUs")


def trained(cfg, device="cpu", iterations=3, state=None, capture=None):
    """(state, iteration) after `iterations` iterations on toy faces (a given state goes on from where it is),
    graphed as train.py graphs it where the speed settings say so, recorded by `capture` when given."""
    state = state or TrainState(cfg, device)
    step = Iteration(state, Distributed(str(device)), planned_iterations=iterations)
    if step.speed["cuda_graph"] or capture is not None:
        step = cuda_graphs.CudaGraphed(step, capture or cuda_graphs.capture)
    faces = dataloader.ToyFaces(cfg["batch_size"] * iterations, cfg["res"], cfg["seed"])
    for rows in dataloader.epoch_batches(len(faces), cfg["batch_size"], cfg["seed"], 0)[:iterations]:
        step([faces[rows.tolist()][0].to(device)])
        state.step += 1
    return state, step


def layouts_match(state):
    return all(value.stride() == param.stride() for optimizer in (state.opt_g, state.opt_d)
               for param, param_state in optimizer.state.items()
               for value in param_state.values() if torch.is_tensor(value) and value.shape == param.shape)


# ---------------------------------------------------------------------------------------------- 1, 6: layouts

@pytest.mark.parametrize("before, after", [("off", "on"), ("on", "off")])
def test_a_resume_with_another_channels_last_puts_the_optimiser_state_in_the_parameters_layout(before, after):
    """CUDA's fused Adam refuses state strided otherwise than its parameter; the CPU's accepts it, so the layout
    itself is what is checked here."""
    state, _ = trained({**SMALL, "channels_last": before})
    saved = state.state_dict()
    resumed = TrainState({**SMALL, "channels_last": after}, "cpu")
    resumed.load_state_dict(saved)  # its state in the layout of the run that wrote it
    Iteration(resumed, Distributed("cpu"))
    assert layouts_match(resumed)
    conv = resumed.D.main[0].weight
    assert conv.is_contiguous(memory_format=torch.channels_last if after == "on" else torch.contiguous_format)
    assert torch.equal(resumed.opt_d.state[conv]["exp_avg"], saved["opt_d"]["state"][0]["exp_avg"])  # same values


def test_the_ema_of_g_is_in_gs_layout():
    state, _ = trained({**SMALL, "channels_last": "on", "ema_kimg": 0.05}, iterations=1)
    for p_ema, p in zip(state.G_ema.parameters(), state.G.parameters()):
        assert p_ema.stride() == p.stride()


@needs_cuda
def test_resume_across_channels_last_under_fused_adam_on_cuda(tmp_path):
    common = [*TINY[:-2], "--device", "cuda", "--run", "cl"]
    run_script("train.py", *common, "--channels-last", "off", "--max-steps", "4", cwd=tmp_path)
    result = run_script("train.py", *common, "--channels-last", "on", "--max-steps", "8", "--resume", "auto",
                        cwd=tmp_path)
    assert "iteration 4" in result.stdout


# ---------------------------------------------------------------------------------------------- 2: cuda:N

def test_cuda_n_becomes_the_current_device(monkeypatch):
    """Streams, graphs and the default generator are the current device's: cuda:1 must be made current."""
    made_current = []
    monkeypatch.setattr(distributed, "resolve_device", lambda name: torch.device(name))
    monkeypatch.setattr(torch.cuda, "set_device", made_current.append)
    assert Distributed("cuda:1").device == torch.device("cuda", 1)
    assert made_current == [torch.device("cuda", 1)]
    Distributed("cpu")
    assert made_current == [torch.device("cuda", 1)]


@needs_two_gpus
def test_cuda_1_trains_with_its_graph_when_two_gpus_exist(tmp_path):
    result = run_script("train.py", *TINY[:-2], "--device", "cuda:1", "--max-steps", "8", "--run", "one",
                        cwd=tmp_path)
    assert "capture failed" not in result.stdout + result.stderr


# ---------------------------------------------------------------------------------------------- 3: failed capture

def test_a_failed_capture_leaves_plain_eager_iterations():
    """After the capture fails the step drops the graph (no static buffers, no side stream) and takes the
    eager speed settings (on CUDA: fp32, faster than bf16 for eager steps)."""
    def failing_capture(run, generators, optimizers, pool=None):
        raise RuntimeError("operation not permitted when stream is capturing")

    cfg = {**SMALL, "cuda_graph": "auto"}
    state = TrainState(cfg, "cpu")
    step = cuda_graphs.CudaGraphed(Iteration(state, Distributed("cpu")), failing_capture)
    faces = dataloader.ToyFaces(64, 32, 0)
    for i in range(cuda_graphs.WARMUP + 2):
        step([faces[list(range(8 * i, 8 * i + 8))][0]])
    assert step.failed and not step.replays and step.inputs.numel() == 0
    assert step.speed == {**speed_settings({**cfg, "cuda_graph": "off"}, torch.device("cpu")),
                          "cuda_graph_off": "the capture failed"}


# ---------------------------------------------------------------------------------------------- 4: epoch ends

def test_an_epoch_end_with_nothing_due_costs_nothing(tmp_path, monkeypatch):
    """With no checkpoint, FID or drawing due, an epoch's end neither recalibrates G_eval nor renders."""
    recalibrations = []
    original = TrainState.eval_generator
    monkeypatch.setattr(TrainState, "eval_generator", lambda self: recalibrations.append(self.epoch) or original(self))
    monkeypatch.setattr(train, "FIGURE_SECONDS", 1e9)
    monkeypatch.chdir(tmp_path)
    train.main([*TINY, "--toy-size", "32", "--epochs", "5", "--run", "quiet"])
    assert recalibrations == [1, 5]  # the first epoch draws at once; the last writes latest.pt


def test_an_epochs_index_is_one_tensor():
    batches = dataloader.epoch_batches(1000, 64, seed=0, epoch=2)
    assert isinstance(batches, torch.Tensor) and batches.shape == (15, 64) and batches.dtype == torch.int64
    images = torch.arange(1000 * 4 * 4 * 3, dtype=torch.int32).reshape(1000, 4, 4, 3)
    drawn = [rows for rows, _ in dataloader.device_batches(images, batches)]
    assert all(torch.equal(rows, images[b]) for rows, b in zip(drawn, batches))


# ---------------------------------------------------------------------------------------------- 6: draws in fp32

@pytest.mark.parametrize("transform", ["translation", "cutout"])
def test_augmentation_draws_the_same_in_bf16_as_in_fp32(transform):
    """Fakes arrive in bf16 under autocast: their shifts and cuts must follow the same odds as the reals'."""
    x = (torch.arange(512 * 3 * 8 * 8) % 97).reshape(512, 3, 8, 8).float()  # small integers: exact in bf16
    fp32 = diffaug.TRANSFORMS[transform](x, torch.Generator().manual_seed(0))
    bf16 = diffaug.TRANSFORMS[transform](x.bfloat16(), torch.Generator().manual_seed(0))
    assert torch.equal(bf16.float(), fp32)


@needs_cuda
def test_the_graphs_of_one_run_share_one_memory_pool():
    pools = []

    def recording_capture(run, generators, optimizers, pool=None):
        pools.append(pool)
        return cuda_graphs.capture(run, generators, optimizers, pool)

    cfg = {**SMALL, "r1": 0.5, "r1_every": 2}  # two kinds of iteration: two graphs
    trained(cfg, "cuda", iterations=2 * cuda_graphs.WARMUP + 4, capture=recording_capture)
    assert len(pools) == 2 and pools[0] is not None and pools[0] == pools[1]


@needs_cuda
def test_a_tensor_learning_rate_under_a_real_capture_follows_the_schedule(monkeypatch):
    monkeypatch.setattr(torch.backends.cudnn, "deterministic", True)  # the same convolution algorithms in both
    cfg = {**SMALL, "lr_schedule": "linear", "lr_decay_start": 0.0, "amp": "off"}  # fp32 both: comparable
    iterations = 12
    graphed, step = trained({**cfg, "cuda_graph": "on"}, "cuda", iterations)
    eager, _ = trained({**cfg, "cuda_graph": "off"}, "cuda", iterations)
    assert isinstance(step, cuda_graphs.CudaGraphed) and step.replays
    lr = graphed.opt_g.param_groups[0]["lr"]
    assert torch.is_tensor(lr) and lr.item() == pytest.approx(cfg["lr_g"] * 1 / iterations)
    for a, b in zip(graphed.G.parameters(), eager.G.parameters()):
        assert torch.allclose(a, b, rtol=1e-3, atol=1e-5)


@needs_cuda
def test_the_loader_path_with_workers_and_pinned_memory(tmp_path):
    run_script("preprocess.py", "--synthetic", "256", "--res", "32", "--out", tmp_path / "data", cwd=tmp_path)
    loader = dataloader.BatchLoader(dataloader.open_dataset(str(tmp_path / "data"), 32), 2)
    batch, _ = next(loader(dataloader.epoch_batches(256, 16, 0, 0)))
    assert batch.is_pinned()
    run_script("train.py", *TINY[:-2], "--device", "cuda", "--data", "data", "--data-on-device", "off", "--workers",
               "2", "--max-steps", "8", "--run", "loader", cwd=tmp_path)


# ---------------------------------------------------------------------------------------------- 7: bench

def test_the_benchs_timed_window_holds_the_loop_alone(monkeypatch):
    steps_run, reads = [], []
    monkeypatch.setattr(bench, "rss_bytes", lambda: reads.append(len(steps_run)) or 0)
    rows = bench.time_rows({"loop": (lambda: steps_run.append(1), {"rss": 0, "cuda": 0})}, steps=16, warmup=2,
                           repeats=2, batch=8, device=torch.device("cpu"))
    assert reads == [2, 18, 18, 34]  # /proc is read before and after each window, never inside
    assert set(rows["loop"]) >= {"images_per_s", "spread", "rss_mb"}


def test_bench_runs_on_a_cpu(tmp_path):
    result = run_script("benchmarks.bench", "--res", "32", "--batch", "8", "--width", "8", "--repeats", "2",
                        "--device", "cpu", "--workers", "0", "--json", tmp_path / "bench.json", cwd=tmp_path)
    assert "median of 2 x 16 iterations" in result.stdout  # whole epochs of 16 batches by default on a CPU
    rows = json.loads((tmp_path / "bench.json").read_text())["results"]
    assert all(row["spread"] >= 0 and row["rss_mb"] >= 0 for row in rows)


def test_the_bench_renders_the_faces_once_per_resolution_and_writes_each_size_as_it_ends(tmp_path, monkeypatch):
    """Rendering is seconds of CPU per thousand faces: the sizes of one resolution share one rendering. A sweep
    cut off (here by Ctrl-C in its last size; in gpu_check by a time limit) keeps the sizes it measured."""
    rendered, sizes = [], []
    render = bench.toyfaces
    monkeypatch.setattr(bench, "toyfaces", lambda indices, res: rendered.append((len(indices), res))
                        or render(indices, res))

    def measured(res, batch, images, args, device, warmup):
        if (res, batch) == (64, 16):
            raise KeyboardInterrupt
        sizes.append((res, batch, images))
        return [{"res": res, "batch": batch, "loop": "fakefacegen (fp32)", "images_per_s": 1.0}]

    monkeypatch.setattr(bench, "bench_size", measured)
    with pytest.raises(KeyboardInterrupt):
        bench.main(["--res", "32", "64", "--batch", "8", "16", "--device", "cpu", "--json", str(tmp_path / "b.json")])
    assert rendered == [(16 * 16, 32), (16 * 16, 64)]
    assert [(res, batch, len(images)) for res, batch, images in sizes] == [(32, 8, 128), (32, 16, 256), (64, 8, 128)]
    assert np.array_equal(sizes[0][2], render(range(128), 32)[0])  # the first faces, as each size drew before
    kept = json.loads((tmp_path / "b.json").read_text())["results"]
    assert [(row["res"], row["batch"]) for row in kept] == [(32, 8), (32, 16), (64, 8)]


def test_a_bench_sizes_models_and_optimisers_are_gone_before_the_next_size_starts(tmp_path, monkeypatch):
    """They sit in reference cycles (on CUDA with the graphs' memory pool), and torch 2.14's capture no longer
    runs the collector: with it off here, only the bench's own collection between sizes frees them."""
    alive, checked = [], []

    class RecordedState(TrainState):
        def __init__(self, cfg, device):
            super().__init__(cfg, device)
            alive.extend(weakref.ref(held) for held in (self, self.G, self.D, self.opt_g, self.opt_d))

    def recorded_models(cfg, device):
        G, D = models_from_config(cfg, device)
        alive.extend((weakref.ref(G), weakref.ref(D)))
        return G, D

    def size(*args):
        checked.append(sum(ref() is not None for ref in alive))
        return one_size(*args)

    one_size = bench.bench_size
    monkeypatch.setattr(bench, "TrainState", RecordedState)
    monkeypatch.setattr(bench, "models_from_config", recorded_models)
    monkeypatch.setattr(bench, "bench_size", size)
    gc.collect()
    gc.disable()
    try:
        run_script("benchmarks.bench", "--res", "32", "--batch", "8", "16", "--width", "8", "--repeats", "1",
                   "--device", "cpu", "--workers", "0", "--json", tmp_path / "bench.json", cwd=tmp_path)
    finally:
        gc.enable()
    assert len(alive) > 10 and checked == [0, 0]
