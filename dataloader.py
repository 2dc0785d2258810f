"""Turn --data into batches of uint8 images: built-in toy faces, a packed dataset, or a folder of images.

Batches stay uint8 (B, H, W, 3) until they reach the training device, where `to_model_input` scales them
to [-1, 1] and flips them: workers only move bytes, which is cheap to pickle and to copy.
"""
import json
import os
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from cli import UserError

TOYFACES = "toyfaces"
TOY_ATTRIBUTES = ("smile", "glasses", "blond")
DECODE_PROBE = 64  # files tried at start-up before a folder is declared undecodable

# Palettes (RGB) for the toy faces; a colour is picked, then jittered.
SKIN = np.array([[255, 224, 196], [241, 194, 125], [224, 172, 105], [198, 134, 66], [141, 85, 36],
                 [255, 205, 178]], np.float32)
HAIR = np.array([[35, 28, 24], [105, 66, 38], [232, 198, 110], [170, 72, 32], [165, 165, 170]], np.float32)
BLOND = 2  # row of HAIR
IRIS = np.array([[92, 56, 28], [60, 110, 170], [70, 120, 70], [40, 30, 25]], np.float32)
NUM_UNIFORMS = 40  # random numbers drawn per face; fixed so that adding a feature never reshuffles others


# ---------------------------------------------------------------------------------------------- toy faces

def _face_params(indices, seed):
    """One row of uniforms per face, a function of (seed, index) alone: any subset renders the same faces."""
    return np.stack([np.random.default_rng([seed, int(i)]).random(NUM_UNIFORMS) for i in indices]).astype(np.float32)


def _lerp(u, lo, hi):
    return lo + (hi - lo) * u


def _pick(palette, u, jitter_u, spread):
    """A palette row per face chosen by u, plus a per-face brightness jitter of +-spread."""
    rows = palette[np.minimum((u * len(palette)).astype(int), len(palette) - 1)]
    return np.clip(rows * _lerp(jitter_u, 1 - spread, 1 + spread)[:, None], 0, 255)


class _Canvas:
    """A batch of images being painted with antialiased shapes, coordinates in [-1, 1] (y pointing down)."""

    def __init__(self, background, res):
        self.res = res
        self.img = torch.from_numpy(background.astype(np.float32))[:, None, None, :].repeat(1, res, res, 1)
        axis = (np.arange(res, dtype=np.float32) + 0.5) / res * 2 - 1
        self.y = axis[None, :, None]
        self.x = axis[None, None, :]

    def coverage(self, distance):
        """Signed distance (negative inside, in [-1, 1] units) -> coverage in [0, 1] with a one-pixel soft edge."""
        return np.clip(0.5 - distance * (self.res / 2), 0, 1)

    def ellipse_distance(self, cx, cy, rx, ry):
        dx = (self.x - cx[:, None, None]) / rx[:, None, None]
        dy = (self.y - cy[:, None, None]) / ry[:, None, None]
        # The distance in radii times the smaller radius: close to the true distance near the edge.
        return (np.sqrt(dx * dx + dy * dy) - 1) * np.minimum(rx, ry)[:, None, None]

    def curve_distance(self, cx, cy, half_width, lift, thickness):
        """Distance to a parabola y = cy - lift*(dx/half_width)^2 for |dx| <= half_width, minus thickness."""
        dx = self.x - cx[:, None, None]
        t = np.clip(dx / half_width[:, None, None], -1, 1)
        on_curve_y = cy[:, None, None] - lift[:, None, None] * t * t
        along = np.abs(dx) - half_width[:, None, None]
        return np.maximum(np.abs(self.y - on_curve_y), np.maximum(along, 0)) - thickness[:, None, None]

    def paint(self, alpha, colour, where=None):
        """Blend a colour (per face) over the picture where alpha (B, H, W) is set, optionally only on `where`."""
        if where is not None:
            alpha = alpha * where
        # Rows and columns the shape touches in any face: small features then cost little.
        rows, cols = np.flatnonzero(alpha.any(axis=(0, 2))), np.flatnonzero(alpha.any(axis=(0, 1)))
        if len(rows) == 0:
            return
        window = np.s_[:, rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1]
        colour = torch.from_numpy(colour.astype(np.float32))[:, None, None, :]
        weight = torch.from_numpy(np.ascontiguousarray(alpha[window], dtype=np.float32))[..., None]
        self.img[window].lerp_(colour, weight)


