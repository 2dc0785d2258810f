"""The held-out quality protocol's data: which photos a set trains on and which faces it is measured against
(never trained on), the check that a run's data keeps clear of them, the training split packed once, and FID and
KID of a checkpoint against the held-out faces.

The development sets come from the shared folder: the reference folders of fid_reference/ are the first N photos
of the sample sorted by name, saved under the same stem and cut as fid_reference/README.md says; held_out()
checks both before anything is trained. A set at another resolution than the references' (celeba128) is measured
against the same photos cut the same way at its own. The official sets come from a user's own CelebA
(official_held_out()): they train on its train split (or its first photos) and are measured against its test
split, cut as the development references were."""
import hashlib
import json
import math
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import numpy as np
from PIL import Image

from fakefacegen.cli import UserError
from fakefacegen.data.celeba_partition import read_partition
from fakefacegen.data.image_files import CELEBA_BOX, crop_label, find_images, open_member
from fakefacegen.data.packed import build_dataset, is_packed
from fakefacegen.data.photo_packing import chunk_size, default_workers, list_source, run_chunks
from fakefacegen.data.toyfaces import TOYFACES
from fakefacegen.metrics.fid import (
    KID_SUBSETS,
    frechet_distance,
    kernel_inception_distance,
    kid_subset_size,
    stats_of_features,
)
from fakefacegen.metrics.fid_sources import ImageSource, listing_fingerprint, open_source, stats_of_source
from fakefacegen.metrics.precision_recall import PR_K, precision_recall
from fakefacegen.metrics.repeated_faces import repeated_faces

CONTENT_CHECKS = 8  # reference faces per folder compared with the photo they were cut from
CONTENT_TOLERANCE = 1.0  # mean absolute difference in 0..255: another JPEG decoder, not another photo


@dataclass(frozen=True)
class ProtocolSet:
    """A protocol set: `source` (under the shared folder) holds the photos, `references` (folders under
    fid_reference/) the held-out faces; the rest of `source` is packed with `crop` at `res` to train on.
    reference_box: the box the references were cut from each photo before the bicubic resize to res (None:
    not cut nor resized); reference_res: the side of the faces in those folders. official: the photos and the
    split come from the user's CelebA and its list_eval_partition.txt (source and references unused)."""
    name: str
    source: str
    references: tuple
    crop: str
    reference_box: tuple
    res: int
    reference_res: int = 64
    official: bool = False


SETS = {s.name: s for s in (
    ProtocolSet("celeba64", "data/celeba_sample", ("celeba_a", "celeba_b"), "celeba", CELEBA_BOX, 64),
    ProtocolSet("celeba128", "data/celeba_sample", ("celeba_a", "celeba_b"), "celeba", CELEBA_BOX, 128),
    ProtocolSet("anime64", "data/anime_sample", ("anime_a",), "none", None, 64),
    ProtocolSet("celeba64-official", "", (), "celeba", CELEBA_BOX, 64, official=True),
    ProtocolSet("celeba128-official", "", (), "celeba", CELEBA_BOX, 128, official=True),
)}


@dataclass(frozen=True)
class HeldOut:
    """A set as found: the held-out reference faces and the photos left to train on."""
    pset: ProtocolSet
    source: Path
    folders: list  # the reference folders ([] for an official set: its faces are cut from the photos)
    references: list  # the reference files, folder after folder, each folder sorted (official: the test photos)
    stems: frozenset  # their names without extension: the photos they were cut from
    photos: list  # those photos, in the order of the references (official: names in the source)
    train_names: list  # the photos to train on, sorted, as names relative to the source
    described: str = ""  # where the held-out faces come from, for the outputs

    @property
    def held_out_from(self):
        """Where the held-out faces come from, as protocol.json and dataset.json list it."""
        return [self.described] if self.described else [str(folder) for folder in self.folders]


def stem(name):
    """The file name without folders or extension: what a reference face and its photo share."""
    return PurePosixPath(str(name).replace("\\", "/")).stem


def held_out(shared, pset):
    """The set in `shared` (the folder holding data/ and fid_reference/), checked: the references are the
    first photos of the source in sorted order, by name and by content."""
    shared = Path(shared)
    folders = [shared / "fid_reference" / name for name in pset.references]
    for folder in (shared / pset.source, *folders):
        if not folder.is_dir():
            raise UserError(f"{folder} not found: give --shared, the folder that holds data/ and fid_reference/")
    references = [path for folder in folders for path in find_images(folder)]
    names = sorted(list_source(shared / pset.source)[0])
    stems = [stem(path) for path in references]
    first = {stem(name): name for name in names[:len(stems)]}
    if len(set(stems)) != len(stems) or set(stems) != set(first):
        odd = sorted(set(stems) ^ set(first))[0] if set(stems) != set(first) else "a name held twice"
        raise UserError(f"the {len(stems)} faces of {', '.join(map(str, folders))} are not the first "
                        f"{len(stems)} photos of {shared / pset.source} sorted by name ({odd}), as "
                        "fid_reference/README.md says: the held-out split cannot be trusted")
    for path in spread(references, CONTENT_CHECKS * len(folders)):
        check_cut_from(path, shared / pset.source / first[stem(path)], pset)
    photos = [shared / pset.source / first[name] for name in stems]
    return HeldOut(pset, shared / pset.source, folders, references, frozenset(stems), photos, names[len(stems):])


