"""Measure the GPU path end to end in one command, and write what was found.

    timeout 540 python -m benchmarks.gpu_check --out $OUT/gpu_check   # on a GPU: at most 6.5 minutes of parts
    python -m benchmarks.gpu_check --device cpu --config tiny.toml --res 32 --epochs 1 --toy-size 256 \\
        --bench-res 32 --width 8 --bench-batch 8   # the plumbing on a CPU (tiny.toml: ngf, ndf, batch_size)

1. The GPU tests (those marked `gpu` in tests/test_cuda_graph.py and tests/test_gpu_path.py, nothing else):
   passed, failed with why, and skipped with why.
2. The bench sweep (python -m benchmarks.bench) at --bench-res and --bench-batch: images/s of every loop.
3. A timed train.py run of --epochs over --data (default: 10,000 built-in toy faces, no dataset needed) with
   --config (the default recipe): images/s of training by the run's own clock (metrics.csv), images/s of the
   whole run end to end (the process's wall time: start-up, loading, saves and all), and the share of the wall
   time spent outside training steps.
Each part runs in a session of its own under a time limit (--limits, 90 + 180 + 120 s by default: 6.5 minutes),
and its whole process group is ended when the limit comes, when gpu_check is stopped (Ctrl-C, SIGTERM from
`timeout`) and when the part ends, so nothing of one part runs while the next is timed. A part cut by its limit
keeps what it measured (the bench's finished sizes, the run's logged lines), and gpu_check.json and
gpu_check.md are rewritten after every part, so a cut-off check still leaves every figure it took.
Everything goes into --out, in small files (each at most 16 MiB): gpu_check.json, gpu_check.md, bench.json,
tests.xml, each part's log, and the run's outputs/ folder as train-<time>/ (its checkpoints are written to a
temporary folder, which is removed). Without a CUDA GPU parts 2 and 3 are skipped, and the files say so,
unless --device cpu asks for them there (small settings, to check the plumbing).
"""
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ElementTree
from datetime import datetime
from pathlib import Path

import torch

from fakefacegen.cli import ArgumentParser, UserError, integer, resolve_device, run
from fakefacegen.files import check_output, write_json, write_text
from fakefacegen.network import RESOLUTIONS
from fakefacegen.runs import loss_rows, read_metrics
from fakefacegen.settings import BATCH_SIZE, WIDTH

REPO = Path(__file__).resolve().parent.parent
GPU_TESTS = ("tests/test_cuda_graph.py", "tests/test_gpu_path.py")
# The GPU-marked tests alone: the files' other tests include the one that runs gpu_check itself
TEST_SELECTION = ("-m", "gpu", *GPU_TESTS)
LIMITS = (90, 180, 120)  # seconds per part: 6.5 minutes, under the 7 the first GPU run is given
MAX_FILE_BYTES = 16 * 2**20  # what comes back from a lent GPU machine, file by file
GRACE_S = 5  # between SIGTERM (train.py saves and stops on it) and SIGKILL for a part's process group
PARTS = ("tests", "bench", "train")
# Rough expectations on one H100, for the line each part starts with (not measured yet: the check measures them)
TESTS_H100_S = 60
BENCH_STARTUP_S, BENCH_SIZE_S, BENCH_64PX_128_S = 15, 4, 10  # start-up, per size, loops at 64 px batch 128
TRAIN_STARTUP_S, TRAIN_64PX_IMAGES_PER_S = 10, 30_000


