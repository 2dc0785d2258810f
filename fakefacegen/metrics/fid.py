"""The FID and KID maths on Inception features: mean and covariance, the Frechet distance, the kernel
inception distance, and statistics (.npz, pytorch-fid's layout) on disk."""
import contextlib
import sys
import zipfile

import numpy as np
import torch

from fakefacegen.cli import UserError
from fakefacegen.files import atomic_path, what_file_is
from fakefacegen.metrics.inception import FEATURE_DIM, exact_fp32

DEFAULT_N = 10_000
KID_SUBSETS, KID_SUBSET_SIZE = 100, 1000
KID_SUBSET_SIZE_MAX = 5000  # its three m x m float64 kernel matrices then take 0.6 GB
KID_FULL_KERNEL_MAX = 6000  # images on both sides together for which the whole kernel matrix (float64) fits


def stats_of_features(features, label="images"):
    """mu and sigma (float64, np.cov as pytorch-fid) of (N, 2048) features; N < 2 is an error."""
    n = len(features)
    if n < 2:
        raise UserError(f"{label}: {n} image(s) is too few for FID (a covariance needs 2 or more; use "
                        f"--n {DEFAULT_N})")
    if n < FEATURE_DIM:
        print(f"warning: {label}: N={n} < {FEATURE_DIM}, so the covariance is rank-deficient and FID is "
              f"biased upward; use --n {DEFAULT_N} (at least {FEATURE_DIM}) for numbers you compare",
              file=sys.stderr)
    return {"mu": features.mean(0, dtype=np.float64), "sigma": np.cov(features, rowvar=False),
            "features": features, "n": n}


@contextlib.contextmanager
def one_thread():
    """For LAPACK's eigensolvers: their tridiagonal reduction syncs the threads after every column, which
    costs 5-20x on a CPU shared with other work, while one thread is hardly slower on an idle one."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def frechet_distance(mu1, sigma1, mu2, sigma2):
    """|mu1 - mu2|^2 + tr(S1) + tr(S2) - 2 tr sqrt(S1 S2), in float64, without sqrtm.

    S1 S2 has the eigenvalues of the symmetric PSD matrix R^T S2 R for any R with R R^T = S1, so
    tr sqrt(S1 S2) is the sum of their square roots: one symmetric eigensolve, ~10x faster than
    scipy.linalg.sqrtm and never complex on near-singular covariances. R is a Cholesky factor (of S2 with
    the roles swapped if only that one is positive definite, e.g. few fakes against many real images),
    else V diag(sqrt(w)) from the eigendecomposition of S1.
    """
    mu1, mu2, sigma1, sigma2 = (torch.as_tensor(np.asarray(a), dtype=torch.float64)
                                for a in (mu1, mu2, sigma1, sigma2))
    if mu1.shape != mu2.shape or sigma1.shape != sigma2.shape or sigma1.shape != mu1.shape * 2:
        raise ValueError(f"mismatched statistics: mu {tuple(mu1.shape)} / {tuple(mu2.shape)}, sigma "
                         f"{tuple(sigma1.shape)} / {tuple(sigma2.shape)}")
    with one_thread():
        for a, b in ((sigma1, sigma2), (sigma2, sigma1)):  # noqa: B007 - b is the pair's other half, used below
            root, info = torch.linalg.cholesky_ex(a)
            if info.item() == 0:
                break
        else:  # neither is positive definite (N <= d on both sides)
            w, v = torch.linalg.eigh(sigma1)
            root, b = v * w.clamp(min=0).sqrt(), sigma2
    m = root.T @ b @ root  # matrix products do use every thread
    with one_thread():
        eig = torch.linalg.eigvalsh((m + m.T) / 2)  # symmetrised against rounding
    diff = mu1 - mu2
    distance = float(diff @ diff + sigma1.trace() + sigma2.trace() - 2 * eig.clamp(min=0).sqrt().sum())
    return distance if distance > 0 else 0.0  # a squared distance: rounding leaves -1e-13 for equal sides


def float64_device(device):
    """Where float64 maths runs: the device, except MPS, which has no float64 (the CPU does it there)."""
    device = torch.device(device)
    return torch.device("cpu") if device.type == "mps" else device


def polynomial_kernel(a, b):
    """KID's kernel (a.b / d + 1)^3: the Gram matrix in float32 (the bulk of the work), the rest in float64."""
    return ((a @ b.T).double() / a.shape[1] + 1) ** 3


def kernel_inception_distance(f1, f2, subsets=KID_SUBSETS, subset_size=KID_SUBSET_SIZE, seed=0, device="cpu"):
    """KID: unbiased MMD^2 with the cubic polynomial kernel over random subsets -> {mean, std, subsets,
    subset_size}: the mean over the subsets drawn, their standard deviation, how many, of how many images.

    A side with no more images than subset_size is whole in every subset, so the subsets' spread is not the
    estimate's error: std is then None, and when both sides are that small there is one estimate over all
    the images rather than `subsets` identical ones.
    """
    m = min(subset_size, len(f1), len(f2))
    if m < 2:
        raise UserError(f"KID needs at least 2 images per side, not {min(len(f1), len(f2))}")
    spread = subset_size < min(len(f1), len(f2)) and subsets > 1
    draws = subsets if m < max(len(f1), len(f2)) else 1
    mmds = _subset_mmds(f1, f2, m, draws, seed, device)
    return {"mean": float(np.mean(mmds)), "std": float(np.std(mmds)) if spread else None, "subsets": draws,
            "subset_size": m}


