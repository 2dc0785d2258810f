"""What FID compares: the images of a folder, a packed dataset, the toy faces or a checkpoint's samples (or a
.npz of statistics), read as uint8 batches, and their statistics through a cache keyed by content, N and
resolution under cache_root()/fid_stats/."""
import collections
import hashlib
import json
import re
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from fakefacegen.checkpoint import CHECKPOINT_SUFFIXES, load_generator
from fakefacegen.cli import UserError
from fakefacegen.data.image_files import DECODE_ERRORS, BadImage, find_images, open_image, to_rgb
from fakefacegen.data.packed import PackedImages, file_sha256, is_packed
from fakefacegen.data.toyfaces import TOYFACES, toyfaces
from fakefacegen.export import EXPORT_SUFFIX
from fakefacegen.metrics.fid import DEFAULT_N, frechet_distance, load_stats_npz, save_stats, stats_of_features
from fakefacegen.metrics.inception import BATCH_SIZE, cache_root, features_of_images, load_inception
from fakefacegen.sampling import generated_batches

CACHE_VERSION = 1  # bump when the way statistics are computed changes
# Pixels in one Inception batch of a folder's images (each becomes float32 before the resize to 299): a batch
# of big images is cut shorter, and an image larger than a whole batch is skipped (0.2 GB as float32).
BATCH_PIXELS = 4096 * 4096
SOURCE_HELP = (f"give a checkpoint (.pt, or a generator exported as {EXPORT_SUFFIX}), a packed dataset, a folder of "
               "images, toyfaces, or a .npz of statistics")


class ImageSource:
    """One side made of images: `batches(batch_size)` yields uint8 (B, H, W, 3); `fingerprint` identifies
    the content for the statistics cache (None: never cached, e.g. a generator)."""

    def __init__(self, kind, name, label, n, res, batches, fingerprint=None):
        self.kind, self.name, self.label, self.n, self.res = kind, name, label, n, res
        self.batches, self.fingerprint = batches, fingerprint
        self.skips = collections.Counter()  # files of a folder skipped so far, by reason

    @property
    def skipped(self):
        return sum(self.skips.values())


# ---------------------------------------------------------------------------------------------- sources

def _decoded_images(files, n, source):
    """The first n files that decode, as uint8 (H, W, 3) arrays; the others are counted in source.skips."""
    used = 0
    for path in files:
        if used == n:
            return
        try:
            with warnings.catch_warnings():  # PIL's warning about big images: those are skipped below
                warnings.simplefilter("ignore", Image.DecompressionBombWarning)
                image = open_image(path)
            with image:
                if image.width * image.height > BATCH_PIXELS:  # known from the header, before decoding
                    source.skips[f"over {BATCH_PIXELS:,} pixels"] += 1
                    continue
                image.load()
                pixels = np.asarray(to_rgb(image))
        except (BadImage, *DECODE_ERRORS):
            source.skips["undecodable"] += 1
            continue
        used += 1
        yield pixels


