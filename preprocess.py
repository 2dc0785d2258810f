"""Pack a folder or .zip of face photos into the dataset format dataloader.py reads fastest.

    python preprocess.py --src img_align_celeba.zip --out data/celeba64 --res 64 --crop celeba
    python preprocess.py --src anime_faces/ --out data/anime64 --res 64 --crop center --preview
    python preprocess.py --synthetic 20000 --out data/toy64 --res 64

The output directory holds images.npy (uint8, N x res x res x 3) and dataset.json (count, crop, the source
file of every image in order, the skipped files with their reasons, a sha256 of images.npy). Decoding, crop
and resize run in --workers processes; the pixels stream to disk, so memory stays flat whatever N is.
The directory is built under a hidden temporary name and renamed into place only once it is complete.
"""
import fakefacegen  # noqa: F401  (first: an older Python stops there with one line)

# isort: split
import collections
import sys
import time

from fakefacegen.cli import SEED, ArgumentParser, UserError, integer, run
from fakefacegen.data.image_files import CELEBA_BOX, parse_crop
from fakefacegen.data.packed import build_dataset
from fakefacegen.data.photo_packing import chunk_size, default_workers, pack_source
from fakefacegen.data.toyfaces import TOYFACES, toyfaces
from fakefacegen.files import check_output
from fakefacegen.network import RESOLUTIONS


def pack_synthetic(count, out, res, seed=0, force=False, preview=False):
    """Render `count` toy faces into the packed dataset `out`, with their attributes and seed."""
    attributes = collections.defaultdict(list)

    def chunks():
        size = chunk_size(count, res, 1)
        for start in range(0, count, size):
            indices = list(range(start, min(start + size, count)))
            pixels, attrs = toyfaces(indices, res, seed)
            for name, values in attrs.items():
                attributes[name] += [int(v) for v in values]
            yield pixels, [f"{TOYFACES}:{i}" for i in indices], []

    # `attributes` is filled while the chunks stream and written to dataset.json once they are done.
    source_meta = {"crop": "none", "source": TOYFACES, "seed": seed, "attributes": attributes}
    return build_dataset(out, force, res, count, chunks(), source_meta, preview, desc=TOYFACES)


def summary(kept, skipped, out, res, seconds):
    """The one line printed at the end: counts, skip reasons, size and speed."""
    reasons = collections.Counter(item["reason"].split(":")[0] for item in skipped)
    why = f" ({', '.join(f'{n} {r}' for r, n in reasons.most_common())}; listed in dataset.json)" if skipped else ""
    total = len(kept) + len(skipped)
    megabytes = len(kept) * res * res * 3 / 1e6
    return (f"kept {len(kept)} / {total} images, skipped {len(skipped)}{why} -> {out} "
            f"({len(kept)}x{res}x{res}x3, {megabytes:.0f} MB) in {seconds:.1f} s ({total / seconds:.0f} img/s)")


SYNTHETIC_MAX = 10_000_000  # toy faces: 123 GB on disk at 64 px, 2 TB at 256 px


def parse_args(argv=None):
    parser = ArgumentParser(description=__doc__.split("\n")[0], epilog="\n".join(__doc__.split("\n")[1:]))
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--src", help="folder of images (searched recursively) or a .zip read in place")
    source.add_argument("--synthetic", type=integer(1, SYNTHETIC_MAX), metavar="N",
                        help="pack N built-in toy faces instead")
    parser.add_argument("--out", required=True, help="output directory (images.npy + dataset.json)")
    parser.add_argument("--res", type=int, default=64, help=f"output size in pixels: {RESOLUTIONS}")
    parser.add_argument("--crop", default="center",
                        help="celeba (face box for aligned 178x218 CelebA), center (largest centred square), "
                             "none (resize only), or a box L,T,R,B in pixels (default: center)")
    parser.add_argument("--limit", type=integer(1), help="only the first N images (sorted by name): a quick subset")
    parser.add_argument("--workers", type=integer(1, 256), default=default_workers(),
                        help="processes (default: all cores)")
    parser.add_argument("--seed", type=SEED, default=0, help="seed of --synthetic faces")
    parser.add_argument("--preview", action="store_true", help="also write preview.png, an 8x8 grid")
    parser.add_argument("--no-draft", dest="draft", action="store_false",
                        help="decode JPEGs at full size (a little sharper, ~1.5x slower)")
    parser.add_argument("--force", action="store_true", help="replace --out if it exists")
    args = parser.parse_args(argv)
    if args.res not in RESOLUTIONS:
        raise UserError(f"--res {args.res} is not supported: use one of {', '.join(map(str, RESOLUTIONS))}")
    args.crop = parse_crop(args.crop)
    check_output(args.out, "--out", kind="dataset")  # replacing it whole is build_dataset's rule, with --force
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
