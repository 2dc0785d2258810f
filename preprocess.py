"""Pack a folder or .zip of face photos into the dataset format dataloader.py reads fastest.

    python preprocess.py --src img_align_celeba.zip --out data/celeba64 --res 64 --crop celeba
    python preprocess.py --src anime_faces/ --out data/anime64 --res 64 --crop center --preview
    python preprocess.py --synthetic 20000 --out data/toy64 --res 64

The output directory holds images.npy (uint8, N x res x res x 3) and dataset.json (count, crop, the source
file of every image in order, the skipped files with their reasons, a sha256 of images.npy). Decoding, crop
and resize run in --workers processes; the pixels stream to disk, so memory stays flat whatever N is.
The directory is built under a hidden temporary name and renamed into place only once it is complete.
"""
import collections
import datetime
import hashlib
import io
import json
import os
import re
import shutil
import signal
import struct
import sys
import threading
import time
import zipfile
import zlib
from concurrent.futures import ProcessPoolExecutor
from functools import lru_cache
from pathlib import Path

import numpy as np
from numpy.lib.format import open_memmap
from PIL import ExifTags, Image, ImageOps, UnidentifiedImageError
from tqdm import tqdm

from cli import ArgumentParser, UserError, run

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".bmp")
RESOLUTIONS = (32, 64, 96, 128, 256)  # the sizes network.py builds models for
CROPS = ("celeba", "center", "none")  # or a box L,T,R,B
# Aligned CelebA photos are 178x218 with the eyes at fixed places. This 140x140 box keeps the whole face,
# chin and hairline included, with little background. The plain centre crop (0,20,178,198) shows the same
# face smaller, with the neck, shoulders and background around it, which the GAN then spends capacity on.
CELEBA_FRAME = (178, 218)
CELEBA_BOX = (19, 39, 159, 179)
RESAMPLE = Image.LANCZOS  # the sharpest antialiased downscaling filter in PIL
# A JPEG can be decoded straight to 1/2, 1/4 or 1/8 size (Image.draft). We do so whenever the crop keeps
# >= DRAFT_GAP * res pixels: CelebA at 64 px is then decoded at 1/2 size and the resize has 4x fewer pixels
# to filter, ~1.5x faster in all. The faces stay visually identical (~41 dB PSNR to a full decode).
DRAFT_GAP = 1.0
RESIZE_GAP = 3.0  # PIL box-reduces big images first when the scale is >= 3x: fast, visually identical
CHUNK_BYTES = 4 << 20  # pixels a worker sends back at once; with WINDOW chunks in flight, caps the RAM used
WINDOW = 4  # chunks in flight per worker
PREVIEW_GRID = 8
FORMAT, VERSION = "fakefacegen-packed", 1
# What PIL raises on broken files (struct.error and zlib.error escape from some of its decoders).
DECODE_ERRORS = (OSError, SyntaxError, ValueError, EOFError, struct.error, zlib.error,
                 Image.DecompressionBombError)


class BadImage(Exception):
    """A file that cannot become a face: the message is the reason stored in dataset.json."""


# ---------------------------------------------------------------------------------------------- sources

def is_hidden(name):
    # Hidden files and macOS litter (._name resource forks, __MACOSX/ in zips) are never photos.
    return name.startswith(".") or name == "__MACOSX"


def find_images(root):
    """Every image file under root (recursive, extension case-insensitive), sorted so runs are repeatable."""
    root = Path(root)
    found = []
    for folder, dirs, files in os.walk(root, followlinks=True):
        dirs[:] = [d for d in dirs if not is_hidden(d)]  # prune: os.walk does not enter them
        found += [Path(folder, f) for f in files if f.lower().endswith(IMAGE_EXTENSIONS) and not is_hidden(f)]
    return sorted(found)


def zip_images(path):
    """Sorted names of the image members of a zip file."""
    with zipfile.ZipFile(path) as archive:
        return sorted(info.filename for info in archive.infolist()
                      if not info.is_dir() and info.filename.lower().endswith(IMAGE_EXTENSIONS)
                      and not any(map(is_hidden, info.filename.split("/"))))


