"""Repeated faces: the share of samples that have a near twin among the other samples, nearer than real faces
come to one another.

Each image's nearest other image of its own set is found on Inception features (the features FID uses). Among
real faces, a few pairs are close (the same pose and light, a near-duplicate photo); the threshold is the distance
that only the closest REPEAT_QUANTILE of real faces come within of their nearest other real face. A sample whose
nearest other sample is nearer than that is a repeat. A generator that draws the data's variety repeats about
REPEAT_QUANTILE of its faces; one that draws a few faces under changing colours repeats most of them, whatever
FID or the samples' pixel spread say.

Nearest-neighbour distances shrink as a set grows, so both sides are cut to the same number of images (the first
n of each, n the smaller side) before they are compared.
"""
import numpy as np
import torch

from fakefacegen.cli import UserError
from fakefacegen.metrics.fid import float64_device
from fakefacegen.metrics.precision_recall import knn_radii

REPEAT_QUANTILE = 0.01  # the threshold: 1% of real faces have their nearest other real face this near


def repeated_faces(real, fake, quantile=REPEAT_QUANTILE, device="cpu"):
    """{repeated, threshold, nearest_ratio, n} of (N, D) feature arrays: `repeated` the share of fakes nearer to
    another fake than `threshold` (the `quantile` of the real faces' distances to their nearest other real
    face), `nearest_ratio` the fakes' median distance to their nearest other fake over the real faces' own."""
    n = min(len(real), len(fake))
    if n < 2:
        raise UserError(f"repeated faces need 2 or more images per side, not {n}")
    device = float64_device(device)
    real_nearest, fake_nearest = (knn_radii(torch.as_tensor(np.asarray(side[:n]), dtype=torch.float64,
                                                            device=device), k=1) for side in (real, fake))
    threshold = torch.quantile(real_nearest, quantile)
    return {"repeated": float((fake_nearest < threshold).double().mean()), "threshold": float(threshold),
            "nearest_ratio": float(fake_nearest.median() / real_nearest.median().clamp(min=1e-12)), "n": n,
            "quantile": quantile}
