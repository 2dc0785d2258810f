"""The CUDA-graph iteration computes what the eager one does.

On a CPU the graph's plumbing is checked with a stand-in capture that records nothing and replays by running
the iteration: static buffers, device-tensor schedules, one graph per kind of iteration, warm-up, and the
fall-back to eager when a capture fails. On a CUDA GPU the real capture is compared with the eager step."""
import pytest
import torch
from conftest import TINY, needs_gpu, run_script

from fakefacegen.data import dataloader
from fakefacegen.settings import DEFAULTS
from fakefacegen.training import cuda_graphs
from fakefacegen.training.distributed import Distributed
from fakefacegen.training.iteration import Iteration
from fakefacegen.training.state import TrainState

SMALL = {**DEFAULTS, "res": 32, "ngf": 8, "ndf": 8, "batch_size": 8, "nz": 16, "recal_samples": 16}
# What makes iterations differ: flips, augmentation (fixed, or adapted on the device: ada), EMA with its ramp-up,
# several D updates, lazy R1 (every other iteration carries it: two kinds of iteration), each loss with what it
# needs.
CONFIGS = {
    "dcgan": {"flip": True},
    "levers": {"diffaug": "color,translation,cutout", "ema_kimg": 0.05, "d_steps": 2, "r1": 0.5, "r1_every": 4,
               "mbstd": 4, "label_smooth": 0.9, "bcr": 1.0, "lecam": 0.3},
    "ada": {"diffaug": "color,translation,cutout", "ada_target": 0.2, "ada_kimg": 0.05, "ema_kimg": 0.05},
    "hinge-sn": {"loss": "hinge", "d_norm": "spectral", "ema": 0.9, "g_steps": 2},
    "wgan-gp": {"loss": "wgan-gp", "d_norm": "none", "d_steps": 2},
    "wgan": {"loss": "wgan", "optim": "rmsprop", "d_steps": 2},
}
ITERATIONS = 10  # each kind of iteration: warm-up, capture, replays
needs_cuda = needs_gpu(torch.cuda.is_available(), "needs a CUDA GPU: CUDA graphs exist only there (the CPU tests "
                       "above check the graph's plumbing with a stand-in capture)")


class RecordNothing:
    """A stand-in for cuda_graphs.capture: recording runs nothing, as a real capture runs no kernel, and a
    replay runs the recorded iteration. Counts the captures."""

    def __init__(self):
        self.captures = 0

    def __call__(self, run, generators, optimizers, pool=None):
        self.captures += 1
        return run


def train(cfg, device, capture=None, iterations=ITERATIONS):
    """(state, iteration) after `iterations` iterations on toy faces, eager or graphed through `capture`."""
    state = TrainState(cfg, device)
    step = Iteration(state, Distributed(str(device)), planned_iterations=iterations)
    if capture is not None:
        step = cuda_graphs.CudaGraphed(step, capture)
    faces = dataloader.ToyFaces(cfg["batch_size"] * cfg["d_steps"] * iterations, cfg["res"], cfg["seed"])
    batches = dataloader.epoch_batches(len(faces), cfg["batch_size"], cfg["seed"], 0)
    for i in range(iterations):
        group = batches[i * cfg["d_steps"]:(i + 1) * cfg["d_steps"]]
        step([faces[b.tolist()][0].to(device) for b in group])
        state.step += 1
    return state, step


def tensors(state):
    """Everything an iteration changes: weights and buffers of every net, the metric sums, the noise's state."""
    nets = {"G": state.G, "D": state.D, **({"G_ema": state.G_ema} if state.G_ema is not None else {})}
    found = {f"{name}.{key}": value for name, net in nets.items() for key, value in net.state_dict().items()}
    found["log_window"], found["augment_p"] = state.log_window, state.augment_p
    return found


@pytest.mark.parametrize("name", CONFIGS)
def test_the_graphs_plumbing_replays_what_the_eager_iteration_computes(name):
    cfg = {**SMALL, **CONFIGS[name], "amp": "off"}
    eager, _ = train(cfg, "cpu")
    capture = RecordNothing()
    graphed, step = train(cfg, "cpu", capture)
    kinds = 2 if cfg["r1"] else 1
    assert capture.captures == kinds  # one graph per kind, each after its warm-up
    assert sum(step.eager_runs.values()) == kinds * cuda_graphs.WARMUP
    for key, value in tensors(eager).items():
        assert torch.equal(value, tensors(graphed)[key]), key
    assert torch.equal(eager.noise_generator.get_state(), graphed.noise_generator.get_state())


