"""Projecting a photo into a generator's latent space (GAN inversion): the code z whose sample looks most like
the photo, found by gradient descent on z from several random starts, the generator fixed and in eval mode.

The loss of a code is the sum of
- the pixel error: mean squared difference of its sample and the photo, in [-1, 1];
- a perceptual distance built from what the checkpoint holds: the discriminator's features of both images,
  each layer's feature vectors scaled to unit length at every position (as LPIPS does with VGG's), then the
  mean squared difference, averaged over the layers. D learned what tells these faces apart, so its features
  weigh what a face is made of, not only pixel colours; an exported generator has no D: pixels only;
- a prior term, (|z| / sqrt(nz) - 1)^2: codes of nz Gaussian numbers lie near the sphere of radius sqrt(nz),
  where the generator was trained; far from it its samples stop being faces, even where they match a photo.
"""
import json
import math
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from fakefacegen import cli
from fakefacegen.cli import UserError
from fakefacegen.data.dataloader import to_model_input
from fakefacegen.data.image_files import MIN_CROP, BadImage, load_face, open_image, parse_crop
from fakefacegen.editing.latent_directions import NAME_PATTERN
from fakefacegen.files import atomic_path, save_png, what_file_is, write_json
from fakefacegen.grids import labelled_grid
from fakefacegen.network import MinibatchStdDev
from fakefacegen.runs import training_data
from fakefacegen.sampling import to_uint8

STARTS = 8  # random codes optimised side by side; the best one is kept
STEPS = 300
LEARNING_RATE = 0.05  # Adam's, on z whose components are ~N(0, 1); ramped up, then down on a cosine
WARMUP = 0.05  # of the steps
FEATURE_WEIGHT = 1.0
PRIOR_WEIGHT = 1.0
SNAPSHOTS = 6  # frames of the optimisation in the strip, first and last step included
MAX_STARTS, MAX_STEPS = 64, 5000


@dataclass
class Projection:
    """The best code found and what it gives: its sample and the distances to the photo; `frames` holds the
    best start's samples at SNAPSHOTS steps of the optimisation."""
    code: torch.Tensor  # (nz,)
    sample: np.ndarray  # uint8 (res, res, 3)
    frames: np.ndarray  # uint8 (SNAPSHOTS, res, res, 3)
    frame_steps: list  # the step (from 1) of each frame
    loss: float
    pixel_rmse: float  # in 0..255 levels
    feature_distance: float  # None without a discriminator
    norm_ratio: float  # |z| / sqrt(nz)

    def summary(self):
        return {"loss": round(self.loss, 6), "pixel_rmse": round(self.pixel_rmse, 3),
                "feature_distance": None if self.feature_distance is None else round(self.feature_distance, 6),
                "norm_ratio": round(self.norm_ratio, 4)}


def photo_face(source, res, crop):
    """A photo (a path or a binary file) cut and resized as preprocess.py does -> uint8 (res, res, 3); BadImage
    with the reason when it is not an image, or too small to hold a face."""
    if isinstance(source, Path) and source.is_dir():
        raise BadImage("is a folder: give one photo")
    if isinstance(source, Path) and not source.exists():
        raise BadImage("not found")
    with open_image(source) as image:
        width, height = image.size  # from the header: nothing decoded yet
    if min(width, height) < MIN_CROP:
        raise BadImage(f"too small: {width}x{height} pixels, at least {MIN_CROP}x{MIN_CROP} needed")
    if hasattr(source, "seek"):
        source.seek(0)
    return np.array(load_face(source, res, crop, draft=False))


class FeatureDistance:
    """The perceptual distance of a batch of images to one target, by a discriminator's features: the output
    of every LeakyReLU before the minibatch standard deviation (which mixes images) and the last layer."""

    def __init__(self, D, target):
        self.layers = []
        for layer in list(D.main)[:-1]:
            if isinstance(layer, MinibatchStdDev):
                break
            self.layers.append(layer)
        with torch.no_grad():
            self.target = self.features(target)

    def features(self, x):
        found = []
        for layer in self.layers:
            x = layer(x)
            if isinstance(layer, nn.LeakyReLU):
                found.append(x / x.norm(dim=1, keepdim=True).add(1e-8))
        return found

    def __call__(self, x):
        """(N,) distances, each from 0 (the same features) to 4 (opposite ones at every position)."""
        return torch.stack([(f - t).square().sum(1).mean((1, 2))
                            for f, t in zip(self.features(x), self.target)]).mean(0)


class ProjectionLoss:
    """Each code's loss against the photo: (total, pixel error, feature distance), each (N,); the feature
    distance is 0 without a discriminator."""

    def __init__(self, target, D, nz, prior_weight):
        self.target, self.nz, self.prior_weight = target, nz, prior_weight
        self.features = FeatureDistance(D, target) if D is not None else None

    def __call__(self, samples, codes):
        pixel = (samples - self.target).square().mean((1, 2, 3))
        feature = self.features(samples) if self.features is not None else torch.zeros_like(pixel)
        prior = (codes.norm(dim=1) / math.sqrt(self.nz) - 1).square()
        return pixel + FEATURE_WEIGHT * feature + self.prior_weight * prior, pixel, feature


def learning_rate(step, steps, peak=LEARNING_RATE):
    """Ramped up over the first WARMUP of the steps, then down to 0 on a cosine."""
    warm = max(1, round(WARMUP * steps))
    if step < warm:
        return peak * (step + 1) / warm
    return peak * 0.5 * (1 + math.cos(math.pi * (step - warm) / max(1, steps - warm)))


