"""Speed of preprocess.py against a naive one-process PIL loop doing the same crop and resize.

    python -m benchmarks.bench_preprocess                      # ../shared/data/celeba_sample, 64 px, celeba crop
    python -m benchmarks.bench_preprocess --src photos/ --crop center --res 128 --limit 2000

Each method runs in a fresh child process (so peak memory figures do not mix), after one pass that reads
every file so all find them in the page cache. Times exclude Python start-up and imports; with --repeat
the methods take turns and the best time of each counts (other programs on the machine add noise).
CPU ms/image (all processes) does not depend on how busy the machine is: it shows the work saved.
Peak RSS is sampled every 20 ms over the child and its worker processes, summed (pages the workers share
with their parent after fork are counted once per process, so the sum overstates what is really used).
"""
import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from fakefacegen.cli import UserError, run
from fakefacegen.data.image_files import RESAMPLE, crop_box, find_images, parse_crop
from fakefacegen.data.photo_packing import default_workers, pack_source

REPO = Path(__file__).resolve().parents[1]
DEFAULT_SRC = REPO.parent / "shared" / "data" / "celeba_sample"


def naive(files, res, crop, out_dir):
    """What one would write first: open, convert, crop, resize, one file after the other, all in RAM."""
    faces = []
    for path in files:
        image = Image.open(path).convert("RGB")
        box = crop_box(image.size, crop)
        faces.append(np.asarray(image.crop(box).resize((res, res), RESAMPLE)))
    np.save(Path(out_dir) / "images.npy", np.stack(faces))
    return len(faces)


def measure(method, src, res, crop, limit, workers):
    """Run one method here and return its figures (called in a child process)."""
    with tempfile.TemporaryDirectory() as tmp:
        cpu_before = cpu_seconds()
        started = time.perf_counter()
        if method == "naive":
            count = naive(find_images(src)[:limit], res, crop, tmp)
        else:
            kept, skipped = pack_source(src, Path(tmp) / "out", res, crop, limit, workers,
                                        draft=method != "preprocess-no-draft")
            count = len(kept) + len(skipped)
        seconds = time.perf_counter() - started
        cpu = cpu_seconds() - cpu_before
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kB on Linux
    return {"method": method, "images": count, "seconds": seconds, "rate": count / seconds,
            "cpu_ms": 1000 * cpu / count, "main_rss_mb": peak}


def cpu_seconds():
    """CPU time used so far by this process and its finished children (the pool's workers)."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def tree_rss(pid):
    """Resident memory (bytes) of a process and all its descendants, from /proc (Linux)."""
    total = 0
    try:
        with open(f"/proc/{pid}/statm") as f:
            total = int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
        for task in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{task}/children") as f:
                total += sum(tree_rss(int(child)) for child in f.read().split())
    except (FileNotFoundError, ProcessLookupError):  # it ended while we looked
        pass
    return total


def run_child(method, args):
    """Measure `method` in a fresh Python process, sampling its memory; returns its figures."""
    command = [sys.executable, "-m", "benchmarks.bench_preprocess", "--measure", method, "--src", str(args.src),
               "--res", str(args.res), "--crop", args.crop, "--workers", str(args.workers)]
    if args.limit:
        command += ["--limit", str(args.limit)]
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        child = subprocess.Popen(command, stdout=out, stderr=err, text=True, cwd=REPO)
        peak = 0
        while child.poll() is None:
            peak = max(peak, tree_rss(child.pid))
            time.sleep(0.02)
        out.seek(0), err.seek(0)
        if child.returncode != 0:
            raise UserError(f"{method} failed: {(err.read().strip().splitlines() or ['?'])[-1]}")
        result = json.loads(out.read().strip().splitlines()[-1])
    return dict(result, tree_rss_mb=peak / 2**20)


def warm_cache(files):
    """Read every file once so that the first method measured is not the only one paying for the disk."""
    return sum(len(Path(f).read_bytes()) for f in files)


def main():
    parser = argparse.ArgumentParser(prog="python -m benchmarks.bench_preprocess",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("--src", type=Path, default=DEFAULT_SRC, help="folder of photos (default: %(default)s)")
    parser.add_argument("--res", type=int, default=64)
    parser.add_argument("--crop", default="celeba")
    parser.add_argument("--limit", type=int, help="only the first N photos")
    parser.add_argument("--workers", type=int, default=default_workers())
    parser.add_argument("--repeat", type=int, default=1, help="runs of each method, best one counts")
    parser.add_argument("--measure", help=argparse.SUPPRESS)  # internal: run one method in this process
    args = parser.parse_args()
    if not args.src.is_dir():
        raise UserError(f"--src {args.src} is not a folder: give a folder of photos")
    crop = parse_crop(args.crop)
    if args.measure:
        print(json.dumps(measure(args.measure, args.src, args.res, crop, args.limit, args.workers)))
        return

    files = find_images(args.src)[:args.limit]
    megabytes = warm_cache(files) / 1e6
    print(f"{len(files)} photos ({megabytes:.0f} MB) from {args.src}, {args.res} px, crop {args.crop}, "
          f"{os.cpu_count()} CPU cores, {args.workers} workers")
    methods = ("naive", "preprocess", "preprocess-no-draft")
    best = {}
    for _ in range(max(1, args.repeat)):
        for method in methods:
            result = run_child(method, args)
            if method not in best or result["rate"] > best[method]["rate"]:
                best[method] = result
    base = best["naive"]["rate"]
    for r in best.values():
        print(f"{r['method']:<20} {r['rate']:6.0f} images/s ({r['seconds']:5.2f} s) {r['rate'] / base:5.2f}x   "
              f"CPU {r['cpu_ms']:.2f} ms/image   "
              f"peak RSS: main {r['main_rss_mb']:4.0f} MB, with workers {r['tree_rss_mb']:4.0f} MB")
    print(f"speed-up of preprocess.py over the naive loop: {best['preprocess']['rate'] / base:.2f}x "
          f"(load average now {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores)")


if __name__ == "__main__":
    run(main)
