"""FID (and KID) of generated faces against real ones, equal to pytorch-fid's, with no network needed; with --pr,
precision and recall too (is a poor FID low quality or low diversity?).

    python evaluate_fid.py --ckpt checkpoints/<run>/latest.pt --real data/celeba64
    python evaluate_fid.py --ckpt g.safetensors --real data/celeba64 --pr   # an exported generator; + P&R
    python evaluate_fid.py samples/ data/celeba64 --json fid.json     # FAKE REAL, any two sources
    python evaluate_fid.py data/celeba64 --save-stats celeba64.npz    # one source: save its statistics

A source is a checkpoint (.pt, or a generator exported as .safetensors: --n samples, seeds --seed..), a packed
dataset (preprocess.py), a folder of images (read at their own size, as pytorch-fid does), `toyfaces` (--n faces
at --res), or a .npz of statistics (mu, sigma: pytorch-fid's layout; no KID or precision/recall then).
Statistics of datasets are cached under ~/.cache/fakefacegen/fid_stats/ (or $FAKEFACEGEN_CACHE/fid_stats/),
keyed by content, N and resolution.
"""
import fakefacegen  # noqa: F401  (first: an older Python stops there with one line)

# isort: split
import sys
import time

from fakefacegen.cli import SEED, ArgumentParser, UserError, integer, resolve_device, run
from fakefacegen.files import check_output, write_json
from fakefacegen.metrics.fid import (
    DEFAULT_N,
    KID_SUBSET_SIZE,
    KID_SUBSET_SIZE_MAX,
    KID_SUBSETS,
    frechet_distance,
    kernel_inception_distance,
    kid_subset_size,
    save_stats,
)
from fakefacegen.metrics.fid_sources import open_source, stats_of_source
from fakefacegen.metrics.inception import BATCH_SIZE, load_inception
from fakefacegen.metrics.precision_recall import PR_K, precision_recall
from fakefacegen.metrics.repeated_faces import REPEAT_QUANTILE, repeated_faces
from fakefacegen.network import RESOLUTIONS
from fakefacegen.runs import training_data
from fakefacegen.settings import FID_N_MAX


def build_parser():
    p = ArgumentParser(description=__doc__)
    p.add_argument("sources", nargs="*", metavar="SOURCE", help="FAKE then REAL (or one with --save-stats)")
    p.add_argument("--ckpt", help="fake side: a checkpoint of train.py or a generator from generate.py --export")
    p.add_argument("--fake", help="fake side: any source")
    p.add_argument("--real", help="real side (default with --ckpt: the data the checkpoint was trained on)")
    p.add_argument("--n", type=integer(2, FID_N_MAX), default=DEFAULT_N,
                   help=f"samples from a checkpoint or toyfaces; at most this many of a dataset ({DEFAULT_N})")
    p.add_argument("--seed", type=SEED, default=0, help="sample i of a checkpoint uses seed+i; toyfaces seed")
    p.add_argument("--res", type=int, choices=RESOLUTIONS, metavar="RES",
                   help=f"toyfaces resolution, one of {', '.join(map(str, RESOLUTIONS))} (default: the checkpoint's, "
                        "else 64)")
    p.add_argument("--batch-size", type=integer(1, 512), default=BATCH_SIZE,
                   help=f"images per Inception batch ({BATCH_SIZE})")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N | mps")
    p.add_argument("--json", metavar="PATH", help="also write the results, N, resolutions and timings here")
    p.add_argument("--save-stats", metavar="PATH", help="with one source: write its mu, sigma as .npz and stop")
    p.add_argument("--force", action="store_true", help="replace an existing file named by --json or --save-stats")
    p.add_argument("--inception-weights", metavar="PATH", help="pytorch-fid's pt_inception-2015-12-05-*.pth")
    p.add_argument("--no-cache", action="store_true", help="neither read nor write cached dataset statistics")
    p.add_argument("--kid-subsets", type=integer(1, 10_000), default=KID_SUBSETS,
                   help=f"KID subsets ({KID_SUBSETS})")
    p.add_argument("--kid-subset-size", type=integer(2, KID_SUBSET_SIZE_MAX),
                   help=f"images per KID subset, below the smaller N for a spread (default {KID_SUBSET_SIZE}, or half "
                   "of N where N is not above it)")
    p.add_argument("--pr", action="store_true",
                   help=f"also precision (realism) and recall (diversity), k = {PR_K} (Kynkäänniemi et al. 2019), and "
                        "repeated faces (the share of fakes with a twin nearer than 99%% of real faces have theirs)")
    return p