def list_source(src):
    """--src -> the names of its images (relative paths or zip members); UserError if there are none."""
    src = Path(src)
    if not src.exists():
        raise UserError(f"--src {src} does not exist: give a folder of images or a .zip such as "
                        "img_align_celeba.zip")
    if src.is_dir():
        names = [path.relative_to(src).as_posix() for path in find_images(src)]
    elif zipfile.is_zipfile(src):
        try:
            names = zip_images(src)
        except (zipfile.BadZipFile, OSError) as err:
            raise UserError(f"--src {src} is a damaged zip file ({err}): download it again") from None
    else:
        raise UserError(f"--src {src} is neither a folder nor a zip file: give a folder of images or a .zip")
    if not names:
        raise UserError(f"no images ({', '.join(e[1:] for e in IMAGE_EXTENSIONS)}) found in {src}: "
                        "check the path")
    return names


@lru_cache(maxsize=4)
def open_zip(path, pid):
    # One ZipFile per process (hence the pid in the cache key): a forked worker must not share the
    # parent's file offset, and re-reading the central directory of 200k members per chunk would be slow.
    return zipfile.ZipFile(path)


def open_member(src, name, is_zip):
    """A source image as something load_face accepts: a path, or the bytes of a zip member."""
    if not is_zip:
        return os.path.join(src, name)
    try:
        return io.BytesIO(open_zip(src, os.getpid()).read(name))
    except (zipfile.BadZipFile, zlib.error, OSError, EOFError) as err:
        raise BadImage(f"damaged zip member: {err}") from None


# ---------------------------------------------------------------------------------------------- crops

def parse_crop(text):
    """--crop value -> "celeba" | "center" | "none" | (L, T, R, B); UserError when it is neither."""
    if text in CROPS:
        return text
    match = re.fullmatch(r"(?:box[:= ]?)?\s*(\d+),(\d+),(\d+),(\d+)", text.strip())
    if not match:
        raise UserError(f"--crop {text!r} is not valid: use celeba, center, none or a box L,T,R,B "
                        "such as 19,39,159,179")
    left, top, right, bottom = map(int, match.groups())
    if right <= left or bottom <= top:
        raise UserError(f"--crop box {text} is empty: it needs left < right and top < bottom")
    return left, top, right, bottom


def crop_label(crop):
    """The crop as it is written in dataset.json."""
    return crop if isinstance(crop, str) else "box:" + ",".join(map(str, crop))


def crop_box(size, crop):
    """The (left, top, right, bottom) region of a width x height image that becomes the face."""
    width, height = size
    if crop == "none":
        return 0, 0, width, height  # squashed to a square if the image is not one
    if crop == "center":
        side = min(width, height)
        left, top = (width - side) // 2, (height - side) // 2
        return left, top, left + side, top + side
    if crop == "celeba":
        frame_w, frame_h = CELEBA_FRAME
        # Accept resized copies of the aligned photos (same aspect ratio): scale the box with them.
        if abs(width * frame_h - height * frame_w) > 0.02 * width * frame_h:
            raise BadImage(f"not an aligned CelebA photo: {width}x{height}, expected {frame_w}x{frame_h}; "
                           "use --crop center for other photos")
        sx, sy = width / frame_w, height / frame_h
        left, top, right, bottom = CELEBA_BOX
        return left * sx, top * sy, right * sx, bottom * sy
    if isinstance(crop, (tuple, list)) and len(crop) == 4:
        if crop[2] > width or crop[3] > height:
            raise BadImage(f"too small: {width}x{height} does not contain the crop box {crop_label(tuple(crop))}")
        return tuple(crop)
    raise ValueError(f"crop must be celeba, center, none or (L, T, R, B), not {crop!r}")


# ---------------------------------------------------------------------------------------------- decoding

def open_image(source):
    """PIL image (not decoded yet) from a path or a binary file; BadImage if it is not an image at all."""
    try:
        if isinstance(source, (str, os.PathLike)):
            empty = os.path.getsize(source) == 0
        else:
            source.seek(0)  # as Image.open does
            empty = not source.read(1)
        if empty:
            raise BadImage("empty file: 0 bytes")
        return Image.open(source)
    except UnidentifiedImageError:
        raise BadImage("not an image: unknown format") from None
    except Image.DecompressionBombError as err:
        raise BadImage(f"too large: {err}") from None
    except (FileNotFoundError, PermissionError, IsADirectoryError) as err:
        raise BadImage(f"unreadable: {err}") from None
    except DECODE_ERRORS as err:
        raise BadImage(f"corrupt or truncated: {err}") from None


def exif_orientation(image):
    """EXIF orientation 1..8 (1 = upright)."""
    try:
        value = image.getexif().get(ExifTags.Base.Orientation, 1)
    except Exception:  # a mangled EXIF block should not cost us an otherwise good photo
        return 1
    return value if value in range(1, 9) else 1