def build_parser():
    p = ArgumentParser(prog="python -m benchmarks.gpu_check", description=__doc__)
    p.add_argument("--data", default="toyfaces", help="what the timed run trains on: a packed dataset (default "
                   "toyfaces, the built-in faces)")
    p.add_argument("--toy-size", type=integer(1, 1_000_000), default=10_000,
                   help="toy faces in the timed run's epoch, with --data toyfaces (default 10000)")
    p.add_argument("--config", default=str(REPO / "configs" / "celeba64.toml"), help="the timed run's config "
                   "(default configs/celeba64.toml: the default recipe at 64 px)")
    p.add_argument("--res", type=int, choices=RESOLUTIONS, help="the timed run's resolution (default: the config's)")
    p.add_argument("--epochs", type=integer(1, 1000), default=25, help="the timed run's epochs (default 25)")
    p.add_argument("--bench-res", type=int, nargs="+", choices=RESOLUTIONS, default=[64, 128],
                   help="bench sweep resolutions (default 64 128)")
    p.add_argument("--bench-batch", type=BATCH_SIZE, nargs="+", default=[16, 128],
                   help="bench sweep batch sizes (default 16 128: configs/celeba64.toml's and the target's)")
    p.add_argument("--width", type=WIDTH, default=64, help="bench: ngf = ndf (default 64)")
    p.add_argument("--device", default="auto", help="auto | cuda | cuda:N | cpu (cpu: run every part there)")
    p.add_argument("--skip-tests", action="store_true", help="leave out part 1")
    p.add_argument("--limits", type=integer(1, 3600), nargs=3, default=list(LIMITS),
                   metavar=("TESTS", "BENCH", "TRAIN"),
                   help=f"time limit of each part in seconds (default {' '.join(map(str, LIMITS))})")
    p.add_argument("--out", default="outputs/gpu_check", help="the folder everything goes into (default "
                   "outputs/gpu_check)")
    return p


def checked_settings(argv=None):
    """(args, device, out folder) of a command line, its inputs checked before any part starts."""
    args = build_parser().parse_args(argv)
    device = resolve_device(args.device)
    if not (args.data == "toyfaces" or Path(args.data).is_dir()):
        raise UserError(f"--data {args.data} not found: give a dataset packed by preprocess.py, or leave it out "
                        "for the built-in toy faces")
    if not Path(args.config).is_file():
        raise UserError(f"--config {args.config} not found")
    out = check_output(Path(args.out), "--out", ours=True, kind="folder").resolve()  # the parts run elsewhere
    return args, device, out


class Stopped(KeyboardInterrupt):
    """SIGTERM (from `timeout`, say) stops gpu_check as Ctrl-C does: the running part's group is ended and the
    files keep what was measured."""


def stop(signum, frame):
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # one is enough: the part's group is being ended
    raise Stopped


def run_part(command, seconds, log, cwd=REPO):
    """(exit status, "timeout" or "stopped"; seconds) of a command in a session of its own under a time limit,
    its output into `log`. The session's whole process group is ended however the command ends: a test or a
    bench that started processes of its own leaves none behind to share the GPU with the next part."""
    start = time.perf_counter()
    with open(log, "w") as output:
        process = subprocess.Popen(command, cwd=cwd, stdout=output, stderr=subprocess.STDOUT,
                                   stdin=subprocess.DEVNULL, start_new_session=True)
        try:
            status = process.wait(timeout=seconds)
        except subprocess.TimeoutExpired:
            status = "timeout"
        except KeyboardInterrupt:
            status = "stopped"
        finally:
            end_group(process)
    return status, time.perf_counter() - start


