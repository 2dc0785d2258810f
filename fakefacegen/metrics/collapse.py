"""Telling a run that has collapsed, so that train.py's log and report.html can say so with what to try.

Three signs, read from what a run has anyway:
- the samples stopped varying: the 64 fixed-noise samples of a save differ from one another far less than
  64 training images do (mode collapse into one blur, whatever the noise);
- the samples crowd together: on Inception features each of the 64 lies far nearer to its nearest other sample
  than training faces lie to theirs (metrics/repeated_faces.py, the median of the distances): a few faces drawn
  again and again under changing colours, which the pixel spread misses. Inception costs seconds on a CPU, so
  this is measured when a checkpoint is written, and its verdict stands until the next one;
- D wins outright: for many iterations in a row it tells every real image from every fake one, so G's
  gradient carries little (D(x) near 1 and D(G(z)) near 0; hinge: both past the margins).
"""
import math

import numpy as np
from tqdm import tqdm

from fakefacegen.cli import UserError
from fakefacegen.metrics.inception import WEIGHTS_HELP, features_of_images, load_inception
from fakefacegen.metrics.repeated_faces import repeated_faces
from fakefacegen.runs import loss_rows

SPREAD_CELLS = 8  # images compared as 8x8 cell means: faces differ in pose, hair, skin and background
SPREAD_FLOOR = 0.25  # samples varying under a quarter as much as the data have collapsed (docs/training.md)
SPREAD_IMAGES = 64  # real images the data's spread is measured on, as many as the grid has samples
# A new G draws nearly the same blur for every noise: a healthy toy-face run's samples vary 9% as much as the data
# after 6k images, 25% after 19k, 44% after 25k, 67% after 50k. Their spread is judged from 50k images on.
SPREAD_AFTER_IMAGES = 50_000
# From the same point on, samples whose median distance to their nearest other sample is under 0.8x the training
# faces' have collapsed: healthy runs measured 0.94-1.21x (64 px CelebA from 29k images on, toy faces), the seeds'
# DCGAN at 128 px, one face under colour blotches, 0.43-0.76x (docs/training.md has the table). The median, not
# the share of repeats: with 64 images a side, a share rests on the one or two nearest real pairs.
CROWDED_RATIO = 0.8
# The samples are G_eval's, an EMA of G when there is one: while the EMA still holds more than 5% of G's first
# weights it draws their blur (diffaug.toml's fixed decay of 0.999 holds 67% of them after 400 iterations), so
# they are judged only once it holds less.
EMA_START_SHARE = 0.05
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


def data_sample(dataset, seed):
    """SPREAD_IMAGES training images drawn with the run's seed, uint8 (N, H, W, 3) (a folder's undecodable files
    are left out): what the samples' spread and repeats are measured against."""
    rng = np.random.default_rng(seed)
    indices = np.sort(rng.choice(len(dataset), size=min(SPREAD_IMAGES, len(dataset)), replace=False))
    images, _ = dataset[indices]
    return np.asarray(images)


def judged_from(cfg):
    """The images seen from which a run's samples are judged: SPREAD_AFTER_IMAGES, or later while the EMA of G
    still holds EMA_START_SHARE of its first weights (a fixed --ema decay d: log(share) / log(d) iterations;
    --ema-kimg: log2(1 / share) half-lives, which its ramp-up only shortens)."""
    images_per_iteration = cfg["batch_size"] * cfg["d_steps"]
    if cfg["ema"]:
        return max(SPREAD_AFTER_IMAGES, math.log(EMA_START_SHARE) / math.log(cfg["ema"]) * images_per_iteration)
    return max(SPREAD_AFTER_IMAGES, math.log2(1 / EMA_START_SHARE) * cfg["ema_kimg"] * 1000)


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
    """Checks a run at each save: the samples' spread against the data's, their repeats when a checkpoint is
    written, and D's outputs in metrics.csv."""

    def __init__(self, real_images, loss, device, judged_from_images=SPREAD_AFTER_IMAGES):
        self.real_images, self.data_spread, self.loss, self.device = real_images, spread(real_images), loss, device
        self.judged_from = judged_from_images
        self.inception = self.real_features = None  # loaded at the first measurement
        self.repeats_off = False  # the Inception weights are not installed
        self.repeats = None  # repeated_faces() of the last measurement, None before one

    def features(self, images):
        return features_of_images(self.inception, [images], self.device, progress=False)

    def measure_repeats(self, samples):
        """repeated_faces() of `samples` against the training images (kept for the saves until the next
        measurement); None, and a note once, when the Inception weights are not installed."""
        if self.repeats_off:
            return None
        if self.inception is None:
            try:
                self.inception = load_inception(self.device)
            except UserError:
                tqdm.write(f"note: the repeated-face check is off, the Inception weights are missing: {WEIGHTS_HELP}")
                self.repeats_off = True
                return None
            self.real_features = self.features(self.real_images)
        self.repeats = repeated_faces(self.real_features, self.features(samples))
        return self.repeats

    def warnings(self, samples, rows, images_seen, measure_repeats=False):
        """What is wrong now, {kind: what to say} ({} when nothing is): samples as uint8 (N, H, W, 3), rows
        metrics.csv's, images_seen the real images D has seen so far; `measure_repeats` when a checkpoint is
        written (the last measurement stands otherwise)."""
        found = {}
        if images_seen >= self.judged_from:
            if measure_repeats:
                self.measure_repeats(samples)
            ratio = spread(samples) / max(self.data_spread, 1e-8)
            if ratio < SPREAD_FLOOR:
                found["mode collapse"] = (f"the fixed-noise samples vary {ratio:.0%} as much as the training images "
                                          f"(below {SPREAD_FLOOR:.0%}): G draws the same blur whatever the noise; "
                                          f"{ADVICE}")
            elif self.repeats is not None and self.repeats["nearest_ratio"] < CROWDED_RATIO:
                found["mode collapse"] = (f"the fixed-noise samples lie {self.repeats['nearest_ratio']:.2f}x as near "
                                          f"to one another as training faces do (below {CROWDED_RATIO}x, on Inception "
                                          f"features; {self.repeats['repeated']:.0%} have a near twin): G draws a "
                                          f"few faces again and again, under changing colours; {ADVICE}")
        streak = separated_streak(rows, self.loss)
        if streak >= SEPARATED_ITERATIONS:
            real_above, fake_below = SEPARATED[self.loss]
            found["D wins outright"] = (f"for the last {streak} iterations D(x) > {real_above} and D(G(z)) < "
                                        f"{fake_below}, so G learns little; {ADVICE}")
        return found
