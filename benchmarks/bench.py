"""Time DCGAN training iterations: FakeFaceGen's loop against the textbook loop, in one process, on one device.
Both run the seeds' DCGAN (no EMA of G, no minibatch std), which the textbook loop knows; one more row adds
what the default recipe adds (run it at --batch 64, the default's batch size, for the default's speed).

    python -m benchmarks.bench                 # 64 and 128 px, batch 128, ngf = ndf = 64, on the default device
    python -m benchmarks.bench --device cuda --steps 30 --warmup 10 --batch 64 128 256 512   # a batch sweep on a GPU
    python -m benchmarks.bench --res 64 --steps 10 --repeats 5 --device cpu --json bench.json
    python -m benchmarks.bench --res 64 --batch 64 128   # the default recipe (batch 64) against the seeds' DCGAN

The textbook loop (the PyTorch DCGAN example): float images from a DataLoader whose workers normalise
them, default memory format, fp32, `.item()` on the losses every step. FakeFaceGen's loop: uint8 data
kept on the device and drawn by index, scaling on the device, the speed options that `auto` picks on this
device (on CUDA: the iteration replayed as a CUDA graph), and no host sync. Rows "fakefacegen ..." with an
option switched show what each option is worth, so that `auto` can be checked against them. Each figure is
the median over --repeats timings of --steps iterations (default 64 on a GPU, 16 on a CPU; always whole
epochs of 16 batches, so every window holds as many epoch starts), after --warmup iterations (at least enough
for the CUDA graph to be captured, so no row times a capture), with the spread over the repeats ((max - min) /
median); the loops are timed in turns, so a busy machine slows them alike, and nothing but the loop is inside
a timed window. Memory is each loop's own: what building it allocated, plus the most it allocated while it
ran (on CUDA, from the allocator; RSS, from /proc after each window, with its loader workers). The last line
projects the auto row's speed onto 25 epochs of all of CelebA.
"""
import gc
import os
import statistics
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from fakefacegen.cli import ArgumentParser, integer, resolve_device, run
from fakefacegen.data import dataloader
from fakefacegen.data.toyfaces import toyfaces
from fakefacegen.files import write_json
from fakefacegen.network import RESOLUTIONS, models_from_config
from fakefacegen.settings import BATCH_SIZE, DEFAULTS, SEEDS_DCGAN, WIDTH, WORKERS
from fakefacegen.training.cuda_graphs import WARMUP, CudaGraphed
from fakefacegen.training.distributed import Distributed
from fakefacegen.training.iteration import Iteration
from fakefacegen.training.speed import describe_speed, native_bf16, speed_settings, use_tf32
from fakefacegen.training.state import TrainState, make_optimizer

CELEBA_IMAGES = 202_599 * 25  # 25 epochs of all of CelebA, for the projection
BATCHES_PER_EPOCH = 16  # the loaders start a new pass this often, as a run does at each epoch


class NormalisedImages(torch.utils.data.Dataset):
    """The textbook dataset: one image at a time, turned into a normalised float tensor in the worker."""

    def __init__(self, images):
        self.images = images

    def __len__(self):
        return len(self.images)

    def __getitem__(self, i):
        x = torch.from_numpy(self.images[i]).permute(2, 0, 1).float().div(255)  # ToTensor
        return (x - 0.5) / 0.5  # Normalize((0.5,) * 3, (0.5,) * 3)


def naive_iteration(G, D, opt_g, opt_d, real, z):
    """The PyTorch DCGAN example's step (with D returning logits), reading every loss back to the host."""
    D.zero_grad()
    out_real = D(real)
    err_real = F.binary_cross_entropy_with_logits(out_real, torch.ones_like(out_real))
    err_real.backward()
    fake = G(z)
    out_fake = D(fake.detach())
    err_fake = F.binary_cross_entropy_with_logits(out_fake, torch.zeros_like(out_fake))
    err_fake.backward()
    opt_d.step()
    G.zero_grad()
    out = D(fake)
    err_g = F.binary_cross_entropy_with_logits(out, torch.ones_like(out))
    err_g.backward()
    opt_g.step()
    return (err_real + err_fake).item(), err_g.item(), torch.sigmoid(out_real).mean().item(), \
        torch.sigmoid(out_fake).mean().item()


def rss_bytes(pid="self"):
    """Resident memory of a process and its children (the loader's workers), from /proc."""
    try:
        total = int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE")
        real_pid = os.getpid() if pid == "self" else pid
        children = Path(f"/proc/{real_pid}/task/{real_pid}/children").read_text().split()
    except OSError:
        return 0
    return total + sum(rss_bytes(child) for child in children)


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def cuda_allocated(device):
    return torch.cuda.memory_allocated(device) if device.type == "cuda" else 0


