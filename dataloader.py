"""The data a run trains on, read as train.py reads it (fakefacegen/data/): how many images, where the batches
come from and how fast, and a grid of the first batch as D sees it (--flip and --diffaug applied).

    python dataloader.py --data data/celeba64 --res 64          # a dataset made by preprocess.py
    python dataloader.py --config configs/anime64.toml --batches 50
    python dataloader.py --data path/to/photos --res 64 --workers 4 --out outputs/batch.png

Every train.py flag means the same here; the grid goes to --out (default outputs/<data name>-batch.png).
"""
import fakefacegen  # noqa: F401  (first: an older Python stops there with one line)

# isort: split
import time
from pathlib import Path

import torch
from tqdm import tqdm

from fakefacegen.cli import UserError, run
from fakefacegen.data.dataloader import open_dataset, to_model_input
from fakefacegen.data.training_data import TrainingData
from fakefacegen.files import save_png
from fakefacegen.grids import grid_image
from fakefacegen.settings import parse_settings
from fakefacegen.training import diffaug
from fakefacegen.training.distributed import Distributed

__all__ = ["TrainingData", "open_dataset", "to_model_input"]  # `from dataloader import ...` in a notebook


def add_own_flags(add):
    add("--batches", type=int, default=20, help="batches to time (default 20)")
    add("--out", help="the grid of the first batch (default outputs/<data name>-batch.png)")


def as_d_sees_it(images, cfg, device):
    """uint8 images as D's input: flipped at random with --flip, transformed with --diffaug, back to uint8."""
    generator = torch.Generator(device).manual_seed(cfg["seed"])
    flips = torch.rand(len(images), generator=generator, device=device) < 0.5 if cfg["flip"] else None
    x = to_model_input(images, device, flips)
    x = diffaug.augment(x, diffaug.parse_policy(cfg["diffaug"]), generator)
    return x.add(1).mul(127.5).round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()


def timed_batches(data, count):
    """(the first batch, batches read, images per second) over up to `count` batches of the first epoch."""
    _, groups = data.epoch(0, 0)
    batches, start = [], time.perf_counter()
    for group in tqdm(groups, total=count, desc="batches", unit="batch", leave=False):
        batches += group
        if len(batches) >= count:
            break
    rate = sum(len(batch) for batch in batches) / (time.perf_counter() - start)
    return batches[0], len(batches), rate


def main(argv=None):
    cfg, _ = parse_settings(argv, __doc__, add_own_flags)
    if cfg["batches"] < 1:
        raise UserError(f"--batches must be at least 1, not {cfg['batches']}")
    world = Distributed(cfg["device"])
    data = TrainingData(cfg, world)
    first, read, rate = timed_batches(data, cfg["batches"])
    out = Path(cfg["out"] or f"outputs/{Path(str(cfg['data'])).name}-batch.png")
    save_png(grid_image(as_d_sees_it(first, cfg, world.device)), out)
    print(f"{data.description}: {len(data.dataset)} images, batches of {cfg['batch_size']}; "
          f"{rate:.0f} images/s over {read} batches; the first batch as D sees it: {out}")
    if cfg["ada_target"]:
        print("with --ada-target each transform applies with a probability that starts at 0 and follows D's "
              "overfitting; the grid shows them all applied")


if __name__ == "__main__":
    run(main)
