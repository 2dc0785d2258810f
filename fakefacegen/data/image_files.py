"""Image files: finding them in a folder or a zip, decoding any format PIL reads to RGB, and cropping and
resizing a face out of them. A file that cannot become a face raises BadImage with the reason."""
import io
import os
import re
import struct
import warnings
import zipfile
import zlib
from functools import lru_cache
from pathlib import Path

import numpy as np
from PIL import ExifTags, Image, ImageOps, UnidentifiedImageError

from fakefacegen.cli import UserError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".bmp")
CROPS = ("celeba", "center", "none")  # or a box L,T,R,B
MIN_CROP = 16  # pixels on a side: a smaller box is no face, only a blur once scaled up
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
# What PIL raises on broken files (struct.error and zlib.error escape from some of its decoders).
DECODE_ERRORS = (OSError, SyntaxError, ValueError, EOFError, struct.error, zlib.error,
                 Image.DecompressionBombError)


class BadImage(Exception):
    """A file that cannot become a face: the message is the reason stored in dataset.json."""


# ---------------------------------------------------------------------------------------------- finding

def is_hidden(name):
    # Hidden files and macOS litter (._name resource forks, __MACOSX/ in zips) are never photos.
    return name.startswith(".") or name == "__MACOSX"


def find_images(root):
    """Every image file under root (recursive, extension case-insensitive), sorted so runs are repeatable.
    Symbolic links are followed, each real folder and file once: a link back up the tree (loop -> .) or a link
    to a photo beside it would otherwise count it several times. (Hard links are separate files, as cp makes.)"""
    root = Path(root)
    found, folders_seen, files_seen = [], set(), set()
    for folder, dirs, files in os.walk(root, followlinks=True):
        if identity(folder) in folders_seen:
            dirs[:] = []
            continue
        folders_seen.add(identity(folder))
        dirs[:] = sorted(d for d in dirs if not is_hidden(d))  # prune: os.walk does not enter them; in order
        for name in sorted(files):
            if name.lower().endswith(IMAGE_EXTENSIONS) and not is_hidden(name):
                path = Path(folder, name)
                key = os.path.realpath(path)  # where its links lead; a broken link is kept, reported unreadable
                if key not in files_seen:
                    files_seen.add(key)
                    found.append(path)
    return sorted(found)


def identity(path):
    """(device, inode) of the folder a path names after its links, None if it names nothing."""
    try:
        info = os.stat(path)
    except OSError:
        return None
    return info.st_dev, info.st_ino


def zip_images(path):
    """(sorted names of the image members of a zip file, [{file, reason}] of the image members whose name would
    lead out of the zip's folder: absolute, or with a .. part)."""
    kept, escaping = [], []
    with zipfile.ZipFile(path) as archive:
        for info in archive.infolist():
            name = info.filename
            if info.is_dir() or not name.lower().endswith(IMAGE_EXTENSIONS):
                continue
            parts = name.replace("\\", "/").split("/")
            if name.startswith(("/", "\\")) or ".." in parts or re.match(r"[A-Za-z]:", name):
                escaping.append({"file": name, "reason": "a member name that leads out of the zip's folder"})
            elif not any(map(is_hidden, parts)):
                kept.append(name)
    return sorted(kept), sorted(escaping, key=lambda item: item["file"])


@lru_cache(maxsize=4)
def open_zip(path, pid):
    # One ZipFile per process (hence the pid in the cache key): a forked worker must not share the
    # parent's file offset, and re-reading the central directory of 200k members per chunk would be slow.
    return zipfile.ZipFile(path)


def open_member(src, name, is_zip):
    """An image of a folder or zip `src` as something load_face accepts: a path, or the bytes of a member."""
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
        raise UserError(f"--crop {text.strip()} is an empty box: it needs left < right and top < bottom")
    if min(right - left, bottom - top) < MIN_CROP:
        raise UserError(f"--crop {text.strip()} is a box of {right - left}x{bottom - top} pixels: a face needs at least "
                        f"{MIN_CROP}x{MIN_CROP}")
    return left, top, right, bottom


def crop_label(crop):
    """The crop as it is written in dataset.json."""
    return crop if isinstance(crop, str) else "box:" + ",".join(map(str, crop))


def crop_box(size, crop):
    """The (left, top, right, bottom) region of a width x height image that becomes the face; BadImage where it
    is under MIN_CROP pixels on a side, whatever the crop (a 1x1000 strip is no face either)."""
    width, height = size
    box = crop_region(size, crop)
    if min(box[2] - box[0], box[3] - box[1]) < MIN_CROP:
        raise BadImage(f"too small: {width}x{height} gives a face of {box[2] - box[0]:.0f}x{box[3] - box[1]:.0f} "
                       f"pixels with --crop {crop_label(crop)}; a face needs at least {MIN_CROP}x{MIN_CROP}")
    return box


def crop_region(size, crop):
    """The region a crop names in a width x height image, of any size."""
    width, height = size
    if crop == "none":
        return 0, 0, width, height  # squashed to a square if the image is not one
    if crop == "center":
        side = min(width, height)
        left, top = (width - side) // 2, (height - side) // 2
        return left, top, left + side, top + side
    if crop == "celeba":
        return celeba_box(width, height)
    if isinstance(crop, (tuple, list)) and len(crop) == 4:
        if crop[2] > width or crop[3] > height:
            raise BadImage(f"too small: {width}x{height} does not contain the crop box {crop_label(tuple(crop))}")
        return tuple(crop)
    raise ValueError(f"crop must be celeba, center, none or (L, T, R, B), not {crop!r}")


def celeba_box(width, height):
    """CELEBA_BOX scaled to a copy of an aligned CelebA photo (same aspect ratio); BadImage for others."""
    frame_w, frame_h = CELEBA_FRAME
    if abs(width * frame_h - height * frame_w) > 0.02 * width * frame_h:
        raise BadImage(f"not an aligned CelebA photo: {width}x{height}, expected {frame_w}x{frame_h}; "
                       "use --crop center for other photos")
    sx, sy = width / frame_w, height / frame_h
    left, top, right, bottom = CELEBA_BOX
    return left * sx, top * sy, right * sx, bottom * sy


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
        with warnings.catch_warnings():  # PIL warns of big images before it refuses huge ones: our limits decide
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
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


def draft_decode(image, box, res):
    """Let a JPEG decode at reduced size when the crop box leaves enough pixels; returns the scale of the
    decoded pixels to the original ones (1 when not reduced)."""
    factor = draft_factor(box, res, DRAFT_GAP)
    if factor == 1 or image.format != "JPEG":
        return 1
    width = image.width
    # draft() returns the whole image's extent in reduced pixels: exact even for odd sizes.
    reduced = image.draft(None, (width // factor, image.height // factor))  # None: keep the mode
    return reduced[1][2] / width if reduced else 1


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
            scale = draft_decode(image, box, res) if draft else 1  # decoded pixels per original pixel
            image.load()  # decode now, so a truncated file fails here with its own message
            upright_image = ImageOps.exif_transpose(image) if orientation != 1 else image
            box = tuple(v * scale for v in box)
            face = to_rgb(upright_image).resize((res, res), RESAMPLE, box=box, reducing_gap=RESIZE_GAP)
        except Image.DecompressionBombError as err:
            raise BadImage(f"too large: {err}") from None
        except DECODE_ERRORS as err:
            raise BadImage(f"corrupt or truncated: {err}") from None
    return np.asarray(face)  # read-only (half the cost of a writable copy): np.array() it to edit in place