def time_rows(runners, steps, warmup, repeats, batch, device):
    """Median ms per iteration of each loop, timed in turns (loop A, B, C, A, B, C, ...) so that a busy
    machine slows every row alike, with the spread over the repeats and each loop's own memory: `runners`
    maps a label to (its step function, the bytes of RSS and of CUDA memory its building took)."""
    timings = {label: [] for label in runners}
    grown = {label: {"rss": 0, "cuda": 0} for label in runners}  # the most a loop added while it ran
    for step, _ in runners.values():
        for _ in range(warmup):
            step()
    for _ in range(repeats):
        for label, (step, _) in runners.items():
            sync(device)
            rss_before, cuda_before = rss_bytes(), cuda_allocated(device)
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(device)
            start = time.perf_counter()
            for _ in range(steps):
                step()
            sync(device)
            timings[label].append((time.perf_counter() - start) / steps)
            grown[label]["rss"] = max(grown[label]["rss"], rss_bytes() - rss_before)
            if device.type == "cuda":
                grown[label]["cuda"] = max(grown[label]["cuda"], torch.cuda.max_memory_allocated(device) - cuda_before)
    rows = {}
    for label, values in timings.items():
        ms, built = statistics.median(values) * 1000, runners[label][1]
        rows[label] = {"ms_per_step": ms, "images_per_s": batch / ms * 1000,
                       "spread": (max(values) - min(values)) / statistics.median(values),
                       "rss_mb": (built["rss"] + grown[label]["rss"]) / 2**20,
                       "cuda_mb": (built["cuda"] + grown[label]["cuda"]) / 2**20 if device.type == "cuda" else None}
    return rows


def built(make, device):
    """(what make() returns, the RSS and CUDA bytes that building it took)."""
    sync(device)
    rss, cuda = rss_bytes(), cuda_allocated(device)
    runner = make()
    sync(device)
    return runner, {"rss": max(rss_bytes() - rss, 0), "cuda": cuda_allocated(device) - cuda}


def naive_runner(cfg, images, device, workers):
    G, D = models_from_config(cfg, device)
    opt_g, opt_d = make_optimizer(G.parameters(), cfg, cfg["lr_g"]), make_optimizer(D.parameters(), cfg, cfg["lr_d"])
    loader = torch.utils.data.DataLoader(NormalisedImages(images), batch_size=cfg["batch_size"], shuffle=True,
                                         drop_last=True, num_workers=workers, persistent_workers=workers > 0)
    batches = iter(())

    def step():
        nonlocal batches
        real = next(batches, None)
        if real is None:
            batches = iter(loader)
            real = next(batches)
        naive_iteration(G, D, opt_g, opt_d, real.to(device), torch.randn(cfg["batch_size"], cfg["nz"], device=device))
    return step


class ArrayImages:
    """In-memory uint8 images behind dataloader.BatchLoader, as a packed dataset would be."""

    def __init__(self, images):
        self.images = images

    def __len__(self):
        return len(self.images)

    def __getitem__(self, indices):
        return torch.from_numpy(self.images[np.asarray(indices)]), 0


def fast_runner(cfg, images, device, options, workers=2):
    """FakeFaceGen's loop as train.py runs it (the same Iteration, graphed where train.py graphs it, and
    loaders), with `options` overriding the speed settings; returns (a function that runs one iteration, the
    speed settings it resolved to)."""
    cfg = {**cfg, **options}
    step = Iteration(TrainState(cfg, device), Distributed(str(device)))
    if step.speed["cuda_graph"]:
        step = CudaGraphed(step)
    on_device = cfg["data_on_device"] == "on"
    device_images = torch.from_numpy(images).to(device) if on_device else None
    loader = None if on_device else dataloader.BatchLoader(ArrayImages(images), workers)
    batches, epoch = iter(()), 0

    def one_iteration():
        nonlocal batches, epoch
        batch = next(batches, None)
        if batch is None:
            order = dataloader.epoch_batches(len(images), cfg["batch_size"], 0, epoch)
            epoch += 1
            batches = iter(dataloader.epoch_loader(device_images, loader, order))
            batch = next(batches)
        step([batch[0]])
    return one_iteration, step.speed


def variants(device):
    """(label, options) for FakeFaceGen's loop: the defaults of this device, then each option switched."""
    auto = speed_settings(DEFAULTS, device)
    rows = [(f"fakefacegen ({describe_speed(auto)})", {})]
    if auto["cuda_graph"]:  # and what `auto` picks without it: eager steps
        eager = speed_settings({**DEFAULTS, "cuda_graph": "off"}, device)
        rows.append((f"  cuda graph off ({describe_speed(eager)})", {"cuda_graph": "off"}))
    rows.append((f"  channels_last {'off' if auto['channels_last'] else 'on'}",
                 {"channels_last": "off" if auto["channels_last"] else "on"}))
    if auto["amp"] or native_bf16(device):  # without native bf16 (AVX2 CPUs, older GPUs) it is emulated: slow
        rows.append((f"  bf16 autocast {'off' if auto['amp'] else 'on'}", {"amp": "off" if auto["amp"] else "bf16"}))
    rows.append(("  data through the loader", {"data_on_device": "off"}))
    recipe = {key: DEFAULTS[key] for key in SEEDS_DCGAN if key != "batch_size"}  # batch size is --batch's
    rows.append(("  + the default recipe's EMA of G and minibatch std", recipe))
    return rows