def pick_sides(args):
    """(fake, real) source names from positionals and --ckpt/--fake/--real; with --save-stats exactly one is
    given, else the fake side and perhaps the real one (None: the checkpoint's training data)."""
    if args.ckpt and args.fake:
        raise UserError("give the fake side once: --ckpt or --fake, not both")
    rest = list(args.sources)
    fake = args.ckpt or args.fake or (rest.pop(0) if rest else None)
    real = args.real or (rest.pop(0) if rest else None)
    if rest:
        raise UserError(f"too many sources ({', '.join(rest)} left over): give FAKE and REAL, e.g. "
                        "--ckpt checkpoints/<run>/latest.pt --real data/celeba64")
    if args.save_stats and (fake is None) == (real is None):
        raise UserError("--save-stats takes exactly one source, e.g. evaluate_fid.py data/celeba64 --save-stats "
                        "celeba64.npz")
    if args.save_stats and args.pr:
        raise UserError("--pr compares two sides and --save-stats takes one: drop --pr")
    if not args.save_stats and fake is None:
        raise UserError("nothing to evaluate: give --ckpt checkpoints/<run>/latest.pt --real data/celeba64")
    for flag, out, suffix in (("--json", args.json, ".json"), ("--save-stats", args.save_stats, ".npz")):
        if out is not None:
            check_output(out, flag, args.force, suffixes=(suffix,), inputs=[fake, real])
    return fake, real


def summary(role, source, stats):
    """One line on a side: what it is, how many images at what size, and where its statistics came from."""
    if source is None:  # a .npz
        return f"{role}: {stats['label']} ({stats['n'] or 'unknown number of'} images)"
    where = f"from {stats['cached']}" if stats["cached"] else \
        f"{stats['seconds']:.1f} s, {stats['n'] / max(stats['seconds'], 1e-9):.1f} img/s"
    res = stats.get("res") or source.res
    return f"{role}: {source.label}: {stats['n']} images{f' at {res} px' if res else ''} ({where})"


def timed(timings, key, fn, *args):
    """fn(*args), its wall time recorded as timings[key]."""
    start = time.perf_counter()
    result = fn(*args)
    timings[key] = time.perf_counter() - start
    return result


def open_sides(args, fake_spec, real_spec, device):
    """[(role, ImageSource or .npz statistics)] (one side with --save-stats) and the real side's name, which
    defaults to the data a checkpoint was trained on."""
    fake, config = open_source(fake_spec or real_spec, args.n, args.res or 64, args.seed, device,
                               checkpoint=bool(args.ckpt))
    if args.save_stats:
        return [("fake", fake)], real_spec
    if real_spec is None:
        if config is None:
            raise UserError(f"no real side: add --real (a packed dataset, folder, toyfaces or .npz) to {fake_spec}")
        real_spec = str(training_data(config))
        print(f"real side: the checkpoint's training data, {real_spec}")
    res = args.res or (config or {}).get("res") or 64
    return [("fake", fake), ("real", open_source(real_spec, args.n, res, args.seed, device)[0])], real_spec


def statistics_of_sides(sides, args, device, timings):
    """{role: (ImageSource, or None for a .npz; its statistics)} and the Inception (None if no side needs it)."""
    model = None
    if any(not isinstance(source, dict) for _, source in sides):
        model = timed(timings, "load_inception", load_inception, device, args.inception_weights)
    results = {}
    for role, source in sides:
        if isinstance(source, dict):
            results[role] = (None, {**source, "seconds": 0.0, "cached": None})
        else:
            stats = stats_of_source(source, model, device, args.batch_size, not args.no_cache,
                                    desc=f"{role} features")
            results[role] = (source, stats)
        timings[f"{role}_features"] = results[role][1]["seconds"]
        print(summary(role if not args.save_stats else "source", *results[role]))
    return results, model