def official_held_out(pset, celeba, partition, train_n=None):
    """An official set from the user's CelebA (img_align_celeba.zip or its folder) and list_eval_partition.txt:
    the first train_n photos of the train split sorted by name (all of them by default) to train on, the test
    split to measure against; the validation split is left alone."""
    celeba = Path(celeba)
    split = read_partition(partition, celeba, list_source(celeba)[0])
    if train_n is not None and train_n > len(split.train):
        raise UserError(f"--train-n {train_n:,}: the train split of {partition} holds {len(split.train):,} photos")
    stems = frozenset(stem(name) for name in split.test)
    described = f"the test split of {partition} ({len(split.test):,} photos of {celeba})"
    return HeldOut(pset, celeba, [], split.test, stems, split.test, split.train[:train_n], described)


def spread(items, count):
    """`count` items spread evenly over the list, first and last included."""
    if len(items) <= count:
        return list(items)
    return [items[round(i * (len(items) - 1) / (count - 1))] for i in range(count)]


def check_cut_from(reference, photo, pset):
    """The reference face is its photo cut as fid_reference/README.md says (UserError if it is another)."""
    expected = cut_face(photo, pset.reference_box, pset.reference_res).astype(np.int16)
    with Image.open(reference) as image:
        found = np.asarray(image.convert("RGB"), dtype=np.int16)
    if found.shape != expected.shape or np.abs(found - expected).mean() > CONTENT_TOLERANCE:
        raise UserError(f"{reference} is not {photo} cut as fid_reference/README.md says: the reference "
                        "folders do not match the photos of that name, so the held-out split cannot be trusted")


def cut_face(photo, box, res):
    """A photo cut as fid_reference/README.md says: RGB, the box, a bicubic resize to res x res (box None:
    as it is), uint8 (res, res, 3)."""
    with Image.open(photo) as image:
        face = image.convert("RGB")
    if box is not None:
        face = face.crop(box).resize((res, res), Image.BICUBIC)
    return np.asarray(face)


# ---------------------------------------------------------------------------------------------- training split

def split_dir(pset):
    """Where the set's training split is packed, relative to where the command runs (beside outputs/)."""
    return Path("data") / "protocol" / f"{pset.name}-train"


def split_is_current(out, held):
    """Whether `out` already holds the split: these photos, with this crop and resolution."""
    if not is_packed(out):
        return False
    try:
        meta = json.loads((out / "dataset.json").read_text())
        read = list(meta["files"]) + [skip["file"] for skip in meta["skipped"]]
        return meta["res"] == held.pset.res and meta["crop"] == crop_label(held.pset.crop) \
            and sorted(read) == held.train_names
    except (OSError, ValueError, KeyError, TypeError):
        return False  # packed again below


def ensure_split(held, workers=None):
    """The set's training split, packed once into split_dir() (every core decoding) and reused after."""
    out, names, pset = split_dir(held.pset), held.train_names, held.pset
    if split_is_current(out, held):
        print(f"training split: {out} ({len(names)} photos of {held.source}, none held out)")
        return out
    workers = workers or default_workers()
    size = chunk_size(len(names), pset.res, workers)
    tasks = [(str(held.source), names[i:i + size], pset.res, pset.crop, True) for i in range(0, len(names), size)]
    meta = {"crop": crop_label(pset.crop), "source": str(held.source), "held_out": held.held_out_from}
    kept, skipped = build_dataset(out, True, pset.res, len(names), run_chunks(tasks, min(workers, len(tasks))),
                                  meta, preview=True, desc=f"{pset.name} split", src=held.source)
    print(f"training split: packed {len(kept)} photos of {held.source} into {out} (skipped {len(skipped)}), "
          f"leaving out the {len(held.stems)} held-out ones")
    return out


# ---------------------------------------------------------------------------------------------- the check

