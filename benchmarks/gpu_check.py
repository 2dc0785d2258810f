"""Measure the GPU path end to end in one command, and write what was found.

    python -m benchmarks.gpu_check --data data/celeba64          # on a GPU: about 8 minutes on an H100
    python -m benchmarks.gpu_check --device cpu --data toyfaces --res 32 --epochs 1 --bench-res 32 \\
        --bench-batch 8 --width 8 --skip-tests                   # the plumbing, in a minute on a CPU

1. The GPU tests (tests/test_cuda_graph.py, tests/test_gpu_path.py): passed, failed, and skipped with why.
2. The bench sweep (python -m benchmarks.bench) at --bench-res and --bench-batch: images/s of every loop.
3. A timed train.py run of --epochs over --data with --config (the default recipe): images/s of training by
   the run's own clock (metrics.csv), images/s of the whole run end to end (the process's wall time: start-up,
   loading, saves and all), and the share of the wall time spent outside training steps.
Each part runs in its own process under a time limit, so one that hangs or fails leaves the others' figures.
Writes --out/gpu_check.json and --out/gpu_check.md. Without a CUDA GPU parts 2 and 3 are skipped, and the
files say so, unless --device cpu asks for them there (small settings, to check the plumbing).
"""
import json
import re
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

import torch

from fakefacegen.cli import ArgumentParser, UserError, integer, resolve_device, run
from fakefacegen.files import write_json, write_text
from fakefacegen.network import RESOLUTIONS
from fakefacegen.runs import read_metrics
from fakefacegen.settings import BATCH_SIZE, WIDTH

REPO = Path(__file__).resolve().parent.parent
GPU_TESTS = ("tests/test_cuda_graph.py", "tests/test_gpu_path.py")


def build_parser():
    p = ArgumentParser(prog="python -m benchmarks.gpu_check", description=__doc__)
    p.add_argument("--data", default="toyfaces", help="what the timed run trains on: a packed dataset (default "
                   "toyfaces)")
    p.add_argument("--config", default=str(REPO / "configs" / "celeba64.toml"), help="the timed run's config "
                   "(default configs/celeba64.toml)")
    p.add_argument("--res", type=int, choices=RESOLUTIONS, help="the timed run's resolution (default: the config's)")
    p.add_argument("--epochs", type=integer(1, 1000), default=25, help="the timed run's epochs (default 25)")
    p.add_argument("--bench-res", type=int, nargs="+", choices=RESOLUTIONS, default=[64, 128],
                   help="bench sweep resolutions (default 64 128)")
    p.add_argument("--bench-batch", type=BATCH_SIZE, nargs="+", default=[64, 128, 256, 512],
                   help="bench sweep batch sizes (default 64 128 256 512)")
    p.add_argument("--width", type=WIDTH, default=64, help="bench: ngf = ndf (default 64)")
    p.add_argument("--device", default="auto", help="auto | cuda | cuda:N | cpu (cpu: run every part there)")
    p.add_argument("--skip-tests", action="store_true", help="leave out part 1")
    p.add_argument("--minutes", type=integer(1, 60), nargs=3, default=[3, 4, 5], metavar=("TESTS", "BENCH", "TRAIN"),
                   help="time limit of each part in minutes (default 3 4 5)")
    p.add_argument("--out", default="outputs/gpu_check", help="folder for gpu_check.json and .md")
    return p


def run_part(command, minutes, cwd=REPO):
    """(exit status or "timeout", stdout + stderr, seconds) of a command under a time limit."""
    start = time.perf_counter()
    try:
        done = subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=minutes * 60)
        return done.returncode, done.stdout + done.stderr, time.perf_counter() - start
    except subprocess.TimeoutExpired as err:
        output = (err.stdout or b"").decode(errors="replace") + (err.stderr or b"").decode(errors="replace")
        return "timeout", output, time.perf_counter() - start


def gpu_tests(args):
    """Part 1: pytest's counts and each skip's reason."""
    if args.skip_tests:
        return {"skipped": "--skip-tests"}
    code, output, seconds = run_part([sys.executable, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider",
                                      *GPU_TESTS], args.minutes[0])
    counts = {kind: int(number) for number, kind in re.findall(r"(\d+) (passed|failed|skipped|error)", output)}
    reasons = sorted(set(re.findall(r"SKIPPED \[\d+\] [^:]+:\d+: (.+)", output)))
    return {"status": code, "seconds": round(seconds, 1), **counts, "skip_reasons": reasons,
            "tail": output.strip().splitlines()[-3:]}


def bench_sweep(args, device, out):
    """Part 2: the rows of benchmarks.bench's JSON."""
    path = out / "bench.json"
    command = [sys.executable, "-m", "benchmarks.bench", "--device", str(device), "--width", str(args.width),
               "--json", str(path), "--res", *map(str, args.bench_res), "--batch", *map(str, args.bench_batch)]
    code, output, seconds = run_part(command, args.minutes[1])
    if code != 0 or not path.is_file():
        return {"status": code, "seconds": round(seconds, 1), "tail": output.strip().splitlines()[-5:]}
    bench = json.loads(path.read_text())
    rows = [{key: row[key] for key in ("res", "batch", "loop", "images_per_s", "spread", "ratio")}
            for row in bench["results"]]
    return {"status": 0, "seconds": round(seconds, 1), "device": bench["device"], "rows": rows}


