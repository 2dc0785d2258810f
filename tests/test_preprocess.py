"""preprocess.py: crops land where they should, every kind of bad file is converted or skipped with a
reason, the packed output is exact, complete or absent, and it round-trips through dataloader.py."""
import contextlib
import hashlib
import io
import json
import os
import resource
import signal
import struct
import subprocess
import sys
import time
import zipfile
import zlib

import numpy as np
import pytest
import torch
from conftest import REPO, SHARED, assert_one_line_error, run_script
from PIL import Image

import preprocess
from fakefacegen import files, network
from fakefacegen.cli import UserError
from fakefacegen.data import dataloader, image_files, packed
from fakefacegen.data.image_files import BadImage, load_face
from fakefacegen.data.toyfaces import toyfaces

RED, GREEN, BLUE, WHITE, GREY = (255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 255), (128, 128, 128)


# ---------------------------------------------------------------------------------------------- helpers

def solid(size, colour, mode="RGB"):
    return Image.new(mode, size, colour)


def jpeg_bytes(image, **options):
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=95, **options)
    return buffer.getvalue()


def png16(pixels):
    """A 16-bit RGB PNG written by hand: PIL cannot write one, but photos from cameras and GIMP are."""
    height, width, _ = pixels.shape

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    rows = b"".join(b"\0" + pixels[y].astype(">u2").tobytes() for y in range(height))
    header = struct.pack(">IIBBBBB", width, height, 16, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b"")


def close(pixel, colour, tolerance=12):
    return np.abs(np.asarray(pixel, int) - colour).max() <= tolerance


def celeba_like():
    """A 178x218 'aligned photo': blue background, green CelebA box, a white marker in its top-left."""
    image = solid((178, 218), BLUE)
    left, top, right, bottom = image_files.CELEBA_BOX
    image.paste(GREEN, (left, top, right, bottom))
    image.paste(WHITE, (left, top, left + 35, top + 35))  # a quarter of the box side
    return image


