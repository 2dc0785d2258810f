"""The training iteration as a CUDA graph: recorded once after a few eager iterations, then replayed.

A 64 px DCGAN iteration at batch 128 launches about a thousand small kernels, and on a fast GPU launching
them takes longer than running them. A CUDA graph records the launches once and replays them all with one.
A replay reads and writes the very memory the capture saw, so everything that changes from one iteration
to the next must sit in tensors the graph knows: the batches are copied into static buffers before each
replay, and the iteration's schedule (learning rates, the EMA's weight) into device tensors. Random
draws come from generators registered with the graph: each replay draws from the generator's state at that
moment and moves it on by what the iteration used, as an eager iteration would, so a seed gives the same
noise, flips and augmentations with or without the graph, and checkpoints save the generator as before.

PyTorch's guide to this is "CUDA Graphs" in its CUDA semantics notes (whole-network capture).
"""
import collections
import contextlib
import warnings

import torch
from tqdm import tqdm

# Eager iterations of each kind before its capture: cuDNN and cuBLAS set up their handles and workspaces,
# and the optimisers create their state, outside the graph (PyTorch's guide warms up for 3).
WARMUP = 3


def capture(record, generators, optimizers, pool=None):
    """The CUDA work of record() as a graph (recording runs nothing), its memory in `pool` (shared by the graphs
    of one run: they never replay at once); returns the function that replays it."""
    graph = torch.cuda.CUDAGraph()
    with warnings.catch_warnings():  # torch 2.14 registers every generator itself and says so once
        warnings.filterwarnings("ignore", message=r"CUDAGraph\.register_generator_state\(\) is deprecated")
        for generator in generators:
            graph.register_generator_state(generator)
    # The outer stream context puts the current stream back even when a failed capture_end skips the graph's
    # own. thread_local: the loader's pin-memory thread may allocate pinned memory while this thread records.
    with torch.cuda.stream(torch.cuda.current_stream()), capturable(optimizers), \
            torch.cuda.graph(graph, pool=pool, capture_error_mode="thread_local"):
        record()
    return graph.replay


def release(generators):
    """After a failed capture, CUDA generators (and the device's default one) go on from the state they have,
    no longer marked as capturing: in torch 2.11 a capture that failed left that mark, and every later draw
    refused to run."""
    devices = {generator.device for generator in generators if generator.device.type == "cuda"}
    defaults = [torch.cuda.default_generators[torch.cuda.current_device() if device.index is None else device.index]
                for device in devices]
    for generator in [g for g in generators if g.device.type == "cuda"] + defaults:
        fresh = torch.Generator(generator.device)
        fresh.set_state(generator.get_state())
        generator.graphsafe_set_state(fresh)


@contextlib.contextmanager
def capturable(optimizers):
    """Optimisers say capturable=True while they are recorded, and keep their step counters on the device,
    where replays advance them. Outside the capture they step as before: fused Adam computes the same
    either way, and eager steps are spared the capturable path's slower code and its warning."""
    groups = [group for optimizer in optimizers for group in optimizer.param_groups if "capturable" in group]
    for optimizer in optimizers:
        for param, state in optimizer.state.items():
            # RMSprop keeps its step count on the CPU
            if torch.is_tensor(state.get("step")) and state["step"].device != param.device:
                state["step"] = state["step"].to(param.device)
    for group in groups:
        group["capturable"] = True
    try:
        yield
    finally:
        for group in groups:
            group["capturable"] = False