def build_parser():
    p = ArgumentParser(prog="python -m benchmarks.bench", description=__doc__)
    p.add_argument("--res", type=int, nargs="+", choices=RESOLUTIONS, default=[64, 128],
                   help="resolutions (default 64 128)")
    p.add_argument("--batch", type=BATCH_SIZE, nargs="+", default=[128], help="batch sizes (default 128; several "
                   "give a sweep)")
    p.add_argument("--width", type=WIDTH, default=64, help="ngf = ndf (default 64)")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N | mps")
    p.add_argument("--steps", type=integer(1, 10_000), help=f"iterations per timing, rounded up to whole epochs of "
                   f"{BATCHES_PER_EPOCH} batches (default 64 on a GPU, 16 on a CPU)")
    p.add_argument("--warmup", type=integer(0, 10_000), default=2, help="iterations before timing (default 2)")
    p.add_argument("--repeats", type=integer(1, 1000), default=3,
                   help="timings per row; the median is shown (default 3)")
    p.add_argument("--workers", type=WORKERS, default=2, help="DataLoader workers of the textbook loop (default 2)")
    p.add_argument("--json", default="outputs/bench.json", help="where to write the table as JSON")
    return p


def main(argv=None):
    args = build_parser().parse_args(argv)
    device = resolve_device(args.device)
    use_tf32(device)  # for the textbook loop too: both run under the same settings
    warmup = max(args.warmup, WARMUP + 1) if device.type == "cuda" else args.warmup
    wanted = args.steps or (64 if device.type == "cuda" else BATCHES_PER_EPOCH)
    args.steps = -(-wanted // BATCHES_PER_EPOCH) * BATCHES_PER_EPOCH  # whole epochs
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    print(f"device: {name}; torch {torch.__version__}; ngf = ndf = {args.width}; "
          f"median of {args.repeats} x {args.steps} iterations after {warmup} warm-up")
    results = []
    for res in args.res:
        # Rendered once per resolution: each size takes the first batch x BATCHES_PER_EPOCH of them
        images = toyfaces(range(max(args.batch) * BATCHES_PER_EPOCH), res)[0]
        for batch in args.batch:
            results += bench_size(res, batch, images[:batch * BATCHES_PER_EPOCH], args, device, warmup)
            # A size's models, optimisers and graph pool sit in reference cycles, and torch 2.14's capture no
            # longer collects them: without this each size's memory stays until the collector happens to run.
            gc.collect()
            if device.type == "cuda":
                torch.cuda.empty_cache()
            # Rewritten after every size, so a sweep cut off by a time limit keeps the sizes it measured.
            write_json(args.json, {"device": name, "torch": torch.__version__, "width": args.width,
                                   "results": results})
    auto = max((row for row in results if row["loop"].startswith("fakefacegen (")), key=lambda r: r["images_per_s"])
    print(f"\n25 epochs of all of CelebA ({CELEBA_IMAGES:,} images) at {auto['res']} px, batch {auto['batch']}: "
          f"{CELEBA_IMAGES / auto['images_per_s'] / 60:.1f} minutes of training at the fastest auto row's "
          f"{auto['images_per_s']:,.0f} img/s")
    print(f"wrote {args.json}")


def bench_size(res, batch, images, args, device, warmup):
    """The table of one resolution and batch size on `images` (an epoch of uint8 faces): each loop's row, printed
    as it is measured."""
    cfg = {**DEFAULTS, **SEEDS_DCGAN, "res": res, "batch_size": batch, "ngf": args.width, "ndf": args.width,
           "data_on_device": "on"}
    runners = {"textbook loop": built(lambda: naive_runner(cfg, images, device, args.workers), device)}
    for label, options in variants(device):
        (one_iteration, _), cost = built(lambda options=options: fast_runner(cfg, images, device, options,
                                                                             args.workers), device)
        runners[label] = one_iteration, cost
    label_width = max(len(label) for label in runners) + 1
    print(f"\n{f'{res} px, batch {batch}':{label_width}s} {'images/s':>10} {'spread':>7} {'ms/step':>9} "
          f"{'RSS MB':>8} {'CUDA MB':>8} {'vs textbook':>12}", flush=True)
    figures = time_rows(runners, args.steps, warmup, args.repeats, batch, device)
    baseline = figures["textbook loop"]["images_per_s"]
    rows = []
    for label, row in figures.items():
        row.update(res=res, batch=batch, loop=label.strip(), ratio=row["images_per_s"] / baseline)
        rows.append(row)
        cuda = f"{row['cuda_mb']:.0f}" if row["cuda_mb"] is not None else "-"
        print(f"{label:{label_width}s} {row['images_per_s']:10.1f} {100 * row['spread']:6.1f}% "
              f"{row['ms_per_step']:9.1f} {row['rss_mb']:8.0f} {cuda:>8} {row['ratio']:11.2f}x", flush=True)
    return rows


if __name__ == "__main__":
    run(main)