def write_bad_and_odd_files(folder):
    """Every awkward kind of input, written on the fly. Returns {name: expected reason word or None}."""
    folder.mkdir(parents=True, exist_ok=True)
    good = jpeg_bytes(celeba_like())
    files = {
        "a_good.jpg": (good, None),
        "b_truncated.jpg": (good[:len(good) // 2], "corrupt or truncated"),
        "c_empty.jpg": (b"", "empty file"),
        "d_text.png": (b"this is not a picture\n" * 20, "not an image"),
        "e_small.jpg": (jpeg_bytes(solid((90, 110), RED)), None),  # a resized copy: box scales with it
        "f_anime.png": (None, "not an aligned CelebA photo"),
        "g_grey.jpg": (jpeg_bytes(celeba_like().convert("L")), None),
        "h_cmyk.jpg": (jpeg_bytes(celeba_like().convert("CMYK")), None),
    }
    for name, (data, _) in files.items():
        if data is not None:
            (folder / name).write_bytes(data)
    solid((64, 64), RED).save(folder / "f_anime.png")
    sub = folder / "sub"
    sub.mkdir(exist_ok=True)
    celeba_like().convert("RGBA").save(sub / "i_rgba.PNG")  # upper-case extension, in a subfolder
    (folder / "notes.txt").write_text("not an image extension: ignored\n")
    (folder / "._a_good.jpg").write_bytes(b"macOS resource fork")  # hidden: ignored
    expected = {name: reason for name, (_, reason) in files.items()}
    expected["sub/i_rgba.PNG"] = None
    return expected


def one_photo(folder):
    """folder/photos/a.png, a red square: the smallest source to pack."""
    (folder / "photos").mkdir()
    solid((40, 40), RED).save(folder / "photos" / "a.png")
    return folder / "photos"


def pack(src, out, *args):
    preprocess.main(["--src", str(src), "--out", str(out), *map(str, args)])
    meta = json.loads((out / "dataset.json").read_text())
    return np.load(out / "images.npy", mmap_mode="r"), meta


# ---------------------------------------------------------------------------------------------- load_face

def test_celeba_box_lands_on_the_whole_output():
    face = load_face(io.BytesIO(jpeg_bytes(celeba_like())), 64, "celeba")
    assert face.shape == (64, 64, 3) and face.dtype == np.uint8
    # The marker is a quarter of the box: the top-left 16x16 pixels; the rest of the box is green, and
    # no blue background survives apart from a blurred one-pixel rim.
    assert close(face[2:14, 2:14].mean((0, 1)), WHITE)
    assert close(face[20:62, 20:62].mean((0, 1)), GREEN)
    inner = face[1:-1, 1:-1].astype(int)
    assert not ((inner[..., 2] > 100) & (inner[..., 1] < 100)).any()


@pytest.mark.parametrize("crop, columns, expected", [
    ("center", (4, 16, 27), [GREEN, GREEN, GREEN]),  # the 60x60 middle of 100x60
    ("none", (1, 16, 30), [RED, GREEN, BLUE]),  # squashed: all three bands
    ((0, 0, 16, 60), (1, 16, 30), [RED, RED, RED]),  # a box over the red band only
])
def test_center_none_and_box_crops(crop, columns, expected):
    image = solid((100, 60), GREEN)  # red, green and blue bands; PNG, so no chroma blur at their edges
    image.paste(RED, (0, 0, 20, 60))
    image.paste(BLUE, (80, 0, 100, 60))
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    face = load_face(buffer, 32, crop)
    assert [close(face[16, x], colour, 20) for x, colour in zip(columns, expected)] == [True] * 3


@pytest.mark.parametrize("orientation", range(1, 9))
@pytest.mark.parametrize("size", [(120, 80), (960, 640)])  # the big one is decoded at 1/8 (draft)
def test_exif_orientation_is_honoured(orientation, size):
    upright = solid(size, GREY)
    upright.paste(RED, (0, 0, size[0] // 2, size[1] // 2))  # the top-left quarter, as the viewer sees it
    inverse = {2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180,
               4: Image.Transpose.FLIP_TOP_BOTTOM, 5: Image.Transpose.TRANSPOSE, 6: Image.Transpose.ROTATE_90,
               7: Image.Transpose.TRANSVERSE, 8: Image.Transpose.ROTATE_270}
    stored = upright.transpose(inverse[orientation]) if orientation > 1 else upright
    exif = Image.Exif()
    exif[0x0112] = orientation
    face = load_face(io.BytesIO(jpeg_bytes(stored, exif=exif)), 32, "none")
    assert close(face[2:14, 2:14].mean((0, 1)), RED), orientation
    assert close(face[18:30, 18:30].mean((0, 1)), GREY), orientation
    assert close(face[2:14, 18:30].mean((0, 1)), GREY) and close(face[18:30, 2:14].mean((0, 1)), GREY)


def test_draft_decoding_matches_a_full_decode():
    image = Image.effect_mandelbrot((700, 860), (-2, -1.2, 0.6, 1.2), 60).convert("RGB")
    data = jpeg_bytes(image)
    fast = load_face(io.BytesIO(data), 64, "celeba").astype(float)
    exact = load_face(io.BytesIO(data), 64, "celeba", draft=False).astype(float)
    psnr = 10 * np.log10(255 ** 2 / ((fast - exact) ** 2).mean())
    assert psnr > 30, psnr


def test_modes_are_converted_not_garbled():
    def convert(image, fmt="PNG"):
        buffer = io.BytesIO()
        image.save(buffer, fmt)
        return load_face(io.BytesIO(buffer.getvalue()), 32, "none")

    grey = convert(solid((40, 40), 100, "L"))
    assert (grey == 100).all()
    assert close(convert(solid((40, 40), RED).convert("CMYK"), "JPEG")[16, 16], RED)
    # 16 bits: mid-grey must stay mid-grey (a plain convert would clip it to white).
    assert (convert(Image.fromarray(np.full((40, 40), 32896, np.uint16))) == 128).all()
    rgb16 = load_face(io.BytesIO(png16(np.full((40, 40, 3), (65535, 32896, 0)))), 32, "none")
    assert (rgb16 == (255, 128, 0)).all()
    # Transparency is composited on white: clear -> white, half-transparent black -> mid-grey.
    rgba = solid((40, 40), (0, 0, 0, 0), "RGBA")
    rgba.paste((0, 0, 255, 255), (20, 0, 40, 40))
    rgba.paste((0, 0, 0, 128), (0, 20, 20, 40))
    face = convert(rgba)
    assert close(face[5, 5], WHITE, 2) and close(face[5, 28], BLUE, 2) and close(face[28, 5], (127,) * 3, 2)
    palette = solid((40, 40), 0, "P")
    palette.putpalette([255, 0, 0, 0, 255, 0] + [0] * 762)
    palette.paste(1, (20, 0, 40, 40))
    palette.info["transparency"] = 0
    face = convert(palette)
    assert close(face[5, 5], WHITE, 2) and close(face[5, 28], GREEN, 2)
    assert convert(solid((16, 16), RED), "BMP").shape == (32, 32, 3)  # the smallest face: upscaled
    assert close(convert(solid((50, 50), RED), "WEBP")[16, 16], RED)


@pytest.mark.parametrize("data, crop, reason", [
    (b"", "center", "empty file"),
    (b"GIF89a nonsense", "center", "not an image"),
    (jpeg_bytes(celeba_like())[:600], "center", "corrupt or truncated"),
    (jpeg_bytes(solid((100, 100), RED)), (19, 39, 159, 179), "too small"),
    (jpeg_bytes(solid((64, 64), RED)), "celeba", "not an aligned CelebA photo"),
])
def test_bad_images_raise_bad_image_with_a_reason(data, crop, reason):
    with pytest.raises(BadImage, match=reason):
        load_face(io.BytesIO(data), 64, crop)


def test_damaged_files_never_raise_anything_but_bad_image():
    rng = np.random.default_rng(0)
    originals = [jpeg_bytes(celeba_like()), jpeg_bytes(celeba_like(), progressive=True)]
    buffer = io.BytesIO()
    celeba_like().save(buffer, "PNG")
    originals.append(buffer.getvalue())
    for data in originals:
        for _ in range(25):
            damaged = bytearray(data[:rng.integers(1, len(data))] if rng.random() < 0.5 else data)
            for position in rng.integers(0, len(damaged), 8):
                damaged[position] = rng.integers(0, 256)
            with contextlib.suppress(BadImage):
                assert load_face(io.BytesIO(bytes(damaged)), 32, "celeba").shape == (32, 32, 3)


# ---------------------------------------------------------------------------------------------- packing

def test_pack_folder_keeps_good_files_and_lists_bad_ones(tmp_path):
    expected = write_bad_and_odd_files(tmp_path / "photos")
    images, meta = pack(tmp_path / "photos", tmp_path / "packed", "--res", 32, "--crop", "celeba",
                        "--workers", 2, "--preview")
    kept = sorted(name for name, reason in expected.items() if reason is None)
    assert meta["files"] == kept and meta["count"] == len(kept) == 5
    assert images.shape == (5, 32, 32, 3) and images.dtype == np.uint8
    assert {item["file"]: item["reason"].split(":")[0] for item in meta["skipped"]} == \
        {name: reason for name, reason in expected.items() if reason is not None}
    assert meta["sha256"] == hashlib.sha256((tmp_path / "packed" / "images.npy").read_bytes()).hexdigest()
    assert (meta["format"], meta["version"], meta["res"], meta["crop"]) == ("fakefacegen-packed", 1, 32, "celeba")
    for i, name in enumerate(kept):  # the same pixels as load_face, in the listed order
        assert np.array_equal(images[i], load_face(tmp_path / "photos" / name, 32, "celeba"))
    assert Image.open(tmp_path / "packed" / "preview.png").size == (8 * 32, 8 * 32)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["packed", "photos"]  # no temporary leftovers


def test_zip_is_read_in_place_and_matches_the_folder(tmp_path):
    write_bad_and_odd_files(tmp_path / "photos")
    with zipfile.ZipFile(tmp_path / "photos.zip", "w") as archive:
        for path in sorted((tmp_path / "photos").rglob("*")):
            archive.write(path, "img/" + path.relative_to(tmp_path / "photos").as_posix())
        archive.writestr("__MACOSX/img/._a_good.jpg", b"resource fork")
    from_zip, meta = pack(tmp_path / "photos.zip", tmp_path / "z", "--res", 32, "--crop", "celeba", "--workers", 2)
    from_folder, folder_meta = pack(tmp_path / "photos", tmp_path / "f", "--res", 32, "--crop", "celeba")
    assert np.array_equal(from_zip, from_folder)
    assert meta["files"] == ["img/" + name for name in folder_meta["files"]]
    assert len(meta["skipped"]) == len(folder_meta["skipped"])


def test_limit_and_synthetic(tmp_path):
    for i in range(6):
        solid((50, 40), (40 * i, 0, 0)).save(tmp_path / f"{i}.png")
    images, meta = pack(tmp_path, tmp_path.parent / f"{tmp_path.name}-limit", "--res", 32, "--limit", 4)
    assert images.shape == (4, 32, 32, 3) and meta["files"] == ["0.png", "1.png", "2.png", "3.png"]

    out = tmp_path / "toy"
    preprocess.main(["--synthetic", "10", "--seed", "3", "--out", str(out), "--res", "32"])
    meta = json.loads((out / "dataset.json").read_text())
    pixels, attributes = toyfaces(list(range(10)), 32, 3)
    assert np.array_equal(np.load(out / "images.npy"), pixels)
    assert meta["seed"] == 3 and meta["count"] == 10
    assert meta["attributes"] == {name: values.tolist() for name, values in attributes.items()}


def test_shrink_npy_keeps_the_first_rows(tmp_path):
    path = tmp_path / "a.npy"
    array = np.lib.format.open_memmap(path, mode="w+", dtype=np.uint8, shape=(1000, 4, 4, 3))
    array[:] = np.arange(1000)[:, None, None, None] % 251
    array.flush()
    del array
    packed.shrink_npy(path, 7)
    shrunk = np.load(path)
    assert shrunk.shape == (7, 4, 4, 3) and (shrunk[:, 0, 0, 0] == np.arange(7)).all()
    assert path.stat().st_size == packed.npy_layout(path)[3] + 7 * 48


def test_round_trip_through_dataloader(tmp_path):
    photos = tmp_path / "photos"
    photos.mkdir()
    for i in range(4):
        image = solid((60, 80), (60 * i, 255 - 60 * i, 90))
        image.paste(WHITE, (10, 10 + 10 * i, 30, 30 + 10 * i))
        image.save(photos / f"{i}.jpg", quality=90)
    images, _ = pack(photos, tmp_path / "packed", "--res", 32)
    batch, _ = dataloader.open_dataset(str(tmp_path / "packed"), 32, 0)[[0, 1]]
    assert batch.dtype == torch.uint8 and np.array_equal(batch.numpy(), images[[0, 1]])
    # A raw folder goes through the same load_face: training from it sees the same faces.
    folder_batch, _ = dataloader.open_dataset(str(photos), 32, 0)[[0, 1]]
    assert np.array_equal(folder_batch.numpy(), images[[0, 1]])


def test_sample_of_real_celeba_photos(tmp_path):
    sample = SHARED / "data" / "celeba_sample"
    if not sample.is_dir():
        pytest.skip(f"{sample} is not here")
    images, meta = pack(sample, tmp_path / "c", "--res", 64, "--crop", "celeba", "--limit", 40, "--workers", 2)
    assert images.shape == (40, 64, 64, 3) and meta["count"] == 40 and not meta["skipped"]
    assert 60 < images.mean() < 200  # real photos, not blank frames


# ---------------------------------------------------------------------------------------------- errors

def test_user_errors(tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "x.jpg").write_bytes(b"")
    (tmp_path / "one").mkdir()
    solid((40, 40), RED).save(tmp_path / "one" / "a.png")
    cases = [
        (["--src", tmp_path / "nowhere"], "does not exist"),
        (["--src", tmp_path / "empty"], "no images"),
        (["--src", tmp_path / "one" / "a.png"], "neither a folder nor a zip"),
        (["--src", tmp_path / "junk"], "none of the 1 images could be used"),
        (["--src", tmp_path / "one", "--res", 100], "--res 100"),
        (["--src", tmp_path / "one", "--crop", "square"], "--crop 'square'"),
        (["--src", tmp_path / "one", "--crop", "50,50,10,90"], "empty"),
    ]
    for args, words in cases:
        with pytest.raises(UserError, match=words):
            preprocess.main([*map(str, args), "--out", str(tmp_path / "out")])
        assert not (tmp_path / "out").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no partial left behind


def test_existing_output_is_kept_without_force(tmp_path):
    src, out = one_photo(tmp_path), tmp_path / "out"
    pack(src, out, "--res", 32)
    before = (out / "dataset.json").read_text()
    result = run_script("preprocess.py", "--src", src, "--out", out, "--res", 32, cwd=tmp_path, check=False)
    assert_one_line_error(result, "already exists", "--force")
    assert (out / "dataset.json").read_text() == before
    images, meta = pack(src, out, "--res", 64, "--force")
    assert images.shape == (1, 64, 64, 3) and meta["res"] == 64



def snapshot(root):
    """Every path under root (and root itself) with its bytes, or None for a folder; symlinks as their target."""
    paths = [root, *sorted(root.rglob("*"))]
    return {str(p): os.readlink(p) if p.is_symlink() else None if p.is_dir() else p.read_bytes() for p in paths}


def dead_pid():
    """The id of a process that has just exited (so none is running under it)."""
    child = subprocess.Popen([sys.executable, "-c", ""])
    child.wait()
    return child.pid


def write_photos(folder, count=3):
    folder.mkdir(parents=True)
    for i in range(count):
        solid((48, 40), (70 * i, 90, 200)).save(folder / f"{i}.png")
    (folder / "sub").mkdir()
    (folder / "sub" / "face.jpg").write_bytes(jpeg_bytes(celeba_like()))


@pytest.mark.parametrize("out", ["photos", ".", "photos/packed", "photos/sub"])
def test_force_never_touches_the_source(tmp_path, out):
    write_photos(tmp_path / "photos")
    before = snapshot(tmp_path)
    result = run_script("preprocess.py", "--src", "photos", "--out", out, "--res", 32, "--force", cwd=tmp_path,
                        check=False)
    assert_one_line_error(result, "--src photos", "source is never written")
    assert snapshot(tmp_path) == before


def test_force_replaces_only_a_dataset_this_tool_made(tmp_path):
    pack(one_photo(tmp_path), tmp_path / "data", "--res", 32)
    (tmp_path / "notes" / "important").mkdir(parents=True)
    (tmp_path / "notes" / "important" / "notes.txt").write_text("do not lose this\n")
    (tmp_path / "plain.txt").write_text("a plain file\n")
    (tmp_path / "link").symlink_to("data")
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "dataset.json").write_text('{"format": "somebody-else", "count": 1}\n')
    (tmp_path / "other" / "images.npy").write_bytes(b"their bytes")
    for target, why in [("notes", "no readable dataset.json"), ("plain.txt", "a file"), ("link", "symbolic link"),
                        ("other", "does not say"), ("notes/important", "no readable dataset.json")]:
        before = snapshot(tmp_path)
        result = run_script("preprocess.py", "--synthetic", 4, "--out", target, "--res", 32, "--force",
                            cwd=tmp_path, check=False)
        assert_one_line_error(result, target, "not a dataset made by preprocess.py", why, "even with --force")
        assert snapshot(tmp_path) == before, target
    # A dataset that someone added a file to is no longer only ours: it is kept as well.
    (tmp_path / "data" / "my_notes.txt").write_text("mine\n")
    before = snapshot(tmp_path)
    result = run_script("preprocess.py", "--synthetic", 4, "--out", "data", "--res", 32, "--force", cwd=tmp_path,
                        check=False)
    assert_one_line_error(result, "it also holds my_notes.txt")
    assert snapshot(tmp_path) == before
    (tmp_path / "data" / "my_notes.txt").unlink()
    run_script("preprocess.py", "--synthetic", 4, "--out", "data", "--res", 64, "--force", cwd=tmp_path)
    assert json.loads((tmp_path / "data" / "dataset.json").read_text())["res"] == 64


def test_out_that_appears_while_packing_is_checked_again(tmp_path):
    out = tmp_path / "out"

    def chunks():
        yield np.zeros((2, 32, 32, 3), np.uint8), ["a", "b"], []
        (out / "important").mkdir(parents=True)  # someone else's folder, made while we work
        (out / "important" / "notes.txt").write_text("keep me\n")
        yield np.zeros((1, 32, 32, 3), np.uint8), ["c"], []

    with pytest.raises(UserError, match="not a dataset made by preprocess.py"):
        packed.build_dataset(out, True, 32, 3, chunks(), {"crop": "none", "source": "test"}, False, "test")
    assert (out / "important" / "notes.txt").read_text() == "keep me\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_the_next_run_undoes_a_kill_between_the_two_renames(tmp_path):
    """publish's fallback moves the old dataset aside, then the new one in: a kill in between leaves no
    --out, the old one hidden at .out.old-PID and the finished new one at .out.partial-PID."""
    src, out = one_photo(tmp_path), tmp_path / "out"
    pack(src, out, "--res", 32)
    before = snapshot(out)
    pid = str(dead_pid())
    os.rename(out, tmp_path / f".out.old-{pid}")
    pack(src, tmp_path / "new", "--res", 64)
    os.rename(tmp_path / "new", tmp_path / f".out.partial-{pid}")
    result = run_script("preprocess.py", "--src", "photos", "--out", "out", "--res", 64, cwd=tmp_path, check=False)
    assert_one_line_error(result, "already exists")  # the old dataset is back, and kept without --force
    assert snapshot(out) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "photos"]


@pytest.mark.parametrize("swap", [True, False])
def test_publish_replaces_a_dataset_with_or_without_an_atomic_swap(tmp_path, monkeypatch, swap):
    if swap and files._renameat2 is None:
        pytest.skip("no renameat2 here")
    swaps = []
    monkeypatch.setattr(packed, "exchange", lambda a, b: swaps.append(b) or (swap and files.exchange(a, b)))
    src = one_photo(tmp_path)
    pack(src, tmp_path / "out", "--res", 32)
    images, meta = pack(src, tmp_path / "out", "--res", 64, "--force")
    assert swaps == [tmp_path / "out"] and images.shape == (1, 64, 64, 3) and meta["res"] == 64
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "photos"]


def test_publish_flushes_the_dataset_to_disk(tmp_path, monkeypatch):
    synced = []
    real_fsync = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: synced.append(os.fstat(fd).st_ino) or real_fsync(fd))
    pack(one_photo(tmp_path), tmp_path / "out", "--res", 32, "--preview")
    for path in ["out/images.npy", "out/dataset.json", "out/preview.png", "out", "."]:
        assert (tmp_path / path).stat().st_ino in synced, path