def toyfaces(indices, res, seed=0):
    """Render synthetic faces; returns (uint8 (B, res, res, 3), {attribute: int array (B,)}).

    Each face is a function of (seed, index): a face oval with ears and neck, hair behind and a fringe in
    front, eyes with irises, brows, a nose and a mouth whose curve sets the expression, sometimes glasses.
    The labels (smile, glasses, blond) make attribute editing testable without real data.
    """
    indices = np.atleast_1d(np.asarray(indices))
    u = _face_params(indices, seed).T  # (NUM_UNIFORMS, B)
    n = len(indices)
    canvas = _Canvas(_lerp(u[0:3].T, 80, 235), res)

    cx, cy = _lerp(u[3], -0.08, 0.08), _lerp(u[4], -0.02, 0.12)
    rx = _lerp(u[5], 0.42, 0.56)
    ry = rx * _lerp(u[6], 1.15, 1.38)
    skin = _pick(SKIN, u[7], u[8], 0.08)
    hair = _pick(HAIR, u[9], u[10], 0.12)
    blond = (np.minimum((u[9] * len(HAIR)).astype(int), len(HAIR) - 1) == BLOND).astype(int)
    shirt = _lerp(u[11:14].T, 20, 220)

    # Hair behind the head; long hair reaches the shoulders.
    long_hair = u[14] < 0.5
    hair_ry = ry * np.where(long_hair, _lerp(u[15], 1.25, 1.45), _lerp(u[15], 1.05, 1.12))
    hair_cy = cy - ry * 0.08 + (hair_ry - ry) * 0.6
    canvas.paint(canvas.coverage(canvas.ellipse_distance(cx, hair_cy, rx * _lerp(u[16], 1.12, 1.3), hair_ry)), hair)
    # Shoulders and neck.
    canvas.paint(canvas.coverage(canvas.ellipse_distance(cx, cy + ry + 0.55, np.full(n, 0.95), np.full(n, 0.5))),
                 shirt)
    neck = np.maximum(np.abs(canvas.x - cx[:, None, None]) - rx[:, None, None] * 0.45,
                      cy[:, None, None] - canvas.y)
    canvas.paint(canvas.coverage(neck), skin * 0.85)
    # Ears, then the face.
    for side in (-1, 1):
        canvas.paint(canvas.coverage(canvas.ellipse_distance(cx + side * rx * 0.98, cy, rx * 0.16, ry * 0.2)),
                     skin * 0.93)
    canvas.paint(canvas.coverage(canvas.ellipse_distance(cx, cy, rx, ry)), skin)

    # Fringe: the hair cap in front of the face, above a hairline that varies per face.
    hairline = cy - ry * _lerp(u[17], 0.38, 0.62)
    cap = canvas.ellipse_distance(cx, cy - ry * 0.06, rx * 1.06, ry * 1.02)
    above_line = canvas.coverage(canvas.y - hairline[:, None, None] - 0.04 * np.sin(canvas.x * 9 + u[18, :, None, None] * 6))
    canvas.paint(canvas.coverage(cap), hair, where=above_line)

    # Eyes: white, iris, pupil; brows above them, tilted to vary the expression.
    eye_dx, eye_y = rx * _lerp(u[19], 0.32, 0.42), cy - ry * _lerp(u[20], 0.02, 0.14)
    eye_rx = rx * _lerp(u[21], 0.12, 0.17)
    eye_ry = eye_rx * _lerp(u[22], 0.55, 0.8)
    iris = _pick(IRIS, u[23], u[24], 0.1)
    gaze = _lerp(u[25], -0.35, 0.35) * eye_rx
    brow_lift, brow_tilt = ry * _lerp(u[26], 0.14, 0.22), _lerp(u[27], -0.35, 0.35)
    brow_colour = hair * 0.7
    glasses = (u[28] < 0.3).astype(int)
    lens_r = eye_rx * 1.55
    for side in (-1, 1):
        ex = cx + side * eye_dx
        canvas.paint(canvas.coverage(canvas.ellipse_distance(ex, eye_y, eye_rx, eye_ry)), np.full((n, 3), 245.0))
        canvas.paint(canvas.coverage(canvas.ellipse_distance(ex + gaze, eye_y, eye_ry * 0.8, eye_ry * 0.8)), iris)
        canvas.paint(canvas.coverage(canvas.ellipse_distance(ex + gaze, eye_y, eye_ry * 0.35, eye_ry * 0.35)),
                     np.full((n, 3), 15.0))
        brow = canvas.curve_distance(ex, eye_y - brow_lift + side * brow_tilt * eye_rx, eye_rx * 1.15,
                                     np.full(n, 0.02) , np.full(n, 0.018) + 0.012 * u[29])
        canvas.paint(canvas.coverage(brow), brow_colour)
        ring = np.abs(canvas.ellipse_distance(ex, eye_y, lens_r, lens_r * 0.8)) - 0.018
        canvas.paint(canvas.coverage(ring), np.full((n, 3), 25.0), where=glasses[:, None, None])
    bridge = canvas.curve_distance(cx, eye_y - lens_r * 0.2, eye_dx - lens_r, np.full(n, 0.02), np.full(n, 0.016))
    canvas.paint(canvas.coverage(bridge), np.full((n, 3), 25.0), where=glasses[:, None, None])

    # Nose and mouth; a smile lifts the corners of the mouth and opens it a little.
    canvas.paint(canvas.coverage(canvas.ellipse_distance(cx, cy + ry * 0.16, rx * 0.09, ry * 0.12)), skin * 0.82)
    smile = (u[30] < 0.5).astype(int)
    lift = ry * np.where(smile, _lerp(u[31], 0.07, 0.13), _lerp(u[31], -0.05, 0.015))
    mouth_y = cy + ry * _lerp(u[32], 0.45, 0.55)
    half_width = rx * np.where(smile, _lerp(u[33], 0.3, 0.42), _lerp(u[33], 0.2, 0.3))
    lips = _lerp(u[34:37].T, np.array([150, 40, 50]), np.array([210, 90, 100]))
    thickness = np.where(smile, 0.03, 0.022) + 0.008 * u[37]
    canvas.paint(canvas.coverage(canvas.curve_distance(cx, mouth_y, half_width, lift, thickness)), lips)
    teeth = canvas.curve_distance(cx, mouth_y - 0.012, half_width * 0.75, lift * 0.8, thickness * 0.35)
    canvas.paint(canvas.coverage(teeth), np.full((n, 3), 240.0), where=smile[:, None, None])

    images = canvas.img.add_(0.5).clamp_(0, 255).to(torch.uint8).numpy()
    return images, {"smile": smile, "glasses": glasses, "blond": blond}


