"""The training iteration as a CUDA graph: recorded once after a few eager iterations, then replayed.

A 64 px DCGAN iteration at batch 128 launches about a thousand small kernels, and on a fast GPU launching
them takes longer than running them. A CUDA graph records the launches once and replays them all with one.
A replay reads and writes the very memory the capture saw, so everything that changes from one iteration
to the next must sit in tensors the graph knows: the batches are copied into static buffers before each
replay, and what the caller varies (learning rates, the EMA's weight) it keeps in device tensors. Random
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


class GraphedIteration:
    """Runs `iteration(batches)` over static uint8 buffers: eagerly for the first WARMUP iterations of each
    kind, then as a replay of the graph recorded at the next one. A kind names what changes the iteration's
    kernels (which D updates carry lazy R1): each kind has its own graph. If a capture fails, every
    iteration from then on runs eagerly (the graphs recorded before are dropped), and one line says why."""

    def __init__(self, iteration, batches_shape, device, generators, optimizers, capture=capture, warmup=WARMUP):
        """batches_shape: (D updates per iteration, batch, H, W, 3); capture: how an iteration is recorded
        (the tests pass one that works on a CPU)."""
        self.iteration, self.generators, self.optimizers = iteration, generators, optimizers
        self.inputs = torch.empty(batches_shape, dtype=torch.uint8, device=device)
        self.capture, self.warmup = capture, warmup
        self.replays, self.eager_runs, self.failed = {}, collections.Counter(), False
        self.side_stream = torch.cuda.Stream(device) if self.inputs.is_cuda else None
        # One memory pool for every kind's graph: a pool per graph would hold each one's activations apart.
        self.pool = torch.cuda.graph_pool_handle() if self.inputs.is_cuda else None

    def fits(self, batches):
        """Whether these batches fill the buffers exactly (a folder's batch that lost an undecodable image
        does not, and runs eagerly)."""
        return len(batches) == len(self.inputs) and all(b.shape == self.inputs.shape[1:] for b in batches)

    def __call__(self, batches, kind=()):
        for buffer, batch in zip(self.inputs, batches):
            buffer.copy_(batch, non_blocking=True)
        if kind not in self.replays and not self.failed and self.eager_runs[kind] >= self.warmup:
            self.replays[kind] = self.record()
        replay = self.replays.get(kind)
        if replay is not None:
            replay()
        else:
            self.eager_runs[kind] += 1
            self.run_eagerly()

    def run(self):
        self.iteration(list(self.inputs))

    def run_eagerly(self):
        """On a side stream on CUDA, as PyTorch asks of the iterations before a capture."""
        if self.side_stream is None:
            return self.run()
        main = torch.cuda.current_stream(self.inputs.device)  # this run's device, whichever is current
        self.side_stream.wait_stream(main)
        with torch.cuda.stream(self.side_stream):
            self.run()
        main.wait_stream(self.side_stream)

    def record(self):
        """The replay of a new capture, or None (and eager iterations from now on) if it failed."""
        try:
            return self.capture(self.run, self.generators, self.optimizers, self.pool)
        except Exception as err:  # any failure to record means: train on without the graph
            self.failed, self.replays = True, {}
            if self.inputs.is_cuda:
                release(self.generators)
            reason = (str(err).strip().splitlines() or [type(err).__name__])[0][:200]
            tqdm.write(f"CUDA graph: the capture failed ({reason}); training goes on without it "
                       "(--cuda-graph off skips the attempt)")
            return None
