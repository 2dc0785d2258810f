"""train.py's collapse checks on saved checkpoints: each checkpoint's 64 fixed-noise samples against 64 images of
its training data, measured as metrics/collapse.py measures them when a run writes a checkpoint.

    python -m benchmarks.collapse_signs checkpoints/<run>/epoch_*.pt        # against the run's own --data
    python -m benchmarks.collapse_signs --data data/protocol/celeba128-train checkpoints/<run>/*.pt

For each checkpoint: the images D had seen, the samples' pixel spread against the data's (a collapse below 25%),
their crowding on Inception features (their median distance to the nearest other sample over the training images';
a collapse below 0.8x), the share of samples with a near twin, and the warning these signs give (train.py gives it
from 50,000 images on: a new G draws one blur). docs/training.md's table of healthy and collapsed runs was made
with it.
"""
import fakefacegen  # noqa: F401  (first: an older Python stops there with one line)

# isort: split
from pathlib import Path

from fakefacegen.checkpoint import generator_from_state, load_checkpoint
from fakefacegen.cli import ArgumentParser, resolve_device, run
from fakefacegen.data.dataloader import open_dataset
from fakefacegen.metrics.collapse import CollapseWatch, data_sample, spread
from fakefacegen.sampling import render


def build_parser():
    p = ArgumentParser(description=__doc__)
    p.add_argument("checkpoints", nargs="+", help="training checkpoints (.pt) of one or more runs")
    p.add_argument("--data", help="the training data to compare with (default: each checkpoint's own --data)")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N | mps")
    return p


def signs(path, watches, data, device):
    """One line of the table for one checkpoint; `watches` keeps one CollapseWatch per dataset (its training
    images' Inception features are computed once)."""
    ckpt = load_checkpoint(path, device)
    cfg = ckpt["config"]
    source = data or cfg["data"]
    if (source, cfg["res"]) not in watches:
        dataset = open_dataset(source, cfg["res"], cfg["seed"], cfg["toy_size"])
        watches[source, cfg["res"]] = CollapseWatch(data_sample(dataset, cfg["seed"]), cfg["loss"], device)
    watch = watches[source, cfg["res"]]
    samples = render(generator_from_state(ckpt, path, device), ckpt["fixed_noise"], device)
    images = int(ckpt["step"]) * cfg["batch_size"] * cfg["d_steps"]
    found = watch.warnings(samples, [], max(images, 10**12), measure_repeats=True)  # judged whatever the images
    repeats = watch.repeats or {"nearest_ratio": float("nan"), "repeated": float("nan")}
    return (f"{path.parent.name + '/' + path.name:<40} {images:>11,} {spread(samples) / watch.data_spread:>7.0%} "
            f"{repeats['nearest_ratio']:>8.2f}x {repeats['repeated']:>7.0%}  {', '.join(found) or '-'}")


def main(argv=None):
    args = build_parser().parse_args(argv)
    device, watches = resolve_device(args.device), {}
    print(f"{'checkpoint':<40} {'images seen':>11} {'spread':>7} {'crowding':>9} {'twins':>7}  warning")
    for path in args.checkpoints:
        print(signs(Path(path), watches, args.data, device), flush=True)


if __name__ == "__main__":
    run(main)
