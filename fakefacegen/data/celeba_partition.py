"""CelebA's official split, as the field splits it: list_eval_partition.txt, one line per photo,
"000001.jpg 0" (0 train, 1 validation, 2 test), read and checked against the zip or folder of the photos."""
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from fakefacegen.cli import UserError

PARTITIONS = {"0": "train", "1": "validation", "2": "test"}
PARTITION_FILE = "list_eval_partition.txt"


@dataclass(frozen=True)
class Partition:
    """The photos of each split, as names in the source (zip members or paths relative to the folder), sorted."""
    train: list
    validation: list
    test: list


def read_split_codes(path):
    """{photo name: split code} from a partition file, each photo listed once; UserError otherwise."""
    if not path.is_file():
        raise UserError(f"--partition {path} not found: give CelebA's {PARTITION_FILE} (from the CelebA page's "
                        "Eval folder)")
    try:
        lines = path.read_text(encoding="ascii").splitlines()
    except UnicodeDecodeError:
        raise UserError(f"--partition {path} is not a text list of photos: give CelebA's {PARTITION_FILE}") from None
    split_of = {}
    for number, line in enumerate(lines, 1):
        fields = line.split()
        if not fields:
            continue
        if len(fields) != 2 or fields[1] not in PARTITIONS:
            raise UserError(f"line {number} of {path} is {line.strip()[:60]!r}, not 'NAME.jpg 0|1|2' (0 train, 1 "
                            f"validation, 2 test): give CelebA's {PARTITION_FILE}")
        name, split = fields
        if name in split_of:
            both = "twice" if split_of[name] == split else \
                f"in both {PARTITIONS[split_of[name]]} and {PARTITIONS[split]}"
            raise UserError(f"{path} lists {name} {both} (line {number}): each photo belongs to one split")
        split_of[name] = split
    if not split_of:
        raise UserError(f"--partition {path} is empty: give CelebA's {PARTITION_FILE}")
    return split_of


def read_partition(path, source, source_names):
    """The split `path` gives the photos `source_names` of `source`, every photo in exactly one split; UserError
    when the file is not such a list, or names photos the source lacks, or misses photos it holds."""
    path = Path(path)
    split_of = read_split_codes(path)
    by_name = {}
    for member in source_names:
        name = PurePosixPath(member).name
        if name in by_name:
            raise UserError(f"{source} holds two photos named {name} ({by_name[name]} and {member}), so the "
                            "partition's names cannot tell them apart: give img_align_celeba.zip as downloaded")
        by_name[name] = member
    missing = sorted(set(split_of) - set(by_name))
    unlisted = sorted(set(by_name) - set(split_of))
    if missing or unlisted:
        first = f"{missing[0]} is not in {source}" if missing else f"{unlisted[0]} is not in {path}"
        raise UserError(f"{path} does not match {source}: it lists {len(split_of):,} photos, the source holds "
                        f"{len(by_name):,} ({len(missing):,} listed and absent, {len(unlisted):,} present and "
                        f"unlisted; {first}): give the partition file of these photos")
    splits = {label: sorted(by_name[name] for name, split in split_of.items() if split == key)
              for key, label in PARTITIONS.items()}
    for label in ("train", "test"):
        if not splits[label]:
            raise UserError(f"{path} puts no photo in the {label} split: give CelebA's {PARTITION_FILE}")
    return Partition(**splits)
