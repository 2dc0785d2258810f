"""train.py's collapse checks on saved checkpoints: each checkpoint's 64 fixed-noise samples against 64 images of
its training data, measured as metrics/collapse.py measures them at every save.

    python -m benchmarks.collapse_signs checkpoints/<run>/epoch_*.pt        # against the run's own --data
    python -m benchmarks.collapse_signs --data data/protocol/celeba128-train checkpoints/<run>/*.pt
    python -m benchmarks.collapse_signs --inception ...                    # also the crowding of Inception features

For each checkpoint: the images D had seen, the samples' pixel spread against the data's (a collapse below 25%),
their crowding (colour aside, their median distance to the nearest other sample over the training images'; a
collapse below 0.72x), the share of samples with a near twin, and the warning these signs give (train.py gives it
from 50,000 images on: a new G draws one blur). --inception adds the crowding and twins of the same images on
Inception features, which the check was measured against. docs/training.md's table of healthy and collapsed runs
was made with it.
"""
import fakefacegen  # noqa: F401  (first: an older Python stops there with one line)

# isort: split
from pathlib import Path

from fakefacegen.checkpoint import generator_from_state, load_checkpoint
from fakefacegen.cli import ArgumentParser, UserError, resolve_device, run
from fakefacegen.data.dataloader import open_dataset
from fakefacegen.metrics.collapse import CollapseWatch, data_sample, spread
from fakefacegen.metrics.inception import features_of_images, load_inception
from fakefacegen.metrics.repeated_faces import repeated_faces
from fakefacegen.sampling import render


def build_parser():
    p = ArgumentParser(description=__doc__)
    p.add_argument("checkpoints", nargs="+", help="training checkpoints (.pt) of one or more runs")
    p.add_argument("--data", help="the training data to compare with (default: each checkpoint's own --data)")
    p.add_argument("--inception", action="store_true", help="also the crowding on Inception features")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N | mps")
    return p


def signs(path, watches, data, device, inception):
    """One line of the table for one checkpoint; `watches` keeps one CollapseWatch (and the Inception features)
    per dataset."""
    ckpt = load_checkpoint(path, device)
    if "fixed_noise" not in ckpt:
        raise UserError(f"{path} is an exported generator: give a training checkpoint (checkpoints/<run>/*.pt)")
    cfg = ckpt["config"]
    key = (data or cfg["data"], cfg["res"])
    if key not in watches:
        real = data_sample(open_dataset(key[0], cfg["res"], cfg["seed"], cfg["toy_size"]), cfg["seed"])
        watches[key] = (CollapseWatch(real, cfg["loss"]), inception and features_of_images(inception, [real], device))
    watch, real_features = watches[key]
    samples = render(generator_from_state(ckpt, path, device), ckpt["fixed_noise"], device)
    images = int(ckpt["step"]) * cfg["batch_size"] * cfg["d_steps"]
    crowding, found = watch.crowding(samples), watch.warnings(samples, [], float("inf"))  # judged whatever the images
    line = (f"{path.parent.name + '/' + path.name:<40} {images:>11,} {spread(samples) / watch.data_spread:>7.0%} "
            f"{crowding['nearest_ratio']:>8.2f}x {crowding['repeated']:>7.0%}")
    if inception:
        on_features = repeated_faces(real_features, features_of_images(inception, [samples], device))
        line += f" {on_features['nearest_ratio']:>8.2f}x {on_features['repeated']:>7.0%}"
    return f"{line}  {', '.join(found) or '-'}"


def main(argv=None):
    args = build_parser().parse_args(argv)
    missing = [path for path in args.checkpoints if not Path(path).is_file()]
    if missing:
        raise UserError(f"checkpoint {missing[0]} not found: pass files from checkpoints/<run>/")
    device, watches = resolve_device(args.device), {}
    inception = load_inception(device) if args.inception else None
    extra = f" {'Inception':>9} {'twins':>7}" if inception else ""
    print(f"{'checkpoint':<40} {'images seen':>11} {'spread':>7} {'crowding':>9} {'twins':>7}{extra}  warning")
    for path in args.checkpoints:
        print(signs(Path(path), watches, args.data, device, inception), flush=True)


if __name__ == "__main__":
    run(main)
