"""The packed dataset format, read and written: a directory with images.npy (uint8 N x res x res x 3) and
dataset.json (format, version, count, res, crop, source, the source file of every image in order, the
skipped files with their reasons, a sha256 of images.npy), and optionally preview.png.

A dataset is written under a hidden temporary name beside its target and renamed into place only once it
is complete, so a reader sees the old dataset, the new one, or none, never half of one.
"""
import datetime
import hashlib
import json
import os
import shutil
from pathlib import Path

import numpy as np
from numpy.lib.format import open_memmap
from tqdm import tqdm

from fakefacegen.cli import USER_FIXABLE, UserError
from fakefacegen.files import dead_siblings, exchange, fsync_dir, fsync_file, save_png, what_file_is, write_json
from fakefacegen.grids import grid_image

FORMAT, VERSION = "fakefacegen-packed", 1
PREVIEW_GRID = 8


def is_packed(root):
    """Whether a folder holds a packed dataset (else it is read as a folder of image files)."""
    return (Path(root) / "images.npy").exists()


class PackedImages:
    """A packed dataset as a training dataset: images.npy read through a memory map, batches as tensors.
    res: the resolution the caller needs (a clear error if it holds another), or None for whatever it holds."""

    def __init__(self, root, res=None, verify=False):
        self.root = Path(root)
        try:
            self.meta = json.loads((self.root / "dataset.json").read_text())
            self.images = np.load(self.root / "images.npy", mmap_mode="r")
            if not isinstance(self.images, np.ndarray):  # a .npz under the name: np.load opens it as an archive
                raise ValueError("not one array")
        except (OSError, ValueError, EOFError) as err:  # EOFError: an empty images.npy
            reason = str(err).strip().splitlines()[0][:100] if str(err).strip() else type(err).__name__
            found = what_file_is(self.root / "images.npy")
            if (self.root / "images.npy").is_file() and found != "a .npy array":  # numpy's guess: "pickled data"
                reason = f"its images.npy is {found}, not a .npy array"
            raise UserError(f"{root} is not a readable packed dataset ({reason}): run preprocess.py again "
                            "with --force") from None
        if self.images.ndim != 4 or self.images.shape[3] != 3 or self.images.dtype != np.uint8 \
                or self.images.shape[1] != self.images.shape[2]:
            raise UserError(f"{root}/images.npy has shape {self.images.shape} {self.images.dtype}, "
                            "not uint8 N x res x res x 3: run preprocess.py again with --force")
        self.check_meta(verify)
        if res is not None and self.images.shape[1] != res:
            raise UserError(f"{root} holds {self.images.shape[1]} px images but --res is {res}: pass "
                            f"--res {self.images.shape[1]} or preprocess again with --res {res}")
        self.res = self.images.shape[1]
        self.description = f"{root}: {len(self.images)} packed images at {self.res} px"

    def check_meta(self, verify):
        """dataset.json must describe images.npy: its format, count and resolution, and (verify) its sha256,
        which keys the FID statistics cache; else a UserError that says to pack it again."""
        meta, images = self.meta, self.images
        if not isinstance(meta, dict):
            problem = f"is a JSON {type(meta).__name__}, not an object"
        elif meta.get("format") != FORMAT:
            problem = f"has format {str(meta.get('format'))[:40]!r}, not {FORMAT!r}"
        elif type(meta.get("count")) is not int or meta["count"] != len(images):
            problem = f"claims {str(meta.get('count'))[:20]} images where images.npy holds {len(images)}"
        elif type(meta.get("res")) is not int or meta["res"] != images.shape[1]:
            problem = f"claims {str(meta.get('res'))[:20]} px where images.npy holds {images.shape[1]} px"
        elif verify and "sha256" in meta and meta["sha256"] != file_sha256(self.root / "images.npy"):
            problem = "has another sha256 than images.npy"
        else:
            return
        raise UserError(f"{self.root}/dataset.json {problem}: it does not describe images.npy; run preprocess.py "
                        "again with --force")

    def __len__(self):
        return len(self.images)

    def __getitem__(self, indices):
        import torch  # here, so that writing a dataset (preprocess.py, bench_preprocess.py) never loads torch

        return torch.from_numpy(np.ascontiguousarray(self.images[np.asarray(indices)])), 0