def snapshot_steps(steps):
    """The steps whose samples make the strip's frames: SNAPSHOTS of them, first and last included, spread
    evenly on a log scale, since the face takes shape in the first steps and is refined after."""
    return sorted({round(steps ** (i / (SNAPSHOTS - 1))) - 1 for i in range(SNAPSHOTS)})


def project(G, face, D=None, starts=STARTS, steps=STEPS, seed=0, prior_weight=PRIOR_WEIGHT, progress=True):
    """The code whose sample is closest to `face` (uint8 (res, res, 3) at G's resolution): Adam on `starts`
    codes drawn from the prior with `seed`, for `steps` steps; G (and D) in eval mode, so every start is drawn
    on its own and the result depends on the seed alone."""
    device = next(G.parameters()).device
    for model in (G, D):
        if model is not None:
            model.eval().requires_grad_(False)  # only z learns
    target = to_model_input(torch.from_numpy(np.ascontiguousarray(face))[None], device)  # as training scales
    loss = ProjectionLoss(target, D, G.nz, prior_weight)
    z = torch.randn(starts, G.nz, generator=torch.Generator().manual_seed(seed)).to(device).requires_grad_()
    optimizer = torch.optim.Adam([z], lr=LEARNING_RATE)
    frames, wanted = [], snapshot_steps(steps)
    for step in tqdm(range(steps), desc="projecting", unit="step", leave=False, disable=not progress,
                     delay=cli.PROGRESS_DELAY_S):
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(step, steps)
        samples = G(z)
        if step in wanted:
            frames.append(to_uint8(samples.detach()))
        optimizer.zero_grad(set_to_none=True)
        loss(samples, z)[0].sum().backward()
        optimizer.step()
    return best_of(G, z.detach(), loss, np.stack(frames, 1), [step + 1 for step in wanted])


@torch.no_grad()
def best_of(G, z, loss, frames, frame_steps):
    """The start with the lowest loss, measured on its final code; frames: (starts, SNAPSHOTS, H, W, 3), drawn
    at frame_steps."""
    samples = G(z)
    total, pixel, feature = loss(samples, z)
    best = int(total.argmin())
    return Projection(code=z[best].cpu(), sample=to_uint8(samples[best:best + 1])[0], frames=frames[best],
                      frame_steps=frame_steps,
                      loss=total[best].item(), pixel_rmse=127.5 * pixel[best].sqrt().item(),
                      feature_distance=feature[best].item() if loss.features is not None else None,
                      norm_ratio=z[best].norm().item() / math.sqrt(G.nz))


# ---------------------------------------------------------------------------------------------- files

def training_crop(config):
    """How the checkpoint's training photos were cut (their dataset.json), so that a photo is cut the same way;
    center where that cannot be told (the toy faces, a folder of images, data moved since)."""
    try:
        label = json.loads((Path(training_data(config)) / "dataset.json").read_text())["crop"]
        return parse_crop(str(label).removeprefix("box:"))
    except (OSError, ValueError, KeyError, TypeError, UserError):
        return "center"


def projection_strip(face, result):
    """One captioned row: the photo, its projection, a gap, then the best start's samples as the optimisation
    went, each captioned with its step."""
    blank = np.full_like(face, 255)
    captions = ["photo", "projection", "", *(f"step {step}" for step in result.frame_steps)]
    return labelled_grid(np.stack([face, result.sample, blank, *result.frames]), len(captions), captions,
                         title="the photo, its projection; then the best of the random starts as it was optimised")


def code_name(text):
    """A file name for a projected code, from a photo's name: letters, digits, _ and - only."""
    name = re.sub(r"[^A-Za-z0-9_-]+", "_", text).strip("_-")[:40]
    return name if NAME_PATTERN.fullmatch(name or "") else "photo"


def code_path(folder, name):
    return Path(folder) / "projected" / f"{name}.npy"


def list_codes(folder):
    """Names of the codes projected into folder/projected/, sorted."""
    root = Path(folder) / "projected"
    return sorted(p.stem for p in root.glob("*.npy") if NAME_PATTERN.fullmatch(p.stem)) if root.is_dir() else []


def save_projection(folder, name, face, result, meta):
    """folder/projected/<name>.npy (the code: float32, nz numbers), .png (projection_strip) and .json (the
    distances and `meta`); returns the .npy path."""
    path = code_path(folder, name)
    with atomic_path(path) as tmp, open(tmp, "wb") as file:
        np.save(file, result.code.numpy().astype(np.float32))
    save_png(projection_strip(face, result), path.with_suffix(".png"))
    write_json(path.with_suffix(".json"), {**meta, **result.summary(),
                                           "created": datetime.now(UTC).isoformat(timespec="seconds")})
    return path


def load_code(path, nz):
    """A latent code saved by save_projection (a .npy of nz finite numbers) -> a (nz,) tensor; UserError if not."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"code {path} not found: make one with latent.py project --image PHOTO")
    try:
        code = np.load(path, allow_pickle=False)  # data only: a pickled object is refused
    except (OSError, ValueError, EOFError) as err:
        found = what_file_is(path)
        reason = (str(err).strip().splitlines()[0][:80] if str(err).strip() else type(err).__name__) \
            if found == "a .npy array" else f"it is {found}"  # else numpy guesses "pickled data"
        raise UserError(f"{path} is not a .npy latent code ({reason}): make one with latent.py project") from None
    if code.dtype.kind != "f" or code.size != nz or code.ndim > 2 or not np.isfinite(code).all():
        raise UserError(f"{path} is not a latent code of this generator: {nz} finite numbers expected, found "
                        f"{code.dtype} of shape {code.shape}; project the photo again with this checkpoint")
    return torch.from_numpy(code.reshape(nz).astype(np.float32))
