"""Turn --data into batches of uint8 images: built-in toy faces, a packed dataset, or a folder of images.

Batches stay uint8 (B, H, W, 3) until they reach the training device, where `to_model_input` scales them
to [-1, 1] and flips them: workers only move bytes, which is cheap to pickle and to copy.
"""
import os
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from fakefacegen.cli import UserError
from fakefacegen.data.image_files import IMAGE_EXTENSIONS, BadImage, find_images, load_face
from fakefacegen.data.packed import PackedImages, is_packed
from fakefacegen.data.toyfaces import TOYFACES, toyfaces

DECODE_PROBE = 64  # files tried at start-up before a folder is declared undecodable


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


class ImageFolder:
    """Any folder of images, searched recursively, cropped and resized on the fly like preprocess.py does.

    A file that cannot be decoded is left out of its batch and counted, so one bad JPEG never stops a run.
    """

    def __init__(self, root, res):
        self.root, self.res = Path(root), res
        self.files = find_images(self.root)
        if not self.files:
            kinds = ", ".join(e[1:] for e in IMAGE_EXTENSIONS)
            raise UserError(f"no images ({kinds}) found under {root}: point --data at a "
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
                faces.append(load_face(self.files[i], self.res))
            except BadImage:
                pass
        skipped = len(indices) - len(faces)
        if not faces:
            return torch.empty(0, self.res, self.res, 3, dtype=torch.uint8), skipped
        return torch.from_numpy(np.stack(faces)), skipped


def _preprocess_command(data, res):
    """The preprocess.py command that packs --data `data` at res px; the source and crop guessed from its name."""
    name = Path(data).name.lower()
    src, crop = ("img_align_celeba.zip", "celeba") if "celeba" in name else \
        ("path/to/anime_faces", "none") if "anime" in name else ("path/to/photos", "center")
    return f"python preprocess.py --src {src} --out {data} --res {res} --crop {crop}"


def open_dataset(data, res, seed=0, toy_size=20000):
    """--data -> a dataset: "toyfaces" (or None), a packed directory, or a folder of images."""
    if data in (None, "", TOYFACES):
        return ToyFaces(toy_size, res, seed)
    root = Path(data)
    if not root.exists():
        raise UserError(f"--data {data} does not exist: make it with {_preprocess_command(data, res)} (README: "
                        "Data), or give a folder of images, or toyfaces")
    if not root.is_dir():
        raise UserError(f"--data {data} is a file: give a folder of images or a dataset made by preprocess.py")
    if is_packed(root):
        return PackedImages(root, res, verify=True)  # once per run: FID's cache trusts its sha256 after this
    return ImageFolder(root, res)


# ---------------------------------------------------------------------------------------------- batches

def epoch_batches(size, batch_size, seed, epoch):
    """The shuffled batches of one epoch as rows of an int64 tensor (a last partial batch is dropped), a
    function of (seed, epoch) alone so a resumed run sees the same. A tensor, not lists: an epoch of CelebA
    is 200k indices, which a GPU run takes to the device in one copy at each epoch's start."""
    generator = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    order = torch.randperm(size, generator=generator)
    count = size // batch_size
    return order[:count * batch_size].reshape(count, batch_size)


class EpochOrder(torch.utils.data.Sampler):
    """The lists of indices the loader reads next: set anew for each pass, so that one loader and its worker
    processes serve every epoch."""

    def __init__(self):
        self.batches = []

    def __iter__(self):
        return (indices.tolist() for indices in self.batches)  # a dataset takes a list of indices

    def __len__(self):
        return len(self.batches)


class BatchLoader:
    """(uint8 batch, skipped count) for each list of indices, decoded in `workers` processes that stay up for
    the whole run: starting them at every epoch cost more than a short epoch's loading. Batches come in
    pinned memory when there is a GPU to copy them to, 4 per worker read ahead."""

    def __init__(self, dataset, workers):
        self.order = EpochOrder()
        self.loader = torch.utils.data.DataLoader(
            dataset, sampler=self.order, batch_size=None, num_workers=workers, pin_memory=torch.cuda.is_available(),
            prefetch_factor=4 if workers else None, persistent_workers=workers > 0)

    def __call__(self, batches):
        """An iterator over these batches; a pass left unfinished is dropped by the next call."""
        self.order.batches = batches
        return iter(self.loader)


def dataset_bytes(dataset):
    return len(dataset) * dataset.res * dataset.res * 3


def fits_on_device(dataset, device, share=0.5):
    """Whether the whole dataset, as uint8, takes at most `share` of the device's free memory."""
    if isinstance(dataset, ImageFolder):
        return False  # files must be decoded: that is the loader's job
    if device.type == "cuda":
        free = torch.cuda.mem_get_info(device)[0]
    else:
        pages = "SC_AVPHYS_PAGES" if "SC_AVPHYS_PAGES" in os.sysconf_names else "SC_PHYS_PAGES"  # macOS: total only
        free = os.sysconf(pages) * os.sysconf("SC_PAGE_SIZE")
    return dataset_bytes(dataset) <= share * free


def load_to_device(dataset, device, chunk=2048):
    """The whole dataset as one uint8 (N, H, W, 3) tensor on `device`, filled chunk by chunk."""
    images = torch.empty(len(dataset), dataset.res, dataset.res, 3, dtype=torch.uint8, device=device)
    for start in tqdm(range(0, len(dataset), chunk), desc="data to device", unit="chunk", leave=False):
        stop = min(start + chunk, len(dataset))
        images[start:stop] = dataset[list(range(start, stop))][0].to(device)
    return images


def device_batches(images, batches):
    """Batches drawn by index from a device-resident dataset: the epoch's index goes to the device in one copy
    (from pinned memory to a GPU, without waiting), and no batch passes through the host."""
    if not len(batches):
        return
    order = batches.pin_memory() if images.is_cuda else batches
    for rows in order.to(images.device, non_blocking=True):
        yield images[rows], 0


def epoch_loader(device_images, loader, batches):
    """uint8 batches for the lists of indices `batches`: by index from device_images when the data is on the
    device, else from the BatchLoader `loader`. Yields (batch, skipped)."""
    if device_images is not None:
        return device_batches(device_images, batches)
    return loader(batches)


def to_model_input(batch, device, flip_mask=None):
    """uint8 (B, H, W, 3) -> float (B, 3, H, W) in [-1, 1] on `device`, mirrored where flip_mask is set."""
    x = batch.to(device, non_blocking=True).permute(0, 3, 1, 2).float().div_(127.5).sub_(1)
    if flip_mask is not None:
        x = torch.where(flip_mask[:, None, None, None], x.flip(3), x)
    return x