def end_group(process):
    """SIGTERM to the process group the command leads, then SIGKILL to whatever is left after GRACE_S."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        deadline = time.monotonic() + GRACE_S
        try:
            os.killpg(process.pid, sig)
            while time.monotonic() < deadline:
                process.poll()  # the leader is reaped here; the others by init once it is gone
                os.killpg(process.pid, 0)
                time.sleep(0.05)
        except ProcessLookupError:  # the group is gone
            process.wait()
            return
    process.wait()


def written_since(path, since):
    """Whether `path` was written by this part (a file of an earlier check would pass for its figures)."""
    return path.is_file() and path.stat().st_mtime >= since - 1  # some file systems keep whole seconds


def log_tail(log, lines=5):
    return Path(log).read_text(errors="replace").strip().splitlines()[-lines:]


def gpu_tests(args, device, out):
    """Part 1: each GPU test's outcome (from pytest's JUnit XML), with why for each failure and skip."""
    if args.skip_tests:
        return {"skipped": "--skip-tests"}
    xml, since = out / "tests.xml", time.time()
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", f"--junitxml={xml}", *TEST_SELECTION]
    status, seconds = run_part(command, args.limits[0], out / "tests.log")
    result = {"status": status, "seconds": round(seconds, 1), "selection": " ".join(TEST_SELECTION)}
    if status != 0:
        result["tail"] = log_tail(out / "tests.log")
    if not written_since(xml, since):
        return result
    outcomes = [outcome(case) for case in ElementTree.parse(xml).iter("testcase")]
    counts = {kind: sum(found == kind for found, _, _ in outcomes) for kind in ("passed", "failed", "skipped")}
    return {**result, **counts, "tests": [{"test": name, "outcome": found, **({"why": why} if why else {})}
                                          for found, name, why in outcomes]}


def outcome(case):
    """(passed | failed | skipped, the test's name, why) of one JUnit testcase."""
    name = f"{case.get('classname', '').rsplit('.', 1)[-1]}::{case.get('name')}"
    for tag, found in (("failure", "failed"), ("error", "failed"), ("skipped", "skipped")):
        element = case.find(tag)
        if element is not None:
            why = (element.get("message") or "").strip().splitlines()
            return found, name, why[0][:300] if why else ""
    return "passed", name, ""


def bench_sweep(args, device, out):
    """Part 2: the rows of benchmarks.bench's JSON, which it rewrites after every size (a sweep cut by its
    limit keeps the sizes it finished)."""
    path, since = out / "bench.json", time.time()
    command = [sys.executable, "-m", "benchmarks.bench", "--device", str(device), "--width", str(args.width),
               "--json", str(path), "--res", *map(str, args.bench_res), "--batch", *map(str, args.bench_batch)]
    status, seconds = run_part(command, args.limits[1], out / "bench.log")
    result = {"status": status, "seconds": round(seconds, 1)}
    if status != 0:
        result["tail"] = log_tail(out / "bench.log")
    if not written_since(path, since):
        return result
    bench = json.loads(path.read_text())
    rows = [{key: row[key] for key in ("res", "batch", "loop", "images_per_s", "spread", "ratio")}
            for row in bench["results"]]
    return {**result, "device": bench["device"], "rows": rows}


def timed_run(args, device, out):
    """Part 3: a train.py run, timed from outside by its wall time and from inside by its own clock. It runs in
    a temporary folder (its checkpoints are larger than what comes back from a GPU machine); its outputs/ folder
    is copied into `out` file by file, each at most MAX_FILE_BYTES, and the temporary folder removed. A run cut
    by its limit keeps the lines it logged."""
    name = f"train-{datetime.now():%Y%m%d-%H%M%S}"
    data = args.data if args.data == "toyfaces" else str(Path(args.data).resolve())
    command = [sys.executable, str(REPO / "train.py"), "--config", str(Path(args.config).resolve()), "--data", data,
               "--epochs", str(args.epochs), "--run", name, "--device", str(device),
               *(["--toy-size", str(args.toy_size)] if args.data == "toyfaces" else []),
               *(["--res", str(args.res)] if args.res else [])]
    work = Path(tempfile.mkdtemp(prefix="gpu_check-"))
    try:
        status, wall = run_part(command, args.limits[2], out / "train.log", cwd=work)
        left_out = copy_small_files(work / "outputs" / name, out / name)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    rows = loss_rows(read_metrics(out / name / "metrics.csv"))
    result = {"status": status, "run": name, "command": "train.py " + " ".join(command[2:]), "wall_s": round(wall, 1),
              **({"left_out": left_out} if left_out else {})}
    if status != 0:
        result["tail"] = log_tail(out / "train.log")
    if not rows:
        return result
    config = json.loads((out / name / "config.json").read_text())
    images = int(rows[-1]["step"]) * config["batch_size"] * config["d_steps"]
    training = float(rows[-1]["elapsed_s"])
    return {**result, "images": images, "epochs": f"{int(rows[-1]['step'])} iterations, in epoch "
            f"{rows[-1]['epoch']} of {config['epochs']}", "train_s": round(training, 1),
            "train_images_per_s": round(images / training, 1), "end_to_end_images_per_s": round(images / wall, 1),
            "outside_steps_share": round(1 - training / wall, 4)}


def copy_small_files(source, target):
    """Copy the files under `source` of at most MAX_FILE_BYTES to `target`; returns the others, with sizes."""
    left_out = []
    for path in sorted(source.rglob("*")) if source.is_dir() else []:
        if path.is_file() and path.stat().st_size > MAX_FILE_BYTES:
            left_out.append(f"{path.relative_to(source)} ({path.stat().st_size / 2**20:.0f} MiB)")
        elif path.is_file():
            (target / path.relative_to(source)).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, target / path.relative_to(source))
    return left_out


