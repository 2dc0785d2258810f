"""Precision and recall of generated images (Kynkäänniemi et al. 2019, "Improved Precision and Recall Metric for
Assessing Generative Models"), on the Inception features FID already computed.

Each point of a set gets a ball reaching to its k-th nearest neighbour in the same set; the union of the balls
estimates the set's manifold. Precision is the share of fakes inside the real manifold (are the faces
realistic?), recall the share of real images inside the fake manifold (does the generator cover the variety of
the data?). A sharp but mode-collapsed generator has high precision and low recall; a diverse but blurry one the
reverse. k = 3 as in the paper and stylegan2-ada's pr50k3.

Distances are computed a block of rows at a time, in float64, so that 10,000 x 10,000 (or 100,000 x 100,000)
never sits in memory at once.
"""
import numpy as np
import torch

from fakefacegen.cli import UserError
from fakefacegen.metrics.fid import float64_device

PR_K = 3
BLOCK_VALUES = 2**24  # distances held at once (128 MB in float64)


def _as_tensor(features, device):
    return torch.as_tensor(np.asarray(features), dtype=torch.float64, device=device)


def _distance_blocks(a, b):
    """(start, Euclidean distances of rows start.. of a to every row of b), in blocks of BLOCK_VALUES values."""
    b_squared = b.square().sum(1)
    rows = max(1, BLOCK_VALUES // len(b))
    for start in range(0, len(a), rows):
        block = a[start:start + rows]
        squared = (block @ b.T).mul_(-2).add_(b_squared).add_(block.square().sum(1, keepdim=True))  # in place
        yield start, squared.clamp_(min=0).sqrt_()


def knn_radii(features, k=PR_K):
    """The distance of each point to its k-th nearest neighbour in the same set (itself, at 0, not counted)."""
    radii = torch.empty(len(features), dtype=features.dtype, device=features.device)
    for start, distances in _distance_blocks(features, features):
        radii[start:start + len(distances)] = distances.kthvalue(k + 1, dim=1).values
    return radii


def precision_recall(real, fake, k=PR_K, device="cpu"):
    """{precision, recall, k, n_real, n_fake} of (N, D) feature arrays; each side needs more than k points."""
    if min(len(real), len(fake)) <= k:
        raise UserError(f"precision and recall need more than k = {k} images per side, not "
                        f"{min(len(real), len(fake))}")
    device = float64_device(device)
    real, fake = _as_tensor(real, device), _as_tensor(fake, device)
    real_radii, fake_radii = knn_radii(real, k), knn_radii(fake, k)
    realistic = 0  # fakes inside some real ball
    covered = torch.zeros(len(real), dtype=torch.bool, device=device)  # real points inside some fake ball
    for start, distances in _distance_blocks(fake, real):  # fakes by rows, real images by columns
        realistic += int((distances <= real_radii).any(1).sum())
        covered |= (distances <= fake_radii[start:start + len(distances), None]).any(0)
    return {"precision": realistic / len(fake), "recall": int(covered.sum()) / len(real), "k": k,
            "n_real": len(real), "n_fake": len(fake)}
