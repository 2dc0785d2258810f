"""Telling a run that has collapsed, so that train.py's log and report.html can say so with what to try.

Three signs, read from what a run has anyway:
- the samples stopped varying: the 64 fixed-noise samples of a save differ from one another far less than
  64 training images do (mode collapse into one blur, whatever the noise);
- the samples crowd together: as grey thumbnails of 16x16 cells, each scaled to zero mean and unit variance
  (colour, brightness and contrast taken out), the 64 lie far nearer to their nearest other sample than training
  faces lie to theirs (the median distance; metrics/repeated_faces.py): a few faces drawn again and again under
  changing colours, which the pixel spread misses;
- D wins outright: for many iterations in a row it tells every real image from every fake one, so G's
  gradient carries little (D(x) near 1 and D(G(z)) near 0; hinge: both past the margins).
"""
import math

import numpy as np

from fakefacegen.metrics.repeated_faces import repeated_faces
from fakefacegen.runs import loss_rows

SPREAD_CELLS = 8  # images compared as 8x8 cell means: faces differ in pose, hair, skin and background
SPREAD_FLOOR = 0.25  # samples varying under a quarter as much as the data have collapsed (docs/training.md)
SPREAD_IMAGES = 64  # real images the data's spread is measured on, as many as the grid has samples
# A new G draws nearly the same blur for every noise: a healthy toy-face run's samples vary 9% as much as the data
# after 6k images, 25% after 19k, 44% after 25k, 67% after 50k. Their spread is judged from 50k images on.
SPREAD_AFTER_IMAGES = 50_000
# From the same point on, samples whose thumbnails' median distance to their nearest other thumbnail is under 0.72x
# the training images' have collapsed. Healthy runs measured 0.88-1.05x on 64 px CelebA (from 29k images on) and
# the toy faces, but 0.75-0.84x on anime faces (varied faces: G's smooth hair lies nearer to its fellows than drawn
# hair does). Collapsed: the seeds' DCGAN at 128 px, one face under colour blotches, 0.56-0.65x from 29k to 52k
# images (Inception's features: 0.70-0.86x); batch 16 on anime faces, one face in many hair colours from 221k
# images on, 0.59-0.70x (docs/training.md has the table). The median, not the share of twins: with 64 images a
# side, a share rests on the one or two nearest real pairs.
THUMBNAIL_CELLS = 16
CROWDED_RATIO = 0.72
# The samples are G_eval's, an EMA of G when there is one: while the EMA still holds more than 5% of G's first
# weights it draws their blur (diffaug.toml's fixed decay of 0.999 holds 67% of them after 400 iterations), so
# they are judged only once it holds less.
EMA_START_SHARE = 0.05
SEPARATED_ITERATIONS = 500  # D winning outright for this many iterations in a row is no passing phase
SEPARATED = {"bce": (0.95, 0.05), "hinge": (1.0, -1.0)}  # D(x) above, D(G(z)) below (wgan scores: no scale)
ADVICE = ("try --diffaug color,translation,cutout --ada-target 0.6, --mbstd 4, --r1 1 or a lower --lr-d, or "
          "resume from an earlier checkpoints/<run>/epoch_NNN.pt")


def thumbnails(images):
    """uint8 images (N, H, W, 3) as (N, 256) grey 16x16 cell means, each scaled to zero mean and unit variance."""
    n, h, w, _ = images.shape
    size = THUMBNAIL_CELLS
    grey = images[:, :h // size * size, :w // size * size].astype(np.float64).mean(axis=3)
    cells = grey.reshape(n, size, h // size, size, w // size).mean(axis=(2, 4)).reshape(n, -1)
    cells -= cells.mean(axis=1, keepdims=True)
    return cells / np.maximum(cells.std(axis=1, keepdims=True), 1e-6)


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
    """Checks a run at each save: the samples' spread and crowding against the data's, and D's outputs in
    metrics.csv."""

    def __init__(self, real_images, loss, judged_from_images=SPREAD_AFTER_IMAGES):
        self.data_spread, self.data_thumbnails, self.loss = spread(real_images), thumbnails(real_images), loss
        self.judged_from = judged_from_images

    def crowding(self, samples):
        """repeated_faces() of the samples' thumbnails against the training images': nearest_ratio is how near
        to one another they lie, 1 for samples as varied as the data."""
        return repeated_faces(self.data_thumbnails, thumbnails(samples))

    def warnings(self, samples, rows, images_seen):
        """What is wrong now, {kind: what to say} ({} when nothing is): samples as uint8 (N, H, W, 3), rows
        metrics.csv's, images_seen the real images D has seen so far."""
        found = {}
        if images_seen >= self.judged_from:
            ratio, crowding = spread(samples) / max(self.data_spread, 1e-8), self.crowding(samples)
            if ratio < SPREAD_FLOOR:
                found["mode collapse"] = (f"the fixed-noise samples vary {ratio:.0%} as much as the training images "
                                          f"(below {SPREAD_FLOOR:.0%}): G draws the same blur whatever the noise; "
                                          f"{ADVICE}")
            elif crowding["nearest_ratio"] < CROWDED_RATIO:
                found["mode collapse"] = (f"colour aside, the fixed-noise samples lie {crowding['nearest_ratio']:.2f}x "
                                          f"as near to one another as training images do (below {CROWDED_RATIO}x; "
                                          f"{crowding['repeated']:.0%} have a near twin): G draws a few faces again "
                                          f"and again, under changing colours; {ADVICE}")
        streak = separated_streak(rows, self.loss)
        if streak >= SEPARATED_ITERATIONS:
            real_above, fake_below = SEPARATED[self.loss]
            found["D wins outright"] = (f"for the last {streak} iterations D(x) > {real_above} and D(G(z)) < "
                                        f"{fake_below}, so G learns little; {ADVICE}")
        return found