def test_the_linear_schedule_and_bf16_go_through_the_graph():
    """--lr-schedule linear: the rates live in tensors the graph reads, filled in place each iteration."""
    cfg = {**SMALL, "lr_schedule": "linear", "lr_decay_start": 0.0, "amp": "bf16"}
    eager, _ = train(cfg, "cpu")
    graphed, _ = train(cfg, "cpu", RecordNothing())
    rate = graphed.opt_g.param_groups[0]["lr"]
    assert torch.is_tensor(rate) and rate.item() == pytest.approx(cfg["lr_g"] / ITERATIONS)  # the last one
    for key, value in tensors(eager).items():  # the rate in float32 instead of a Python float: not bit for bit
        assert torch.allclose(value.float(), tensors(graphed)[key].float(), rtol=1e-4, atol=1e-6), key


def test_a_failed_capture_trains_on_eagerly_and_says_so_in_one_line(capsys):
    def failing(run, generators, optimizers, pool=None):
        raise RuntimeError("operation not permitted when stream is capturing\nmore detail")

    eager, _ = train(SMALL, "cpu")
    graphed, step = train(SMALL, "cpu", failing)
    lines = [line for line in capsys.readouterr().out.splitlines() if "CUDA graph" in line]
    assert lines == ["CUDA graph: the capture failed (operation not permitted when stream is capturing); "
                     "training goes on without it (--cuda-graph off skips the attempt)"]
    assert step.failed and not step.replays  # plain eager iterations from then on
    for key, value in tensors(eager).items():
        assert torch.equal(value, tensors(graphed)[key]), key


def test_a_short_batch_runs_eagerly_between_replays():
    """A folder's batch that lost an undecodable image does not fit the static buffers."""
    state = TrainState(SMALL, "cpu")
    step = cuda_graphs.CudaGraphed(Iteration(state, Distributed("cpu")), RecordNothing())
    faces = dataloader.ToyFaces(64, 32, 0)
    assert step.fits([faces[range(8)][0]]) and not step.fits([faces[range(7)][0]])
    assert step([faces[range(7)][0]]) == 7 and sum(step.eager_runs.values()) == 0


@needs_cuda
@pytest.mark.parametrize("name", CONFIGS)
def test_the_cuda_graph_iteration_equals_the_eager_one_on_a_gpu(name):
    """The same losses, weights and noise after the warm-up, the capture and the replays. Replays run the
    kernels the eager step ran, so the figures agree to float rounding (cuDNN picks its algorithms alike)."""
    cfg = {**SMALL, **CONFIGS[name]}
    torch.backends.cudnn.deterministic = True
    eager, _ = train(cfg, torch.device("cuda"))
    graphed, step = train(cfg, torch.device("cuda"), cuda_graphs.capture)
    assert not step.failed and len(step.replays) == (2 if cfg["r1"] else 1)
    for key, value in tensors(eager).items():
        assert torch.allclose(value.float(), tensors(graphed)[key].float(), rtol=1e-3, atol=1e-4), key
    assert torch.equal(eager.noise_generator.get_state(), graphed.noise_generator.get_state())


@needs_cuda
def test_a_capture_that_fails_on_a_gpu_leaves_a_run_that_trains_on(capsys):
    """A host sync inside the capture (not allowed) invalidates it: the line is printed, the generators are
    released from the failed capture, and the iterations go on eagerly, equal to an eager run."""
    def capture_with_a_sync(run, generators, optimizers, pool=None):
        def record():
            run()
            torch.ones(1, device="cuda").sum().item()
        return cuda_graphs.capture(record, generators, optimizers, pool)

    torch.backends.cudnn.deterministic = True
    eager, _ = train(SMALL, torch.device("cuda"))
    graphed, step = train(SMALL, torch.device("cuda"), capture_with_a_sync)
    assert step.failed and "CUDA graph: the capture failed" in capsys.readouterr().out
    assert torch.cuda.current_stream() == torch.cuda.default_stream()
    for key, value in tensors(eager).items():
        assert torch.allclose(value.float(), tensors(graphed)[key].float(), rtol=1e-3, atol=1e-4), key
    assert torch.equal(eager.noise_generator.get_state(), graphed.noise_generator.get_state())
    torch.randn(4, device="cuda")  # the default generator draws again


@needs_cuda
def test_train_py_on_a_gpu_logs_the_same_losses_with_and_without_the_graph(tmp_path):
    args = [arg for arg in TINY if arg not in ("--device", "cpu")] + ["--device", "cuda", "--max-steps", "10",
                                                                      "--amp", "off"]
    for mode in ("on", "off"):
        result = run_script("train.py", *args, "--cuda-graph", mode, "--run", mode, cwd=tmp_path)
        assert ("(CUDA graph" in result.stdout) == (mode == "on"), result.stdout
    rows = {mode: (tmp_path / "outputs" / mode / "metrics.csv").read_text().splitlines()[1:] for mode in ("on", "off")}
    for on, off in zip(rows["on"], rows["off"]):
        assert [float(v) for v in on.split(",")[2:6]] == pytest.approx([float(v) for v in off.split(",")[2:6]],
                                                                       rel=1e-3, abs=1e-4)