class CudaGraphed:
    """An Iteration (iteration.py) replayed as CUDA graphs: called as the iteration is, with d_steps uint8
    batches. The batches are copied into static buffers, the schedule's values (learning rates, the EMA's
    weight) into 0-dim device tensors that the recorded iteration reads (fused Adam takes a tensor learning
    rate), and the iteration runs eagerly for the first WARMUP iterations of each kind, then as a replay of the
    graph recorded at the next one. A kind names what changes the iteration's kernels (which D updates carry
    lazy R1): each kind has its own graph. Batches that do not fill the buffers (a folder's batch that lost an
    undecodable image) run eagerly. If a capture fails, every iteration from then on runs eagerly (the graphs
    recorded before are dropped), and one line says why. The iteration holds nothing of this wrapper."""

    def __init__(self, iteration, capture=capture, warmup=WARMUP):
        """capture: how an iteration is recorded (the tests pass one that works on a CPU)."""
        state, cfg = iteration.state, iteration.cfg
        self.iteration, self.capture, self.warmup = iteration, capture, warmup
        self.generators, self.optimizers = [state.noise_generator], [state.opt_g, state.opt_d]
        shape = (cfg["d_steps"], cfg["batch_size"] // iteration.world.size, cfg["res"], cfg["res"], 3)
        self.inputs = torch.empty(shape, dtype=torch.uint8, device=iteration.device)
        lr_g, lr_d, ema_weight = iteration.schedule()
        self.values = [None if value is None else torch.tensor(float(value), device=iteration.device)
                       for value in (lr_g, lr_d, ema_weight)]
        self.replays, self.eager_runs, self.failed = {}, collections.Counter(), False
        self.side_stream = torch.cuda.Stream(iteration.device) if self.inputs.is_cuda else None
        # One memory pool for every kind's graph: a pool per graph would hold each one's activations apart.
        self.pool = torch.cuda.graph_pool_handle() if self.inputs.is_cuda else None

    @property
    def speed(self):
        return self.iteration.speed

    def fits(self, batches):
        return len(batches) == len(self.inputs) and all(b.shape == self.inputs.shape[1:] for b in batches)

    def __call__(self, batches):
        if self.failed or not self.fits(batches):
            return self.iteration(batches)
        for buffer, batch in zip(self.inputs, batches):
            buffer.copy_(batch, non_blocking=True)
        for held, value in zip(self.values, self.iteration.schedule()):
            if held is not None:
                held.fill_(value)
        kind = self.iteration.kind()
        if kind not in self.replays and self.eager_runs[kind] >= self.warmup:
            self.record(kind)
        if kind in self.replays:
            self.replays[kind]()
        elif not self.failed:
            self.eager_runs[kind] += 1
            self.run_eagerly()
        else:  # the capture just failed: this iteration runs as every later one will
            return self.iteration(batches)
        return sum(len(images) for images in batches) * self.iteration.world.size

    def run(self):
        self.iteration.run(list(self.inputs), *self.values)

    def run_eagerly(self):
        """On a side stream on CUDA, as PyTorch asks of the iterations before a capture."""
        if self.side_stream is None:
            return self.run()
        main = torch.cuda.current_stream(self.inputs.device)  # this run's device, whichever is current
        self.side_stream.wait_stream(main)
        with torch.cuda.stream(self.side_stream):
            self.run()
        main.wait_stream(self.side_stream)

    def record(self, kind):
        """A new capture for this kind of iteration; if it fails, eager iterations from now on."""
        try:
            self.replays[kind] = self.capture(self.run, self.generators, self.optimizers, self.pool)
        except Exception as err:  # any failure to record means: train on without the graph
            self.failed, self.replays, self.inputs, self.side_stream = True, {}, self.inputs[:0], None
            if self.iteration.device.type == "cuda":
                release(self.generators)
            self.restore_learning_rates()
            self.iteration.without_graph()
            reason = (str(err).strip().splitlines() or [type(err).__name__])[0][:200]
            tqdm.write(f"CUDA graph: the capture failed ({reason}); training goes on without it "
                       "(--cuda-graph off skips the attempt)")

    def restore_learning_rates(self):
        """The optimisers' rates as numbers again, as eager iterations hold them."""
        for optimizer in self.optimizers:
            for group in optimizer.param_groups:
                if torch.is_tensor(group["lr"]):
                    group["lr"] = group["lr"].item()