def estimates(args):
    """(part, what it does, its limit, rough seconds on one H100) of each part."""
    sizes = [(res, batch) for res in args.bench_res for batch in args.bench_batch]
    bench_s = BENCH_STARTUP_S + sum(BENCH_SIZE_S + BENCH_64PX_128_S * (res / 64) ** 2 * batch / 128 *
                                    (args.width / 64) ** 2 for res, batch in sizes)
    images = args.epochs * (args.toy_size if args.data == "toyfaces" else 0)
    res = args.res or 64
    train_s = TRAIN_STARTUP_S + images * (res / 64) ** 2 / TRAIN_64PX_IMAGES_PER_S
    sizes_text = ", ".join(f"{res} px batch {batch}" for res, batch in sizes)
    data = f"{args.toy_size:,} toy faces" if args.data == "toyfaces" else args.data
    return [("1, GPU tests", f"pytest {' '.join(TEST_SELECTION)}", args.limits[0],
             None if args.skip_tests else TESTS_H100_S),
            ("2, bench", f"{sizes_text}, ngf = ndf = {args.width}", args.limits[1], bench_s),
            ("3, train.py", f"{args.epochs} epoch{'s' * (args.epochs > 1)} of {data}", args.limits[2],
             train_s if images else None)]


def markdown(report):
    """gpu_check.md: the targets, then one section per part."""
    head = [f"# GPU check, {report['when']}", "", f"Device: {report['device']}; torch {report['torch']}; "
            f"{report['wall_s']:.0f} s so far of limits adding up to {sum(report['limits'])} s."]
    return "\n".join(head + targets_section(report) + tests_section(report["tests"])
                     + bench_section(report["bench"]) + train_section(report["train"])) + "\n"


def targets_section(report):
    """The targets on one H100 or H200, each with what this check measured."""
    cuda = report["device"] != "CPU"
    bench = [r for r in report["bench"].get("rows", []) if (r["res"], r["batch"]) == (64, 128)
             and r["loop"].startswith("fakefacegen (") and "CUDA graph" in r["loop"]]
    train = report["train"]
    rows = [("the whole check", "<= 420 s", f"{report['wall_s']:.0f} s", report["wall_s"] <= 420),
            ("bench, 64 px batch 128, with the CUDA graph", ">= 45,000 img/s",
             f"{bench[0]['images_per_s']:,.0f} img/s" if bench else None,
             bench[0]["images_per_s"] >= 45_000 if bench else None),
            ("25 epochs of 10k faces, end to end", "<= 15 s",
             f"{train['wall_s']} s for {train['images']:,} images" if "images" in train else None,
             train["wall_s"] <= 15 if "images" in train and train["status"] == 0 else None),
            ("  of which in training steps", ">= 80%",
             f"{100 * (1 - train['outside_steps_share']):.0f}%" if "images" in train else None,
             train["outside_steps_share"] <= 0.2 if "images" in train and train["status"] == 0 else None)]
    lines = ["", "## Targets (one H100 or H200)", "", "| target | goal | measured | met |", "|---|---|---|---|"]
    for what, goal, measured, met in rows:
        verdict = "-" if met is None or not cuda else "yes" if met else "**no**"
        lines.append(f"| {what} | {goal} | {measured or 'not measured'} | {verdict} |")
    return lines + ([] if cuda else ["", "Not a GPU: the figures check the plumbing, not the targets."])


def not_measured(part):
    return [f"Not measured: {part.get('skipped') or ' / '.join(part.get('tail') or ['no output'])}."]