def _same_size_batches(images, batch_size, sizes):
    """Runs of at most batch_size images of one size and BATCH_PIXELS pixels, stacked; adds each (height,
    width) met to `sizes`."""
    batch = []
    for pixels in images:
        full = len(batch) == min(batch_size, BATCH_PIXELS // (pixels.shape[0] * pixels.shape[1]))
        if batch and (full or pixels.shape != batch[0].shape):
            yield np.stack(batch)
            batch = []
        batch.append(pixels)
        sizes.add(pixels.shape[:2])
    if batch:
        yield np.stack(batch)


def listing_fingerprint(root, files):
    """Names, sizes and modification times of the files: any edit changes one, and no pixel is read.
    Which files end up used depends on which decode, so every listed file counts."""
    digest = hashlib.sha256()
    for path in files:
        info = path.stat()
        digest.update(f"{path.relative_to(root)}\0{info.st_size}\0{info.st_mtime_ns}\n".encode())
    return digest.hexdigest()


def folder_source(root, n):
    """Images under root read at their own size (no crop, no resize: pytorch-fid's reading), first n that
    decode; undecodable files and images over BATCH_PIXELS are skipped and counted. A batch holds images of
    one size."""
    root = Path(root)
    files = find_images(root)
    if not files:
        raise UserError(f"no images (jpg, jpeg, png, webp, bmp) under {root}: {SOURCE_HELP}")

    def batches(batch_size):
        sizes = set()
        yield from _same_size_batches(_decoded_images(files, n, source), batch_size, sizes)
        if len(sizes) > 1:
            source.res = "mixed"
        elif sizes:  # a square's side, else HxW
            (h, w), = sizes
            source.res = h if h == w else f"{h}x{w}"

    source = ImageSource("folder", root.resolve().name, f"folder {root}", min(n, len(files)), None, batches,
                         lambda: listing_fingerprint(root, files))
    return source


def packed_source(root, n):
    """The first n images of a dataset packed by preprocess.py, at the resolution it holds."""
    root = Path(root)
    data = PackedImages(root)
    count = min(n, len(data))

    def batches(batch_size):
        for start in range(0, count, batch_size):
            yield np.array(data.images[start:min(count, start + batch_size)])  # a copy: the map is read-only

    def fingerprint():  # the recorded sha256, and the file's size and time: images.npy replaced alone is seen
        info = (root / "images.npy").stat()
        return f"{data.meta.get('sha256') or file_sha256(root / 'images.npy')}:{info.st_size}:{info.st_mtime_ns}"

    return ImageSource("packed", root.resolve().name, f"packed dataset {root}", count, data.res, batches, fingerprint)


def toyfaces_source(n, res, seed):
    """The first n built-in toy faces at res px, rendered on demand."""

    def batches(batch_size):
        for start in range(0, n, batch_size):
            yield toyfaces(range(start, min(n, start + batch_size)), res, seed)[0]

    # The renderer lives in code, not in a file: fingerprint a few of its faces.
    return ImageSource("toyfaces", "toyfaces", f"toyfaces (seed {seed})", n, res, batches,
                       lambda: hashlib.sha256(toyfaces(range(16), res, seed)[0].tobytes()).hexdigest())


def checkpoint_source(path, n, seed, device):
    """Samples of seeds seed..seed+n-1 of a checkpoint's generator -> (ImageSource, the checkpoint's config)."""
    G, config = load_generator(path, device)
    label = f"checkpoint {path} (seeds {seed}..{seed + n - 1})"
    return ImageSource("checkpoint", path.stem, label, n, config["res"],
                       lambda batch_size: generated_batches(G, n, seed, device, batch_size)), config


def open_source(spec, n, res, seed, device, checkpoint=False):
    """A source named on the command line -> (ImageSource or a stats dict for a .npz, checkpoint config)."""
    path = Path(spec)
    if checkpoint or (path.suffix.lower() in CHECKPOINT_SUFFIXES and path.is_file()):
        return checkpoint_source(path, n, seed, device)
    if spec == TOYFACES:
        return toyfaces_source(n, res, seed), None
    if not path.exists():
        raise UserError(f"{spec} does not exist: {SOURCE_HELP}")
    if path.suffix.lower() == ".npz":
        return {**load_stats_npz(path), "label": f"statistics {path}"}, None
    if not path.is_dir():
        raise UserError(f"{spec} is not a folder, checkpoint or .npz: {SOURCE_HELP}")
    if is_packed(path):
        return packed_source(path, n), None
    return folder_source(path, n), None


# ---------------------------------------------------------------------------------------------- statistics

def stats_cache_path(source, weights_id):
    """cache_root()/fid_stats/<name>_<n>_<res>px_<key>.npz; the key covers content, N, res and weights."""
    key = json.dumps([CACHE_VERSION, source.kind, source.fingerprint(), source.n, source.res, weights_id])
    name = re.sub(r"[^A-Za-z0-9_.-]+", "_", source.name)[:40]  # for people browsing the cache
    digest = hashlib.sha256(key.encode()).hexdigest()[:16]
    size = f"{source.res}px" if source.res else "native"
    return cache_root() / "fid_stats" / f"{name}_{source.n}_{size}_{digest}.npz"


def _read_cached_stats(path):
    """Statistics saved by stats_of_source, or None when the file is missing, damaged or of an older layout."""
    try:
        with np.load(path, allow_pickle=False) as f:
            stats = {k: f[k] for k in ("mu", "sigma", "features")}
            res = str(f["res"])
            stats.update(n=int(f["n"]), res=int(res) if res.isdigit() else res, skipped=int(f["skipped"]))
    except Exception:  # recompute whatever is wrong with it
        return None
    return {**stats, "cached": str(path)}


def stats_of_source(source, model, device, batch_size=BATCH_SIZE, use_cache=True, progress=True, desc=None):
    """Statistics (mu, sigma, features, n, res, seconds, cached) of an ImageSource, through the cache."""
    start = time.perf_counter()
    path = stats_cache_path(source, model.weights_id) if use_cache and source.fingerprint else None
    cached = _read_cached_stats(path) if path is not None and path.is_file() else None
    if cached is not None:
        return {**cached, "seconds": time.perf_counter() - start}
    features = features_of_images(model, source.batches(batch_size), device, total=source.n,
                                  desc=desc or source.kind, progress=progress)
    if source.skipped:
        reasons = ", ".join(f"{count} {reason}" for reason, count in source.skips.most_common())
        print(f"warning: {source.label}: skipped {source.skipped} file(s): {reasons}", file=sys.stderr)
    stats = stats_of_features(features, source.label)
    stats.update(res=source.res, skipped=source.skipped, seconds=time.perf_counter() - start, cached=None)
    if path is not None:
        save_stats(path, stats, features=features, res=str(stats["res"]), skipped=source.skipped)
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


class FidMeter:
    """FID of generators against one real set, whose statistics are computed (or read from cache) once:
    what train.py measures every --fid-every epochs and compare.py at the end."""

    def __init__(self, real, res, n, device, seed=0):
        self.n, self.device = n, device
        self.inception = load_inception(device)
        self.real = stats_of_real(real, res, n, device, self.inception, seed=seed)

    def __call__(self, G, progress=False):
        return fid_of_generator(G, self.real, self.n, seed=0, device=self.device, inception=self.inception,
                                progress=progress)


def fid_of_generator(G, real_stats, n=DEFAULT_N, seed=0, device="cpu", batch_size=BATCH_SIZE, inception=None,
                     progress=True):
    """FID of n samples of G (seeds seed..seed+n-1, quantised to uint8 like saved PNGs) against real_stats."""
    device = torch.device(device)
    inception = inception or load_inception(device)
    features = features_of_images(inception, generated_batches(G, n, seed, device, batch_size), device,
                                  total=n, desc="fake features", progress=progress)
    fake = stats_of_features(features, "generated samples")
    return frechet_distance(fake["mu"], fake["sigma"], real_stats["mu"], real_stats["sigma"])