def test_a_full_disk_leaves_the_old_dataset(tmp_path):
    """A real write failure: the file size limit (RLIMIT_FSIZE) makes writes fail as a full disk would."""
    out = tmp_path / "out"
    preprocess.main(["--synthetic", "4", "--out", str(out), "--res", "32"])
    before = snapshot(out)
    limit = 100_000  # bytes: less than 50 faces at 64 px

    def small_disk():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a failed write, not a killed process
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    result = subprocess.run([sys.executable, str(REPO / "preprocess.py"), "--synthetic", "50", "--out", str(out),
                             "--res", "64", "--force"], cwd=tmp_path, capture_output=True,
                            preexec_fn=small_disk, env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"})
    # The progress bar was drawn, then erased with carriage returns: keep what a terminal shows.
    result.stderr = "\n".join(line.split("\r")[-1] for line in result.stderr.decode().split("\n"))
    assert_one_line_error(result, "cannot write", "File too large", "as it was before")
    assert snapshot(out) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]

def orphan_workers(command):
    """Processes still running `command` (Linux /proc; an empty list elsewhere)."""
    found = []
    for entry in os.listdir("/proc") if os.path.isdir("/proc") else []:
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                if f.read().split(b"\0")[:-1] == [os.fsencode(part) for part in command]:
                    found.append(int(entry))
        except (OSError, ValueError):
            pass
    return found