def file_sha256(path):
    """Hex sha256 of a file's bytes."""
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


# ---------------------------------------------------------------------------------------------- images.npy

def npy_layout(path):
    """(shape, dtype, where the header text starts, where the data starts) of a .npy file."""
    with open(path, "rb") as f:
        version = np.lib.format.read_magic(f)
        if version not in ((1, 0), (2, 0)):
            raise ValueError(f"{path}: .npy format version {version} is not handled")
        read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        shape, _, dtype = read_header(f)
        text_start = 8 + (2 if version == (1, 0) else 4)  # magic and version, then the header's length
        return shape, dtype, text_start, f.tell()


def shrink_npy(path, count):
    """Cut a .npy file of shape (N, ...) down to its first `count` rows, in place, without reading it.

    The header is rewritten with the new shape and padded to its old length, so the data does not move;
    then the file is truncated. This is how skipped images leave no holes and no second pass is needed.
    """
    shape, dtype, text_start, data_start = npy_layout(path)
    header = repr({"descr": np.lib.format.dtype_to_descr(dtype), "fortran_order": False,
                   "shape": (count, *shape[1:])})
    header = header.ljust(data_start - text_start - 1) + "\n"  # a shorter shape: more padding
    assert len(header) == data_start - text_start and count <= shape[0]
    with open(path, "r+b") as f:
        f.seek(text_start)
        f.write(header.encode("latin1"))
        f.truncate(data_start + count * int(np.prod(shape[1:])) * dtype.itemsize)


def write_images(path, total, res, chunks, bar):
    """Stream chunks of (pixels, names, skipped) into images.npy; returns (kept names, skipped list).

    open_memmap preallocates the file for `total` images with a valid header; the pixels are then
    appended with plain sequential writes rather than through the map, because pages written through
    a map count as this process's memory until the kernel flushes them (10 GB of RSS for CelebA at
    128 px), while written file data does not. Kept images go one after the other; if some were
    skipped, the file is shrunk to the kept count at the end.
    """
    images = open_memmap(path, mode="w+", dtype=np.uint8, shape=(total, res, res, 3))
    offset = images.offset
    del images
    files, skipped = [], []
    with open(path, "r+b") as f:
        f.seek(offset)
        for pixels, kept, skip in chunks:
            f.write(np.ascontiguousarray(pixels).data)
            files += kept
            skipped += skip
            bar.update(len(kept) + len(skip))
            if skipped:
                bar.set_postfix(skipped=len(skipped), refresh=False)
    if files and len(files) < total:
        shrink_npy(path, len(files))
    return files, skipped


def save_preview(images, path, grid=PREVIEW_GRID):
    """The first grid x grid images as one PNG, to check the framing at a glance; white where there are fewer."""
    sheet = np.full((grid * grid, *images.shape[1:]), 255, np.uint8)
    count = min(len(images), len(sheet))
    sheet[:count] = images[:count]
    save_png(grid_image(sheet, ncols=grid, pad=0), path)


# ---------------------------------------------------------------------------------------------- directory

OWN_FILES = {"images.npy", "dataset.json", "preview.png"}  # all that build_dataset ever writes in a dataset


def not_ours(out):
    """Why the existing `out` is not a packed dataset this tool made (so not ours to replace), or None."""
    if out.is_symlink() or not out.is_dir():
        return "a symbolic link" if out.is_symlink() else "a file, not a folder"
    try:
        meta = json.loads((out / "dataset.json").read_text())
    except (OSError, ValueError):
        return "no readable dataset.json"
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        return f'its dataset.json does not say "format": "{FORMAT}"'
    others = sorted(path.name for path in out.iterdir() if path.name not in OWN_FILES)
    return f"it also holds {others[0]}, which preprocess.py did not write" if others else None


