"""benchmarks.gpu_check, the one command of a first GPU run, on a CPU: its parts end with every process they
started, a part cut by its limit keeps what it measured and leaves the others' figures, the report is there
after every part, it runs GPU tests alone (never itself), everything it leaves is small, and the command the
docs give needs nothing but the repository."""
import ast
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from conftest import REPO, run_script

from benchmarks import gpu_check

# A model small enough that the timed run takes seconds on a CPU: the default recipe's EMA and minibatch std
TINY_CONFIG = """ngf = 8
ndf = 8
batch_size = 16
recal_samples = 64
workers = 0
log_every = 1
ema_kimg = 0.5
mbstd = 4
"""
SMALL = ["--device", "cpu", "--res", "32", "--epochs", "1", "--toy-size", "256", "--bench-res", "32",
         "--bench-batch", "8", "--width", "8"]


def alive(pid):
    """Whether a process runs (a zombie, ended but not yet reaped, does not)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, ProcessLookupError):
        return False


def processes_naming(text):
    """The ids of running processes whose command line holds `text`."""
    found = []
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and text in (entry / "cmdline").read_bytes().decode(errors="replace"):
                found.append(int(entry.name))
        except OSError:  # gone meanwhile
            pass
    return [pid for pid in found if alive(pid) and pid != os.getpid()]


def gpu_marked():
    """The tests of gpu_check's test files marked as needing a GPU (decorated needs_cuda or needs_two_gpus)."""
    names = set()
    for path in gpu_check.GPU_TESTS:
        for node in ast.parse((REPO / path).read_text()).body:
            if isinstance(node, ast.FunctionDef) and any(isinstance(mark, ast.Name) and mark.id.startswith("needs_")
                                                         for mark in node.decorator_list):
                names.add(f"{Path(path).stem}::{node.name}")
    return names


def test_a_part_is_ended_with_every_process_it_started(tmp_path):
    """The command's child sleeps on after it, forever: when the limit comes, or when the command ends first,
    both are gone before the next part is timed."""
    for command, limit, status in (("sleep 1000 & echo $! > child; sleep 1000", 1, "timeout"),
                                   ("sleep 1000 & echo $! > child", 60, 0)):
        started = time.perf_counter()
        found, seconds = gpu_check.run_part(["sh", "-c", command], limit, tmp_path / "part.log", cwd=tmp_path)
        child = int((tmp_path / "child").read_text())
        assert found == status and seconds < limit + 2 * gpu_check.GRACE_S
        assert not alive(child) and time.perf_counter() - started < 30


def test_the_check_runs_every_part_on_a_cpu_and_a_part_cut_by_its_limit_leaves_the_others(tmp_path, monkeypatch):
    (tmp_path / "tiny.toml").write_text(TINY_CONFIG)
    temporary = tmp_path / "tmp"  # where the run's checkpoints go, then are removed
    temporary.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(temporary))
    started = time.perf_counter()
    result = run_script("benchmarks.gpu_check", *SMALL, "--config", "tiny.toml", "--out", "out", cwd=tmp_path)
    out = tmp_path / "out"
    report = json.loads((out / "gpu_check.json").read_text())

    # The budget is printed before the parts start, and the default limits fit the first GPU run's 7 minutes
    assert re.search(r"part 1, GPU tests \(pytest -m gpu .*\): limit 90 s, about \d+ s on one H100", result.stdout)
    assert "part 3, train.py (1 epoch of 256 toy faces): limit 120 s" in result.stdout
    assert int(re.search(r"limits (\d+) s in all", result.stdout)[1]) <= 420

    # 1: the GPU tests alone (their files' other tests run on a CPU: the whole files took minutes)
    tests = report["tests"]
    assert tests["status"] == 0 and tests["failed"] == 0, tests
    assert {test["test"].split("[")[0] for test in tests["tests"]} == gpu_marked()
    if not torch.cuda.is_available():
        assert tests["passed"] == 0 and all("needs" in test["why"] for test in tests["tests"])

    # 2 and 3: the bench's rows and the run's, by its clock and by the wall's
    assert [(row["res"], row["batch"]) for row in report["bench"]["rows"]][0] == (32, 8)
    train = report["train"]
    assert train["status"] == 0 and train["images"] == 256 and train["train_images_per_s"] > 0, train
    assert 0 < train["outside_steps_share"] < 1 and train["wall_s"] < time.perf_counter() - started
    parts = tests["seconds"] + report["bench"]["seconds"] + train["wall_s"]
    assert parts - 0.2 <= report["wall_s"] <= time.perf_counter() - started + 0.1  # each figure rounded to 0.1 s
    markdown = (out / "gpu_check.md").read_text()
    for section in ("## Targets", "## 1. GPU tests", "## 2. Bench sweep", "## 3. Timed training run"):
        assert section in markdown

    # One folder of small files: the run's outputs copied, its checkpoints left in a temporary folder, removed
    files = [path for path in out.rglob("*") if path.is_file()]
    assert (out / train["run"] / "metrics.csv").is_file() and (out / "bench.log").is_file()
    assert all(path.stat().st_size <= gpu_check.MAX_FILE_BYTES and path.suffix != ".pt" for path in files)
    assert not list(temporary.iterdir())

    # The bench cut by a limit it cannot meet: its part says so, the parts after it keep their figures
    run_script("benchmarks.gpu_check", *SMALL, "--config", "tiny.toml", "--skip-tests", "--limits", "60", "1", "120",
               "--out", "cut", cwd=tmp_path)
    report = json.loads((tmp_path / "cut" / "gpu_check.json").read_text())
    assert report["bench"]["status"] == "timeout" and "rows" not in report["bench"]
    assert report["train"]["status"] == 0 and report["train"]["train_images_per_s"] > 0
    assert "**cut by its time limit**" in (tmp_path / "cut" / "gpu_check.md").read_text()