def kid_of_sides(fake, real, args, device, timings):
    """KID of the two sides' features as a report entry, or None when a side is a .npz (no features)."""
    if fake["features"] is None or real["features"] is None:
        print("KID n/a: a .npz of statistics has no features (give images or a checkpoint on both sides)")
        return None
    n = min(len(fake["features"]), len(real["features"]))
    subset_size, why = kid_subset_size(n, args.kid_subset_size)
    if why:
        print(why)
    kid = timed(timings, "kid", kernel_inception_distance, fake["features"], real["features"], args.kid_subsets,
                subset_size, args.seed, device)
    if kid["std"] is not None:
        print(f"KID {kid['mean']:.6f} ± {kid['std']:.6f} ({kid['subsets']} subsets of {kid['subset_size']})")
        return kid
    kid["note"] = (f"N={n} is too small for a spread: a subset of {subset_size} holds every image; give more "
                   f"images, or a --kid-subset-size below {n}"
                   if subset_size >= n else "one subset has no spread: use --kid-subsets 2 or more")
    print(f"KID {kid['mean']:.6f} (std n/a: {kid['note']})")
    return kid


def neighbour_measures(fake, real, device, timings):
    """Precision, recall and repeated faces of the two sides' features as report entries (None each when a side
    is a .npz)."""
    if fake["features"] is None or real["features"] is None:
        print("precision/recall and repeated faces n/a: a .npz of statistics has no features (give images or a "
              "checkpoint on both sides)")
        return {"precision_recall": None, "repeated_faces": None}
    pr = timed(timings, "precision_recall", precision_recall, real["features"], fake["features"], PR_K, device)
    print(f"precision {pr['precision']:.4f}, recall {pr['recall']:.4f} (k = {pr['k']}; precision: share of fakes "
          "that look real; recall: share of real images the fakes cover)")
    repeats = timed(timings, "repeated_faces", repeated_faces, real["features"], fake["features"], REPEAT_QUANTILE,
                    device)
    print(f"repeated faces {repeats['repeated']:.2%} of {repeats['n']} (fakes nearer to another fake than "
          f"{1 - repeats['quantile']:.0%} of real faces are to theirs; about {repeats['quantile']:.0%} for the data)")
    return {"precision_recall": pr, "repeated_faces": repeats}


def compare_sides(results, args, device, timings):
    """Print and return FID and KID of the fake side against the real one."""
    fake, real = results["fake"][1], results["real"][1]
    if fake.get("res") and real.get("res") and fake["res"] != real["res"]:
        print(f"warning: fakes are {fake['res']} px but real images {real['res']} px: FID then also measures the "
              "resolution gap; pack the real set at the same --res with preprocess.py", file=sys.stderr)
    fid = timed(timings, "fid", frechet_distance, fake["mu"], fake["sigma"], real["mu"], real["sigma"])
    print(f"FID {fid:.4f}")
    return fid, kid_of_sides(fake, real, args, device, timings)


def report(metrics, device, model, specs, results, timings):
    """What --json writes: the results (fid, kid; precision_recall, repeated_faces with --pr), each side's source, N and
    resolution, and the timings."""
    sides = {role: {"source": str(specs[role]), "kind": source.kind if source else "stats", "n": stats["n"],
                    "res": stats.get("res"), "cached": stats["cached"]}
             for role, (source, stats) in results.items()}
    return {**metrics, "device": str(device), "inception": model.weights_id if model is not None else None,
            **sides, "timings_s": {k: round(v, 3) for k, v in timings.items()}}


def main(argv=None):
    args = build_parser().parse_args(argv)
    started = time.perf_counter()
    device = resolve_device(args.device)
    fake_spec, real_spec = pick_sides(args)
    sides, real_spec = open_sides(args, fake_spec, real_spec, device)
    timings = {}
    results, model = statistics_of_sides(sides, args, device, timings)
    if args.save_stats:
        save_stats(args.save_stats, results["fake"][1])
        print(f"wrote {args.save_stats} (mu, sigma of {results['fake'][1]['n']} images)")
        return
    fid, kid = compare_sides(results, args, device, timings)
    metrics = {"fid": fid, "kid": kid}
    if args.pr:
        metrics.update(neighbour_measures(results["fake"][1], results["real"][1], device, timings))
    timings["total"] = time.perf_counter() - started
    if args.json:
        write_json(args.json, report(metrics, device, model, {"fake": fake_spec, "real": real_spec}, results,
                                     timings))
        print(f"wrote {args.json}")


if __name__ == "__main__":
    run(main)