# ---------------------------------------------------------------------------------------------- datasets

class ToyFaces:
    """The built-in synthetic faces, rendered on demand: nothing to download, nothing stored."""

    def __init__(self, size, res, seed):
        self.size, self.res, self.seed = size, res, seed
        self.description = f"toyfaces: {size} built-in synthetic faces at {res} px (seed {seed})"

    def __len__(self):
        return self.size

    def __getitem__(self, indices):
        return torch.from_numpy(toyfaces(indices, self.res, self.seed)[0]), 0


class PackedImages:
    """A dataset made by preprocess.py: images.npy (uint8 N x H x W x 3) read through a memory map."""

    def __init__(self, root, res):
        self.root, self.res = Path(root), res
        try:
            self.meta = json.loads((self.root / "dataset.json").read_text())
            self.images = np.load(self.root / "images.npy", mmap_mode="r")
        except (OSError, ValueError) as err:
            raise UserError(f"{root} is not a readable packed dataset ({err}): run preprocess.py again "
                            "with --force") from None
        if self.images.ndim != 4 or self.images.shape[3] != 3 or self.images.dtype != np.uint8:
            raise UserError(f"{root}/images.npy has shape {self.images.shape} {self.images.dtype}, "
                            "not uint8 N x H x W x 3: run preprocess.py again with --force")
        if self.images.shape[1] != res:
            raise UserError(f"{root} holds {self.images.shape[1]} px images but --res is {res}: pass "
                            f"--res {self.images.shape[1]} or preprocess again with --res {res}")
        self.description = f"{root}: {len(self.images)} packed images at {res} px"

    def __len__(self):
        return len(self.images)

    def __getitem__(self, indices):
        return torch.from_numpy(np.ascontiguousarray(self.images[np.asarray(indices)])), 0