def test_a_training_part_cut_by_its_limit_keeps_the_lines_it_logged(tmp_path, monkeypatch):
    """The limit comes after 3 logged iterations (here the run is made to stop there): their figures stay."""
    def cut_after_three_iterations(command, seconds, log, cwd):
        started = time.perf_counter()
        run_script("train.py", *command[2:], "--max-steps", "3", cwd=cwd)
        Path(log).write_text("epoch 1/1: 3 iterations\n")
        return "timeout", time.perf_counter() - started

    (tmp_path / "tiny.toml").write_text(TINY_CONFIG)
    monkeypatch.setattr(gpu_check, "run_part", cut_after_three_iterations)
    args = gpu_check.build_parser().parse_args([*SMALL, "--config", str(tmp_path / "tiny.toml")])
    train = gpu_check.timed_run(args, torch.device("cpu"), tmp_path)
    assert train["status"] == "timeout" and train["images"] == 3 * 16 and train["train_images_per_s"] > 0, train
    assert train["tail"] == ["epoch 1/1: 3 iterations"]
    report = {"when": "now", "device": "CPU", "torch": torch.__version__, "limits": [1, 1, 1], "wall_s": 1.0,
              "tests": {"skipped": "--skip-tests"}, "bench": {"skipped": "--skip-tests"}, "train": train}
    section = gpu_check.markdown(report).split("## 3. Timed training run")[1]
    assert "| 48 |" in section and "cut by its time limit" in section


def test_sigterm_ends_the_running_part_and_keeps_the_report(tmp_path):
    """`timeout` stops gpu_check with SIGTERM: the part running then (in a session of its own, which `timeout`
    cannot reach) is ended with it, and the report says which parts ran."""
    (tmp_path / "tiny.toml").write_text(TINY_CONFIG)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    check = subprocess.Popen([sys.executable, "-m", "benchmarks.gpu_check", *SMALL, "--config", "tiny.toml",
                              "--skip-tests", "--out", "out"], cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not processes_naming(str(tmp_path / "out" / "bench.json")) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert processes_naming(str(tmp_path / "out" / "bench.json")), "the bench never started"
    check.send_signal(signal.SIGTERM)
    _, stderr = check.communicate(timeout=60)
    assert check.returncode == 130 and "interrupted" in stderr
    assert not processes_naming(str(tmp_path / "out"))
    report = json.loads((tmp_path / "out" / "gpu_check.json").read_text())
    assert report["bench"]["status"] == "stopped" and report["train"] == {"skipped": "gpu_check was stopped"}


def test_the_documented_gpu_command_needs_nothing_but_the_repository(tmp_path, monkeypatch):
    """One command in the README, docs/speed.md and gpu_check's help: its `timeout` leaves every part its
    limit, and it trains on what the repository holds (the toy faces), not on a git-ignored dataset."""
    found = {}
    for name, text in (("README.md", (REPO / "README.md").read_text()),
                       ("docs/speed.md", (REPO / "docs" / "speed.md").read_text()), ("help", gpu_check.__doc__)):
        found[name] = {command.strip() for command in re.findall(r"timeout \d+ python -m benchmarks\.gpu_check[^`\n#]*",
                                                                  text)}
    commands = set.union(*found.values())
    assert all(found.values()) and len(commands) == 1, found
    words = commands.pop().replace("$OUT", str(tmp_path / "OUT")).split()
    monkeypatch.chdir(tmp_path)  # no data/ here: as on a machine with the repository alone
    args, device, out = gpu_check.checked_settings(words[5:])
    assert args.data == "toyfaces" and int(words[1]) >= sum(args.limits) + 60