def cut(part):
    """A line for a part that did not end by itself: what stopped it, and its last words."""
    if part.get("status", 0) == 0:
        return []
    how = {"timeout": "cut by its time limit", "stopped": "stopped with gpu_check"}.get(part["status"],
                                                                                      f"exit status {part['status']}")
    return ["", f"**{how}**: the figures above are what it measured before. Its last lines:", "", "```",
            *part.get("tail", []), "```"]


def tests_section(tests):
    lines = ["", "## 1. GPU tests", ""]
    if "passed" not in tests:
        return lines + not_measured(tests) + cut(tests)
    failed = [f"- failed: {test['test']}: {test.get('why', '')}" for test in tests["tests"]
              if test["outcome"] == "failed"]
    reasons = [test.get("why", "") for test in tests["tests"] if test["outcome"] == "skipped"]
    found = failed + [f"- skipped ({reasons.count(why)}): {why}" for why in sorted(set(reasons))]
    return lines + [f"`pytest {tests['selection']}`: {tests['passed']} passed, {tests['failed']} failed, "
                    f"{tests['skipped']} skipped ({tests['seconds']} s)", ""] + found + cut(tests)


def bench_section(bench):
    lines = ["", "## 2. Bench sweep", ""]
    if not bench.get("rows"):
        return lines + not_measured(bench) + cut(bench)
    return lines + ["| res | batch | loop | images/s | spread | vs textbook |", "|---|---|---|---|---|---|"] + [
        f"| {r['res']} | {r['batch']} | {r['loop']} | {r['images_per_s']:,.0f} | {100 * r['spread']:.1f}% | "
        f"{r['ratio']:.2f}x |" for r in bench["rows"]] + cut(bench)


def train_section(train):
    lines = ["", "## 3. Timed training run", ""]
    if "train_images_per_s" not in train:
        return lines + not_measured(train) + cut(train)
    return lines + [f"`{train['command']}` ({train['epochs']})", "",
                    "| images | training s | wall s | training img/s | end-to-end img/s | outside steps |",
                    "|---|---|---|---|---|---|",
                    f"| {train['images']:,} | {train['train_s']} | {train['wall_s']} | "
                    f"{train['train_images_per_s']:,.0f} | {train['end_to_end_images_per_s']:,.0f} | "
                    f"{100 * train['outside_steps_share']:.1f}% |"] + cut(train)


def write_report(out, report, started):
    report["wall_s"] = round(time.perf_counter() - started, 1)
    write_json(out / "gpu_check.json", report)
    write_text(out / "gpu_check.md", markdown(report))


def main(argv=None):
    started = time.perf_counter()
    args, device, out = checked_settings(argv)
    out.mkdir(parents=True, exist_ok=True)
    for part, what, limit, seconds in estimates(args):
        guess = "left out" if part.startswith("1") and args.skip_tests else "no estimate" if seconds is None \
            else f"about {seconds:.0f} s on one H100"
        print(f"part {part} ({what}): limit {limit} s, {guess}"
              + (": it may be cut" if seconds is not None and seconds > limit else ""))
    print(f"limits {sum(args.limits)} s in all; the report is rewritten after every part: "
          f"{out / 'gpu_check.md'}", flush=True)
    measured = device.type == "cuda" or args.device == "cpu"
    why_not = "no CUDA GPU here (--device cpu runs it on the CPU, with small settings to check the plumbing)"
    report = {"when": datetime.now().isoformat(timespec="seconds"), "torch": torch.__version__,
              "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU",
              "limits": args.limits, **{part: {"skipped": "not run yet"} for part in PARTS}}
    write_report(out, report, started)
    signal.signal(signal.SIGTERM, stop)
    stopped = False
    for part, measure in zip(PARTS, (gpu_tests, bench_sweep, timed_run)):
        if stopped:
            report[part] = {"skipped": "gpu_check was stopped"}
        elif part != "tests" and not measured:
            report[part] = {"skipped": why_not}
        else:
            print(f"part {part} ...", flush=True)
            report[part] = measure(args, device, out)
            stopped = report[part].get("status") == "stopped"
        write_report(out, report, started)
    print(markdown(report) + f"\nwrote {out}/: gpu_check.json, gpu_check.md and what the parts wrote")
    if stopped:
        raise KeyboardInterrupt


if __name__ == "__main__":
    run(main)