def timed_run(args, device, out):
    """Part 3: a train.py run in `out` (its outputs/ and checkpoints/ land there), timed from outside by its
    wall time and from inside by its own clock."""
    name = f"gpu-check-{datetime.now():%Y%m%d-%H%M%S}"
    data = args.data if args.data == "toyfaces" else str(Path(args.data).resolve())
    command = [sys.executable, str(REPO / "train.py"), "--config", str(Path(args.config).resolve()), "--data", data,
               "--epochs", str(args.epochs), "--run", name, "--device", str(device),
               *(["--res", str(args.res)] if args.res else [])]
    code, output, wall = run_part(command, args.minutes[2], cwd=out)
    run_dir = out / "outputs" / name
    rows = [row for row in read_metrics(run_dir / "metrics.csv") if row["loss_d"]]
    result = {"status": code, "run": str(run_dir), "command": " ".join(command[1:]), "wall_s": round(wall, 1)}
    if code != 0 or not rows:
        return {**result, "tail": output.strip().splitlines()[-5:]}
    config = json.loads((run_dir / "config.json").read_text())
    images = int(rows[-1]["step"]) * config["batch_size"] * config["d_steps"]
    training = float(rows[-1]["elapsed_s"])
    return {**result, "images": images, "train_s": round(training, 1),
            "train_images_per_s": round(images / training, 1), "end_to_end_images_per_s": round(images / wall, 1),
            "outside_steps_share": round(1 - training / wall, 4)}


def markdown(report):
    """gpu_check.md: one section per part."""
    head = [f"# GPU check, {report['when']}", "", f"Device: {report['device']}; torch {report['torch']}."]
    return "\n".join(head + tests_section(report["tests"]) + bench_section(report["bench"])
                     + train_section(report["train"])) + "\n"


def not_measured(part):
    return [f"Not measured: {part.get('skipped') or ' / '.join(part.get('tail') or ['no output'])}."]


def tests_section(tests):
    lines = ["", "## 1. GPU tests", ""]
    if "status" not in tests:
        return lines + [f"Skipped: {tests['skipped']}."]
    return lines + [f"{tests.get('passed', 0)} passed, {tests.get('failed', 0)} failed, {tests.get('skipped', 0)} "
                    f"skipped ({tests['seconds']} s)", ""] + [f"- skipped: {why}" for why in tests["skip_reasons"]]


def bench_section(bench):
    lines = ["", "## 2. Bench sweep", ""]
    if not bench.get("rows"):
        return lines + not_measured(bench)
    return lines + ["| res | batch | loop | images/s | spread | vs textbook |", "|---|---|---|---|---|---|"] + [
        f"| {r['res']} | {r['batch']} | {r['loop']} | {r['images_per_s']:,.0f} | {100 * r['spread']:.1f}% | "
        f"{r['ratio']:.2f}x |" for r in bench["rows"]]


def train_section(train):
    lines = ["", "## 3. Timed training run", ""]
    if "train_images_per_s" not in train:
        return lines + not_measured(train)
    return lines + [f"`{train['command']}`", "",
                    "| images | training s | wall s | training img/s | end-to-end img/s | outside steps |",
                    "|---|---|---|---|---|---|",
                    f"| {train['images']:,} | {train['train_s']} | {train['wall_s']} | "
                    f"{train['train_images_per_s']:,.0f} | {train['end_to_end_images_per_s']:,.0f} | "
                    f"{100 * train['outside_steps_share']:.1f}% |"]


def main(argv=None):
    args = build_parser().parse_args(argv)
    device = resolve_device(args.device)
    if not (args.data == "toyfaces" or Path(args.data).is_dir()):
        raise UserError(f"--data {args.data} not found: give a dataset packed by preprocess.py, or toyfaces")
    if not Path(args.config).is_file():
        raise UserError(f"--config {args.config} not found")
    out = Path(args.out).resolve()  # the parts run in other folders
    out.mkdir(parents=True, exist_ok=True)
    report = {"when": datetime.now().isoformat(timespec="seconds"), "torch": torch.__version__,
              "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU",
              "tests": gpu_tests(args)}
    if device.type == "cuda" or args.device == "cpu":
        report["bench"] = bench_sweep(args, device, out)
        report["train"] = timed_run(args, device, out)
    else:
        why = "no CUDA GPU here (--device cpu runs them on the CPU, with small settings to check the plumbing)"
        report["bench"], report["train"] = {"skipped": why}, {"skipped": why}
    write_json(out / "gpu_check.json", report)
    text = markdown(report)
    write_text(out / "gpu_check.md", text)
    print(text + f"\nwrote {out / 'gpu_check.json'} and {out / 'gpu_check.md'}")


if __name__ == "__main__":
    run(main)