def draft_factor(box, res, gap):
    """Largest JPEG decode reduction (8, 4, 2 or 1) that still leaves >= gap * res pixels across the box."""
    side = min(box[2] - box[0], box[3] - box[1])
    return next((factor for factor in (8, 4, 2) if side / factor >= gap * res), 1)


def to_rgb(image):
    """Any PIL mode -> 8-bit RGB. Transparent pixels are composited on white, the usual background of
    cut-out faces; 16-bit greyscale is scaled down (PIL's own convert would clip it to white)."""
    if image.mode == "RGB":
        return image
    if image.mode in ("I", "I;16", "I;16B", "I;16L", "I;16N"):
        values = np.clip(np.asarray(image, dtype=np.float64), 0, 65535)
        return Image.fromarray(np.round(values / 257).astype(np.uint8), "L").convert("RGB")
    if image.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in image.info:
        rgba = image.convert("RGBA")
        return Image.alpha_composite(Image.new("RGBA", rgba.size, "white"), rgba).convert("RGB")
    return image.convert("RGB")  # L, 1, P, CMYK (Adobe's inverted CMYK is handled by PIL), YCbCr...


def load_face(source, res, crop="center", draft=True):
    """Decode, crop and resize one image to a read-only uint8 (res, res, 3) array; BadImage(reason) if not.

    source: a path or a binary file object. crop: "celeba" | "center" | "none" | (L, T, R, B), in the
    coordinates of the upright photo (EXIF orientation applied). A crop smaller than res is upscaled.
    draft=False decodes JPEGs at full size (a little sharper, ~1.5x slower).
    """
    with open_image(source) as image:
        try:
            orientation = exif_orientation(image)
            upright = image.size if orientation < 5 else image.size[::-1]  # 5..8 swap width and height
            box = crop_box(upright, crop)
            scale = 1  # decoded pixels per original pixel
            factor = draft_factor(box, res, DRAFT_GAP) if draft else 1
            if factor > 1 and image.format == "JPEG":
                width = image.width
                # draft() returns the whole image's extent in reduced pixels: exact even for odd sizes.
                reduced = image.draft(None, (width // factor, image.height // factor))  # None: keep the mode
                if reduced:
                    scale = reduced[1][2] / width
            image.load()  # decode now, so a truncated file fails here with its own message
            upright_image = ImageOps.exif_transpose(image) if orientation != 1 else image
            rgb = to_rgb(upright_image)
            box = tuple(v * scale for v in box)
            face = rgb.resize((res, res), RESAMPLE, box=box, reducing_gap=RESIZE_GAP)
        except Image.DecompressionBombError as err:
            raise BadImage(f"too large: {err}") from None
        except DECODE_ERRORS as err:
            raise BadImage(f"corrupt or truncated: {err}") from None
    return np.asarray(face)  # read-only (half the cost of a writable copy): np.array() it to edit in place


def load_chunk(task):
    """Worker: decode a list of images -> (uint8 (k, res, res, 3) kept pixels, kept names, skipped)."""
    src, names, res, crop, draft = task
    is_zip = not os.path.isdir(src)
    faces, kept, skipped = [], [], []
    for name in names:
        try:
            faces.append(load_face(open_member(src, name, is_zip), res, crop, draft))
            kept.append(name)
        except BadImage as err:
            skipped.append({"file": name, "reason": str(err)})
    pixels = np.stack(faces) if faces else np.zeros((0, res, res, 3), np.uint8)
    return pixels, kept, skipped


def start_worker():
    """Worker start-up. Ctrl-C is left to the main process, which stops the pool and cleans up (else each
    worker prints its own traceback); and a worker quits when its parent dies, even by SIGKILL, which
    gives no chance to clean up: otherwise orphaned workers would wait for more work forever."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    parent = os.getppid()

    def watch():
        while os.getppid() == parent:
            time.sleep(1)
        os._exit(1)

    threading.Thread(target=watch, daemon=True).start()


def run_chunks(tasks, workers):
    """Results of load_chunk for each task, in order, computed `workers` at a time.

    Only WINDOW chunks per worker are in flight, so finished pixels never pile up in memory.
    """
    if workers <= 1:
        yield from map(load_chunk, tasks)
        return
    pool = ProcessPoolExecutor(workers, initializer=start_worker)
    try:
        pending = collections.deque()
        for task in tasks:
            pending.append(pool.submit(load_chunk, task))
            if len(pending) >= WINDOW * workers:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()
    finally:
        pool.shutdown(cancel_futures=True)


def chunk_size(count, res, workers):
    """Images per task: ~CHUNK_BYTES of pixels, but small enough that every worker gets several tasks."""
    by_bytes = max(1, CHUNK_BYTES // (res * res * 3))
    return max(1, min(by_bytes, -(-count // (WINDOW * workers))))


# ---------------------------------------------------------------------------------------------- output

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


def sha256_file(path):
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 22):
            digest.update(block)
    return digest.hexdigest()


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
    """The first grid x grid images as one PNG, to check the framing at a glance."""
    count = min(len(images), grid * grid)
    res = images.shape[1]
    sheet = np.full((grid * res, grid * res, 3), 255, np.uint8)
    for i in range(count):
        row, col = divmod(i, grid)
        sheet[row * res:(row + 1) * res, col * res:(col + 1) * res] = images[i]
    Image.fromarray(sheet).save(path)


def pid_alive(pid):
    try:
        os.kill(pid, 0)  # signal 0: only asks whether the process exists
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists but belongs to someone else
        pass
    return True


def start_output(out, force):
    """Check the target and return a fresh hidden temporary directory beside it.

    Leftovers of killed runs (.NAME.partial-PID whose process is gone) are removed first: at 128 px a
    CelebA leftover is 10 GB.
    """
    if (out.exists() or out.is_symlink()) and not force:
        raise UserError(f"{out} already exists: pass --force to replace it, or choose another --out")
    out.parent.mkdir(parents=True, exist_ok=True)
    for stale in out.parent.glob(f".{out.name}.partial-*"):
        pid = stale.name.rsplit("-", 1)[1]
        if pid.isdigit() and not pid_alive(int(pid)):
            shutil.rmtree(stale, ignore_errors=True)
    tmp = out.parent / f".{out.name}.partial-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    return tmp


def publish(tmp, out, force):
    """Rename the finished temporary directory to `out`: readers see the old dataset or the new one."""
    if out.exists() or out.is_symlink():
        if not force:
            raise UserError(f"{out} appeared while preprocessing: pass --force to replace it")
        old = out.parent / f".{out.name}.old-{os.getpid()}"
        os.replace(out, old)
        os.replace(tmp, out)
        if old.is_dir() and not old.is_symlink():
            shutil.rmtree(old)
        else:
            old.unlink()
    else:
        os.replace(tmp, out)


def write_json(path, meta):
    """One top-level key per line, values compact: the head stays readable, 200k file names stay small."""
    lines = [f" {json.dumps(key)}: {json.dumps(value)}" for key, value in meta.items()]
    path.write_text("{\n" + ",\n".join(lines) + "\n}\n")


def build_dataset(out, force, res, total, chunks, meta, preview, desc):
    """Write images.npy + dataset.json (+ preview.png) into a temporary dir, then move it to `out`.

    Returns (kept names, skipped list). `meta` gets count, hash, time, skipped and files filled in.
    """
    tmp = start_output(out, force)
    try:
        with tqdm(total=total, unit="img", desc=desc, dynamic_ncols=True, leave=False) as bar:
            files, skipped = write_images(tmp / "images.npy", total, res, chunks, bar)
        if not files:
            raise UserError(f"none of the {len(skipped)} images could be used, nothing was written; the first "
                            f"one: {skipped[0]['file']}: {skipped[0]['reason']}")
        if preview:
            save_preview(np.load(tmp / "images.npy", mmap_mode="r"), tmp / "preview.png")
        meta.update(count=len(files), sha256=sha256_file(tmp / "images.npy"),
                    created=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                    skipped=skipped, files=files)
        write_json(tmp / "dataset.json", meta)  # written last: its presence marks a finished dataset
        publish(tmp, out, force)
    except BaseException:
        if hasattr(chunks, "close"):
            chunks.close()  # stop the workers now rather than when Python exits
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return files, skipped


# ---------------------------------------------------------------------------------------------- packing

def pack_source(src, out, res, crop, limit=None, workers=1, force=False, preview=False, draft=True):
    """Preprocess a folder or zip of photos into the packed dataset `out`; returns (kept, skipped)."""
    names = list_source(src)[:limit]
    size = chunk_size(len(names), res, workers)
    tasks = [(str(src), names[i:i + size], res, crop, draft) for i in range(0, len(names), size)]
    meta = {"format": FORMAT, "version": VERSION, "count": 0, "res": res, "crop": crop_label(crop),
            "source": str(src)}
    return build_dataset(Path(out), force, res, len(names), run_chunks(tasks, min(workers, len(tasks))),
                         meta, preview, desc=Path(src).name)


def pack_synthetic(count, out, res, seed=0, force=False, preview=False):
    """Render `count` toy faces into the packed dataset `out`, with their attributes and seed."""
    from dataloader import toyfaces  # imported here: dataloader imports this module too

    attributes = collections.defaultdict(list)

    def chunks():
        size = chunk_size(count, res, 1)
        for start in range(0, count, size):
            indices = list(range(start, min(start + size, count)))
            pixels, attrs = toyfaces(indices, res, seed)
            for name, values in attrs.items():
                attributes[name] += [int(v) for v in values]
            yield pixels, [f"toyfaces:{i}" for i in indices], []

    # `attributes` is filled while the chunks stream and written to dataset.json once they are done.
    meta = {"format": FORMAT, "version": VERSION, "count": 0, "res": res, "crop": "none", "source": "toyfaces",
            "seed": seed, "attributes": attributes}
    return build_dataset(Path(out), force, res, count, chunks(), meta, preview, desc="toyfaces")


def summary(kept, skipped, out, res, seconds):
    """The one line printed at the end: counts, skip reasons, size and speed."""
    reasons = collections.Counter(item["reason"].split(":")[0] for item in skipped)
    why = f" ({', '.join(f'{n} {r}' for r, n in reasons.most_common())}; listed in dataset.json)" if skipped else ""
    total = len(kept) + len(skipped)
    megabytes = len(kept) * res * res * 3 / 1e6
    return (f"kept {len(kept)} / {total} images, skipped {len(skipped)}{why} -> {out} "
            f"({len(kept)}x{res}x{res}x3, {megabytes:.0f} MB) in {seconds:.1f} s ({total / seconds:.0f} img/s)")


def default_workers():
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def parse_args(argv=None):
    parser = ArgumentParser(description=__doc__.split("\n")[0], epilog="\n".join(__doc__.split("\n")[1:]))
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--src", help="folder of images (searched recursively) or a .zip read in place")
    source.add_argument("--synthetic", type=int, metavar="N", help="pack N built-in toy faces instead")
    parser.add_argument("--out", required=True, help="output directory (images.npy + dataset.json)")
    parser.add_argument("--res", type=int, default=64, help=f"output size in pixels: {RESOLUTIONS}")
    parser.add_argument("--crop", default="center",
                        help="celeba (face box for aligned 178x218 CelebA), center (largest centred square), "
                             "none (resize only), or a box L,T,R,B in pixels (default: center)")
    parser.add_argument("--limit", type=int, help="only the first N images (sorted by name): a quick subset")
    parser.add_argument("--workers", type=int, default=default_workers(), help="processes (default: all cores)")
    parser.add_argument("--seed", type=int, default=0, help="seed of --synthetic faces")
    parser.add_argument("--preview", action="store_true", help="also write preview.png, an 8x8 grid")
    parser.add_argument("--no-draft", dest="draft", action="store_false",
                        help="decode JPEGs at full size (a little sharper, ~1.5x slower)")
    parser.add_argument("--force", action="store_true", help="replace --out if it exists")
    args = parser.parse_args(argv)
    if args.res not in RESOLUTIONS:
        raise UserError(f"--res {args.res} is not supported: use one of {', '.join(map(str, RESOLUTIONS))}")
    for flag in ("limit", "synthetic", "workers"):
        if getattr(args, flag) is not None and getattr(args, flag) < 1:
            raise UserError(f"--{flag} must be at least 1, not {getattr(args, flag)}")
    args.crop = parse_crop(args.crop)
    return args


def main(argv=None):
    args = parse_args(argv)
    side = CELEBA_BOX[2] - CELEBA_BOX[0]
    if args.crop == "celeba" and args.res > side:
        print(f"note: the CelebA face box is {side} px, so --res {args.res} upscales it", file=sys.stderr)
    started = time.perf_counter()
    if args.synthetic:
        kept, skipped = pack_synthetic(args.synthetic, args.out, args.res, args.seed, args.force, args.preview)
    else:
        kept, skipped = pack_source(args.src, args.out, args.res, args.crop, args.limit, args.workers,
                                    args.force, args.preview, args.draft)
    print(summary(kept, skipped, args.out, args.res, time.perf_counter() - started))


if __name__ == "__main__":
    run(main)
