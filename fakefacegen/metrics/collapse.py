"""Telling a run that has collapsed, so that train.py's log and report.html can say so with what to try.

Two signs, each cheap and read from what a run has anyway:
- the samples stopped varying: the 64 fixed-noise samples of a save differ from one another far less than
  64 training images do (mode collapse: one face, or a few, whatever the noise);
- D wins outright: for many iterations in a row it tells every real image from every fake one, so G's
  gradient carries little (D(x) near 1 and D(G(z)) near 0; hinge: both past the margins).
"""
import numpy as np

from fakefacegen.runs import loss_rows

SPREAD_CELLS = 8  # images compared as 8x8 cell means: faces differ in pose, hair, skin and background
SPREAD_FLOOR = 0.25  # samples varying under a quarter as much as the data have collapsed (docs/training.md)
SPREAD_IMAGES = 64  # real images the data's spread is measured on, as many as the grid has samples
# A new G draws nearly the same blur for every noise: a healthy toy-face run's samples vary 9% as much as the data
# after 6k images, 25% after 19k, 44% after 25k, 67% after 50k. Their spread is judged from 50k images on.
SPREAD_AFTER_IMAGES = 50_000
SEPARATED_ITERATIONS = 500  # D winning outright for this many iterations in a row is no passing phase
SEPARATED = {"bce": (0.95, 0.05), "hinge": (1.0, -1.0)}  # D(x) above, D(G(z)) below (wgan scores: no scale)
ADVICE = ("try --diffaug color,translation,cutout --ada-target 0.6, --mbstd 4, --r1 1 or a lower --lr-d, or "
          "resume from an earlier checkpoints/<run>/epoch_NNN.pt")


def spread(images):
    """How much uint8 images (N, H, W, 3) differ from one another: the standard deviation across the images
    of each cell of an 8x8 average-pooled copy, averaged over cells and channels (0..255)."""
    n, h, w, c = images.shape
    cells = images[:, :h // SPREAD_CELLS * SPREAD_CELLS, :w // SPREAD_CELLS * SPREAD_CELLS].astype(np.float64)
    cells = cells.reshape(n, SPREAD_CELLS, h // SPREAD_CELLS, SPREAD_CELLS, w // SPREAD_CELLS, c).mean(axis=(2, 4))
    return float(cells.std(axis=0).mean())


def data_spread(dataset, seed):
    """The spread of SPREAD_IMAGES training images drawn with the run's seed (a folder's undecodable files
    are left out)."""
    rng = np.random.default_rng(seed)
    indices = np.sort(rng.choice(len(dataset), size=min(SPREAD_IMAGES, len(dataset)), replace=False))
    images, _ = dataset[indices]
    return spread(np.asarray(images))


def separated_streak(rows, loss):
    """How many iterations, up to the last log line of metrics.csv's `rows`, D has told real from fake apart
    outright (0 when the last line does not)."""
    if loss not in SEPARATED:
        return 0
    real_above, fake_below = SEPARATED[loss]
    last_contested = last = 0
    for row in loss_rows(rows):
        last = int(row["step"])
        if not (float(row["d_real"]) > real_above and float(row["d_fake"]) < fake_below):
            last_contested = last
    return last - last_contested


class CollapseWatch:
    """Checks a run at each save: the samples' spread against the data's, and D's outputs in metrics.csv."""

    def __init__(self, data_spread_value, loss):
        self.data_spread, self.loss = data_spread_value, loss

    def warnings(self, samples, rows, images_seen):
        """What is wrong now, {kind: what to say} ({} when nothing is): samples as uint8 (N, H, W, 3), rows
        metrics.csv's, images_seen the real images D has seen so far."""
        found = {}
        ratio = spread(samples) / max(self.data_spread, 1e-8)
        if ratio < SPREAD_FLOOR and images_seen >= SPREAD_AFTER_IMAGES:
            found["mode collapse"] = (f"the fixed-noise samples vary {ratio:.0%} as much as the training images "
                                      f"(below {SPREAD_FLOOR:.0%}): G draws the same few faces whatever the noise; "
                                      f"{ADVICE}")
        streak = separated_streak(rows, self.loss)
        if streak >= SEPARATED_ITERATIONS:
            real_above, fake_below = SEPARATED[self.loss]
            found["D wins outright"] = (f"for the last {streak} iterations D(x) > {real_above} and D(G(z)) < "
                                        f"{fake_below}, so G learns little; {ADVICE}")
        return found