def check_target(out, force, src=None):
    """Refuse an --out that is not ours to write, touching nothing: the source, a folder inside it or
    around it, and, even with --force, anything but a packed dataset made by this tool."""
    if src is not None:
        source, target = Path(src).resolve(), out.resolve()
        if source == target or source in target.parents or target in source.parents:
            raise UserError(f"--out {out} is --src {src}, inside it or around it: the source is never "
                            "written to, choose another --out")
    if not (out.exists() or out.is_symlink()):
        return
    why = not_ours(out)
    if why is not None:
        raise UserError(f"{out} already exists and is not a dataset made by preprocess.py ({why}): it is "
                        "never replaced, even with --force; choose another --out")
    if not force:
        raise UserError(f"{out} already exists: pass --force to replace it, or choose another --out")


def clean_leftovers(out):
    """Undo what killed runs left beside `out`. A kill between the two renames of publish's fallback
    leaves no `out` and the old dataset at .NAME.old-PID: it is renamed back. Any other .NAME.old-PID is a
    replaced dataset, and a .NAME.partial-PID an unfinished one (at 128 px a CelebA one is 10 GB)."""
    for old in sorted(dead_siblings(out, "old-"), key=lambda path: path.stat().st_mtime, reverse=True):
        if not (out.exists() or out.is_symlink()):
            os.replace(old, out)
            fsync_dir(out.parent)
        else:
            shutil.rmtree(old, ignore_errors=True)
    for stale in dead_siblings(out, "partial-"):
        shutil.rmtree(stale, ignore_errors=True)


def start_output(out, force, src=None):
    """Check the target and return a fresh hidden temporary directory beside it."""
    clean_leftovers(out)
    check_target(out, force, src)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise UserError(f"cannot create the folder of --out {out}: {err.strerror}") from None
    tmp = out.parent / f".{out.name}.partial-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    return tmp


def publish(tmp, out, force, src=None):
    """Move the finished temporary directory to `out`, flushed to the disk first: a reader, or the disk
    after a power cut, sees the old dataset or the new one. `out` is checked again: it may have changed."""
    check_target(out, force, src)
    for path in tmp.iterdir():
        fsync_file(path)
    fsync_dir(tmp)
    if not (out.exists() or out.is_symlink()):
        os.replace(tmp, out)
    elif exchange(tmp, out):  # one atomic swap: tmp now holds the old dataset
        shutil.rmtree(tmp)
    else:  # two renames; a kill between them is undone by clean_leftovers on the next run
        old = out.parent / f".{out.name}.old-{os.getpid()}"
        os.replace(out, old)
        try:
            os.replace(tmp, out)
        except BaseException:
            os.replace(old, out)
            raise
        shutil.rmtree(old)
    fsync_dir(out.parent)


def build_dataset(out, force, res, total, chunks, source_meta, preview, desc, src=None):
    """Write images.npy + dataset.json (+ preview.png) into a temporary dir, then move it to `out`.

    chunks: (uint8 pixels, kept names, skipped [{file, reason}]) for `total` images in all. source_meta:
    what dataset.json says of the source (crop, source, ...). src: the folder or zip read, which `out` must
    not be, lie in or hold. Returns (kept names, skipped list).
    """
    out = Path(out)
    meta = {"format": FORMAT, "version": VERSION, "count": 0, "res": res, **source_meta}
    tmp = start_output(out, force, src)
    try:
        with tqdm(total=total, unit="img", desc=desc, dynamic_ncols=True, leave=False) as bar:
            files, skipped = write_images(tmp / "images.npy", total, res, chunks, bar)
        if not files:
            raise UserError(f"none of the {len(skipped)} images could be used, nothing was written; the first "
                            f"one: {skipped[0]['file']}: {skipped[0]['reason']}")
        if preview:
            save_preview(np.load(tmp / "images.npy", mmap_mode="r"), tmp / "preview.png")
        meta.update(count=len(files), sha256=file_sha256(tmp / "images.npy"),
                    created=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                    skipped=skipped, files=files)
        write_json(tmp / "dataset.json", meta)  # written last: its presence marks a finished dataset
        publish(tmp, out, force, src)
    except BaseException as err:
        if hasattr(chunks, "close"):
            chunks.close()  # stop the workers now rather than when Python exits
        shutil.rmtree(tmp, ignore_errors=True)
        if isinstance(err, OSError) and err.errno in USER_FIXABLE:  # the user's to fix: one line, no traceback
            raise UserError(f"cannot write {out}: {err.strerror}; it is as it was before") from None
        raise
    return files, skipped