def kid_subset_size(n, requested=None):
    """(images per KID subset, a line saying why they are not what was asked, or None) for n images on the smaller
    side. A size asked for is kept below n, else it is n. With none asked for, KID_SUBSET_SIZE, or half of n where
    that would hold every image: subsets of all n images are all the same, and KID would have no spread."""
    if requested is None:
        if n > KID_SUBSET_SIZE:
            return KID_SUBSET_SIZE, None
        size = max(2, n // 2)
        return size, (f"KID: subsets of {size} images, half of the {n} per side (the default {KID_SUBSET_SIZE} "
                      "would hold them all and have no spread; --kid-subset-size sets it)")
    if requested < n:
        return requested, None
    return n, (f"KID: subsets of {n} images, not {requested}: a side has {n}, so every subset holds them all and "
               f"KID has no spread (a --kid-subset-size below {n} gives one)")


def _subset_mmds(f1, f2, m, draws, seed, device):
    """The unbiased MMD^2 of `draws` random pairs of m-image subsets."""
    rng = np.random.default_rng(seed)
    device = float64_device(device)
    z = torch.cat([torch.as_tensor(f1), torch.as_tensor(f2)]).to(device)
    mmds = []
    with exact_fp32(torch.device(device)):
        # Small sets: every kernel value in one big matmul, ~20x less work than 3 per subset at N = 2,100.
        full = polynomial_kernel(z, z) if len(z) <= KID_FULL_KERNEL_MAX else None
        for _ in range(draws):
            x = torch.as_tensor(rng.choice(len(f1), m, replace=False), device=device)
            y = torch.as_tensor(len(f1) + rng.choice(len(f2), m, replace=False), device=device)
            kxx, kyy, kxy = (full[a[:, None], b] if full is not None else polynomial_kernel(z[a], z[b])
                             for a, b in ((x, x), (y, y), (x, y)))
            within = (kxx.sum() - kxx.diagonal().sum() + kyy.sum() - kyy.diagonal().sum()) / (m * (m - 1))
            mmds.append((within - 2 * kxy.sum() / (m * m)).item())
    return mmds


def load_stats_npz(path):
    """mu, sigma (and n if present) from a .npz written by --save-stats or pytorch-fid --save-stats."""
    try:
        with np.load(path, allow_pickle=False) as f:
            if "mu" not in f or "sigma" not in f:
                raise UserError(f"{path} has no mu and sigma arrays (it has {', '.join(f.files) or 'none'}): "
                                "give a .npz written by --save-stats or by pytorch-fid --save-stats")
            mu, sigma = f["mu"].astype(np.float64), f["sigma"].astype(np.float64)
            n = int(f["n"]) if "n" in f else None
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as err:
        found = what_file_is(path)
        why = f"it is {found}" if not found.startswith("a zip") else type(err).__name__
        raise UserError(f"{path} is not a readable .npz ({why}): write it again with --save-stats") from None
    if mu.shape != (FEATURE_DIM,) or sigma.shape != (FEATURE_DIM, FEATURE_DIM):
        raise UserError(f"{path} holds mu {mu.shape} and sigma {sigma.shape}, not 2048-d pool3 statistics: "
                        "make it with --save-stats (pytorch-fid: --dims 2048)")
    if not (np.isfinite(mu).all() and np.isfinite(sigma).all()):
        raise UserError(f"{path} holds NaN or infinite values: make it again with --save-stats")
    if not is_covariance(sigma):
        raise UserError(f"{path}: its sigma is not a covariance matrix (not symmetric, or with negative "
                        "eigenvalues), so any FID against it would mean nothing: make it again with --save-stats")
    return {"mu": mu, "sigma": sigma, "features": None, "n": n}


def is_covariance(sigma, tolerance=1e-6):
    """Symmetric and positive semi-definite, up to float rounding relative to its largest eigenvalue."""
    if not np.allclose(sigma, sigma.T, rtol=1e-5, atol=1e-8 * np.abs(sigma).max()):
        return False
    with one_thread():
        eigenvalues = torch.linalg.eigvalsh(torch.as_tensor(sigma, dtype=torch.float64))
    return bool(eigenvalues.min() >= -tolerance * max(eigenvalues.max().item(), 1e-12))


def save_stats(path, stats, **extra):
    """mu, sigma, n (left out when unknown: a pytorch-fid .npz has none) and any `extra` arrays as a .npz
    that pytorch-fid reads too; written atomically."""
    arrays = {"mu": stats["mu"], "sigma": stats["sigma"], **extra}
    if stats["n"] is not None:  # None would become an object array, which allow_pickle=False refuses
        arrays["n"] = stats["n"]
    with atomic_path(path) as tmp, open(tmp, "wb") as f:  # a file object: np.savez would append .npz to tmp
        np.savez(f, **arrays)