class ImageFolder:
    """Any folder of images, searched recursively, cropped and resized on the fly like preprocess.py does.

    A file that cannot be decoded is left out of its batch and counted, so one bad JPEG never stops a run.
    """

    def __init__(self, root, res):
        from preprocess import BadImage, find_images, load_face  # preprocess imports this module too

        self.load_face, self.bad_image = load_face, BadImage
        self.root, self.res = Path(root), res
        self.files = find_images(self.root)
        if not self.files:
            raise UserError(f"no images (jpg, jpeg, png, webp, bmp) found under {root}: point --data at a "
                            "folder of faces or a dataset made by preprocess.py")
        reasons = []
        for path in self.files[:DECODE_PROBE]:
            try:
                load_face(path, res)
                break
            except BadImage as err:
                reasons.append(f"{path.name}: {err}")
        else:
            raise UserError(f"none of the first {len(reasons)} images under {root} could be decoded "
                            f"({reasons[0]}): check the files")
        self.description = f"{root}: {len(self.files)} image files, centre-cropped to {res} px on the fly"

    def __len__(self):
        return len(self.files)

    def __getitem__(self, indices):
        faces = []
        for i in indices:
            try:
                faces.append(self.load_face(self.files[i], self.res))
            except self.bad_image:
                pass
        skipped = len(indices) - len(faces)
        if not faces:
            return torch.empty(0, self.res, self.res, 3, dtype=torch.uint8), skipped
        return torch.from_numpy(np.stack(faces)), skipped


def open_dataset(data, res, seed=0, toy_size=20000):
    """--data -> a dataset: "toyfaces" (or None), a packed directory, or a folder of images."""
    if data in (None, "", TOYFACES):
        return ToyFaces(toy_size, res, seed)
    root = Path(data)
    if not root.exists():
        raise UserError(f"--data {data} does not exist: give a folder of images, a dataset made by "
                        "preprocess.py, or toyfaces")
    if not root.is_dir():
        raise UserError(f"--data {data} is a file: give a folder of images or a dataset made by preprocess.py")
    if (root / "images.npy").exists():
        return PackedImages(root, res)
    return ImageFolder(root, res)


# ---------------------------------------------------------------------------------------------- batches

def epoch_batches(size, batch_size, seed, epoch):
    """The shuffled batches of one epoch, a function of (seed, epoch) alone so a resumed run sees the same."""
    generator = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    order = torch.randperm(size, generator=generator)
    return [order[i:i + batch_size].tolist() for i in range(0, size - batch_size + 1, batch_size)]


def batch_loader(dataset, batches, workers):
    """Yield (uint8 batch, skipped count) for each list of indices, decoded in `workers` processes."""
    return torch.utils.data.DataLoader(dataset, sampler=batches, batch_size=None, num_workers=workers,
                                       pin_memory=torch.cuda.is_available(), prefetch_factor=4 if workers else None)


def dataset_bytes(dataset):
    return len(dataset) * dataset.res * dataset.res * 3


def fits_on_device(dataset, device, share=0.5):
    """Whether the whole dataset, as uint8, takes at most `share` of the device's free memory."""
    if isinstance(dataset, ImageFolder):
        return False  # files must be decoded: that is the loader's job
    if device.type == "cuda":
        free = torch.cuda.mem_get_info(device)[0]
    else:
        free = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    return dataset_bytes(dataset) <= share * free


def load_to_device(dataset, device, chunk=2048):
    """The whole dataset as one uint8 (N, H, W, 3) tensor on `device`, filled chunk by chunk."""
    images = torch.empty(len(dataset), dataset.res, dataset.res, 3, dtype=torch.uint8, device=device)
    for start in tqdm(range(0, len(dataset), chunk), desc="data to device", unit="chunk", leave=False):
        stop = min(start + chunk, len(dataset))
        images[start:stop] = dataset[list(range(start, stop))][0].to(device)
    return images


def device_batches(images, batches):
    """Batches drawn by index from a device-resident dataset: one index upload per epoch, no host copies."""
    if not batches:
        return
    order = torch.tensor(batches, device=images.device)
    for rows in order:
        yield images[rows], 0


def to_model_input(batch, device, flip_mask=None):
    """uint8 (B, H, W, 3) -> float (B, 3, H, W) in [-1, 1] on `device`, mirrored where flip_mask is set."""
    x = batch.to(device, non_blocking=True).permute(0, 3, 1, 2).float().div_(127.5).sub_(1)
    if flip_mask is not None:
        x = torch.where(flip_mask[:, None, None, None], x.flip(3), x)
    return x