def test_a_killed_run_leaves_nothing_that_looks_finished(tmp_path):
    photos = tmp_path / "photos"
    photos.mkdir()
    jpeg = jpeg_bytes(Image.effect_mandelbrot((1024, 1024), (-2, -1.5, 1, 1.5), 100).convert("RGB"))
    (photos / "0000.jpg").write_bytes(jpeg)
    for i in range(1, 3000):  # hard links: 3000 photos that cost no disk and no time to make
        os.link(photos / "0000.jpg", photos / f"{i:04d}.jpg")
    out = tmp_path / "out"
    command = [sys.executable, str(REPO / "preprocess.py"), "--src", str(photos), "--out", str(out),
               "--res", "256", "--workers", "2"]
    child = subprocess.Popen(command, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 60
    partial = []
    while not partial and time.time() < deadline and child.poll() is None:
        partial = [p for p in tmp_path.glob(".out.partial-*") if (p / "images.npy").exists()]
        time.sleep(0.02)
    time.sleep(0.3)  # let it write some pixels
    child.send_signal(signal.SIGKILL)  # the main process only, as the OOM killer would
    child.wait()
    assert partial and child.returncode == -signal.SIGKILL, child.stderr.read()[-2000:]
    assert not out.exists()
    assert not (partial[0] / "dataset.json").exists()
    # Its workers notice that they are orphans and quit rather than wait for work forever.
    deadline = time.time() + 10
    while orphan_workers(command) and time.time() < deadline:
        time.sleep(0.2)
    assert not orphan_workers(command)
    # The next run removes the dead run's leftovers and finishes.
    images, meta = pack(photos, out, "--res", 32, "--limit", 5)
    assert images.shape == (5, 32, 32, 3)
    assert not list(tmp_path.glob(".out.*"))


def test_resolutions_match_the_network():
    assert tuple(network.RESOLUTIONS) == preprocess.RESOLUTIONS