def files_of_data(data):
    """The photos a run's --data was made of (names relative to the data or its source); [] for the toy
    faces. UserError where that cannot be told: a refusal, since an unknown set may hold the references."""
    if data in (None, "", TOYFACES):
        return []
    root = Path(data)
    if is_packed(root):
        try:
            files = json.loads((root / "dataset.json").read_text()).get("files")
        except (OSError, ValueError, AttributeError):
            files = None
        if not isinstance(files, list):
            raise UserError(f"{data}/dataset.json does not list the photos it was packed from, so it cannot be "
                            "told apart from the held-out faces: pack it again with preprocess.py")
        return files
    if root.is_dir():
        return [path.relative_to(root).as_posix() for path in find_images(root)]
    raise UserError(f"{data} is neither a packed dataset nor a folder of images, so it cannot be told apart from "
                    "the held-out faces")


def check_trained_apart(what, data, held):
    """Refuse (UserError) a run whose data holds any held-out photo: its FID against them would flatter it."""
    overlap = [name for name in files_of_data(data) if stem(name) in held.stems]
    if overlap:
        raise UserError(f"{what} trains on {data}, which holds {len(overlap)} of the {len(held.stems)} held-out "
                        f"reference photos (first: {overlap[0]}): measured against them it would flatter itself; "
                        f"train on the protocol's split {split_dir(held.pset)} (drop --data)")


def steps_for_images(images, cfg):
    """Iterations for a budget of `images` real images seen by D under the settings cfg (batch_size x
    d_steps images per iteration), rounded up."""
    return math.ceil(images / (cfg["batch_size"] * cfg["d_steps"]))


# ---------------------------------------------------------------------------------------------- FID

def reference_stats(held, n, inception, device):
    """FID statistics of the first n held-out faces, folder after folder (each folder's features cached), or
    cut again from their photos where the set's resolution is not the folders' or where there are no folders (an
    official set)."""
    if not held.folders or held.pset.res != held.pset.reference_res:
        stats = stats_of_source(recut_source(held, n), inception, device, desc=f"held-out {held.pset.name}")
        return stats_of_features(stats["features"], f"held-out {held.pset.name}")
    features = []
    for folder in held.folders:
        wanted = n - sum(len(f) for f in features)
        if wanted > 0:
            source, _ = open_source(str(folder), wanted, held.pset.res, 0, device)
            features.append(stats_of_source(source, inception, device, desc=f"held-out {folder.name}")["features"])
    return stats_of_features(np.concatenate(features), f"held-out {held.pset.name}")


def recut_source(held, n):
    """The first n held-out faces cut from their photos at the set's resolution, with the box and resize the
    reference folders were cut with at theirs; cached like any real set, keyed on the photos, box and size."""
    photos, pset = held.photos[:n], held.pset
    in_zip = pset.official and not held.source.is_dir()

    def batches(batch_size):
        for start in range(0, len(photos), batch_size):
            chunk = photos[start:start + batch_size]
            yield np.stack([cut_face(photo_file(held, photo), pset.reference_box, pset.res) for photo in chunk])

    def fingerprint():
        if in_zip:  # the zip's size and time stand for its members'
            info = held.source.stat()
            listing = "\n".join([f"{held.source.name}\0{info.st_size}\0{info.st_mtime_ns}", *photos])
        else:
            listing = listing_fingerprint(held.source, [photo_path(held, photo) for photo in photos])
        return hashlib.sha256(f"{listing} {pset.reference_box} bicubic".encode()).hexdigest()

    return ImageSource("recut", f"heldout-{pset.name}", f"held-out faces of {held.source} cut at {pset.res} px",
                       len(photos), pset.res, batches, fingerprint)


def photo_path(held, photo):
    """A held-out photo's path: as listed for a development set, under the folder for an official one."""
    return held.source / photo if held.pset.official else photo


def photo_file(held, photo):
    """A held-out photo as PIL opens it: its path, or the bytes of a zip member."""
    if held.pset.official and not held.source.is_dir():
        return open_member(str(held.source), photo, True)
    return photo_path(held, photo)


def scores_against(ckpt, real, n, inception, device):
    """FID, KID, precision/recall and repeated faces of n samples (seeds 0..n-1) of a checkpoint's G_eval against
    `real`, by the functions evaluate_fid.py measures with: {fid, kid, precision_recall, repeated_faces}."""
    fake, _ = open_source(str(ckpt), n, None, 0, device, checkpoint=True)
    stats = stats_of_source(fake, inception, device, desc="fake features")
    subset_size, why = kid_subset_size(min(len(stats["features"]), len(real["features"])))
    if why:
        print(why)
    return {"fid": frechet_distance(stats["mu"], stats["sigma"], real["mu"], real["sigma"]),
            "kid": kernel_inception_distance(stats["features"], real["features"], KID_SUBSETS, subset_size, 0,
                                             device),
            "precision_recall": precision_recall(real["features"], stats["features"], PR_K, device),
            "repeated_faces": repeated_faces(real["features"], stats["features"], device=device)}
