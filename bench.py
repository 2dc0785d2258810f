"""Time DCGAN training iterations: FakeFaceGen's loop against the textbook loop, in one process, on one device.

    python bench.py                          # 64 and 128 px, batch 128, ngf = ndf = 64, on the default device
    python bench.py --res 64 --steps 10 --repeats 5 --device cpu --json bench.json

The textbook loop (the PyTorch DCGAN example): float images from a DataLoader whose workers normalise
them, default memory format, fp32, `.item()` on the losses every step. FakeFaceGen's loop: uint8 data
kept on the device and drawn by index, scaling on the device, the speed options that `auto` picks on this
device, and no host sync. Rows "fakefacegen ..." with an option switched show what each option is worth.
Each figure is the median over --repeats timings of --steps iterations, after --warmup iterations; the
loops are timed in turns, so a busy machine slows them alike. Peak RSS is the whole process's (and its
loader workers') while that loop ran, so it includes what earlier loops left allocated.
"""
import os
import statistics
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

import dataloader
from checkpoint import TrainState, make_optimizer
from cli import ArgumentParser, integer, resolve_device, run
from distributed import Distributed
from files import write_json
from network import RESOLUTIONS, models_from_config
from settings import BATCH_SIZE, DEFAULTS, WIDTH, WORKERS
from toyfaces import toyfaces
from training_step import TrainingStep, native_bf16, speed_settings, use_tf32


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


def time_rows(steps_by_label, steps, warmup, repeats, batch, device):
    """Median ms per iteration of each loop, timed in turns (loop A, B, C, A, B, C, ...) so that a busy
    machine slows every row alike, and the peak memory seen while each ran."""
    peaks = {label: {"rss": 0, "cuda": 0} for label in steps_by_label}
    timings = {label: [] for label in steps_by_label}
    for step in steps_by_label.values():
        for _ in range(warmup):
            step()
    for _ in range(repeats):
        for label, step in steps_by_label.items():
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(device)
            sync(device)
            start = time.perf_counter()
            for _ in range(steps):
                step()
                peaks[label]["rss"] = max(peaks[label]["rss"], rss_bytes())
            sync(device)
            timings[label].append((time.perf_counter() - start) / steps)
            if device.type == "cuda":
                peaks[label]["cuda"] = max(peaks[label]["cuda"], torch.cuda.max_memory_allocated(device))
    rows = {}
    for label, values in timings.items():
        ms = statistics.median(values) * 1000
        rows[label] = {"ms_per_step": ms, "images_per_s": batch / ms * 1000,
                       "peak_rss_mb": peaks[label]["rss"] / 2**20,
                       "peak_cuda_mb": peaks[label]["cuda"] / 2**20 if device.type == "cuda" else None}
    return rows


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
    """In-memory uint8 images behind dataloader.batch_loader, as a packed dataset would be."""

    def __init__(self, images):
        self.images = images

    def __len__(self):
        return len(self.images)

    def __getitem__(self, indices):
        return torch.from_numpy(self.images[np.asarray(indices)]), 0


def fast_runner(cfg, images, device, options, workers=2):
    """FakeFaceGen's loop as train.py runs it (the same TrainingStep), with `options` overriding the speed
    settings; returns (a function that runs one iteration, the speed settings it resolved to)."""
    cfg = {**cfg, **options}
    step = TrainingStep(TrainState(cfg, device), Distributed(str(device)))
    on_device = cfg["data_on_device"] == "on"
    device_images = torch.from_numpy(images).to(device) if on_device else None
    batches, epoch = iter(()), 0

    def one_iteration():
        nonlocal batches, epoch
        batch = next(batches, None)
        if batch is None:
            order = dataloader.epoch_batches(len(images), cfg["batch_size"], 0, epoch)
            epoch += 1
            batches = iter(dataloader.epoch_loader(ArrayImages(images), device_images, order, workers))
            batch = next(batches)
        step([batch[0]])
    return one_iteration, step.speed


def variants(device):
    """(label, options) for FakeFaceGen's loop: the defaults of this device, then each option switched."""
    auto = speed_settings({"channels_last": "auto", "amp": "auto"}, device)
    rows = [("fakefacegen (auto settings)", {})]
    rows.append((f"  channels_last {'off' if auto['channels_last'] else 'on'}",
                 {"channels_last": "off" if auto["channels_last"] else "on"}))
    if auto["amp"] or native_bf16(device):  # without native bf16 (AVX2 CPUs, older GPUs) it is emulated: slow
        rows.append((f"  bf16 autocast {'off' if auto['amp'] else 'on'}", {"amp": "off" if auto["amp"] else "bf16"}))
    rows.append(("  data through the loader", {"data_on_device": "off"}))
    return rows


def build_parser():
    p = ArgumentParser(description=__doc__)
    p.add_argument("--res", type=int, nargs="+", choices=RESOLUTIONS, default=[64, 128],
                   help="resolutions (default 64 128)")
    p.add_argument("--batch", type=BATCH_SIZE, default=128, help="batch size (default 128)")
    p.add_argument("--width", type=WIDTH, default=64, help="ngf = ndf (default 64)")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N | mps")
    p.add_argument("--steps", type=integer(1, 10_000), default=5, help="iterations per timing (default 5)")
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
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    print(f"device: {name}; torch {torch.__version__}; batch {args.batch}, ngf = ndf = {args.width}; "
          f"median of {args.repeats} x {args.steps} iterations after {args.warmup} warm-up")
    results = []
    for res in args.res:
        cfg = {**DEFAULTS, "res": res, "batch_size": args.batch, "ngf": args.width, "ndf": args.width,
               "data_on_device": "on"}
        images = toyfaces(range(args.batch * 4), res)[0]
        steps = {"textbook loop": naive_runner(cfg, images, device, args.workers)}
        steps.update({label: fast_runner(cfg, images, device, options, args.workers)[0]
                      for label, options in variants(device)})
        print(f"\n{res} px {'':20s} {'images/s':>10} {'ms/step':>9} {'peak RSS MB':>12} {'peak CUDA MB':>13} "
              f"{'vs textbook':>12}", flush=True)
        figures = time_rows(steps, args.steps, args.warmup, args.repeats, args.batch, device)
        baseline = figures["textbook loop"]["images_per_s"]
        for label, row in figures.items():
            row.update(res=res, loop=label.strip(), ratio=row["images_per_s"] / baseline)
            results.append(row)
            cuda = f"{row['peak_cuda_mb']:.0f}" if row["peak_cuda_mb"] is not None else "-"
            print(f"{label:28s} {row['images_per_s']:10.1f} {row['ms_per_step']:9.1f} {row['peak_rss_mb']:12.0f} "
                  f"{cuda:>13} {row['ratio']:11.2f}x", flush=True)
    write_json(args.json, {"device": name, "torch": torch.__version__, "batch": args.batch, "width": args.width,
                           "results": results})
    print(f"\nwrote {args.json}")


if __name__ == "__main__":
    run(main)
