"""Shared test helpers: run a script as a user would, and a tiny trained checkpoint."""
import contextlib
import importlib
import io
import os
import shutil
import signal
import subprocess
import sys
import traceback
from pathlib import Path

import pytest
import torch

from fakefacegen import cli
from fakefacegen.metrics.inception import cache_root

REPO = Path(__file__).resolve().parents[1]
CHROMIUM = "/usr/bin/chromium"  # Debian's: Playwright drives it and never downloads a browser
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
SHARED = REPO.parent / "shared"

# A model small enough to train a few iterations in about a second on a CPU.
TINY = ["--res", "32", "--ngf", "8", "--ndf", "8", "--batch-size", "16", "--toy-size", "128",
        "--recal-samples", "64", "--workers", "0", "--log-every", "1", "--device", "cpu"]


class LinearCritic(torch.nn.Module):
    """D(x) = w.x: its gradient is w at every point, which makes penalties easy to compute by hand."""

    def __init__(self, weight):
        super().__init__()
        self.weight = torch.nn.Parameter(weight)

    def forward(self, x):
        return x.flatten(1) @ self.weight.flatten()


def needs_gpu(available, reason):
    """A test that only a CUDA GPU can run: marked `gpu` (benchmarks.gpu_check runs those alone, with -m gpu)
    and skipped, with `reason`, where `available` is false."""
    def mark(test):
        return pytest.mark.gpu(pytest.mark.skipif(not available, reason=reason)(test))
    return mark


def run_script(script, *args, cwd, check=True, timeout=300, env=None, separate=False):
    """Run `python <script> args` in `cwd` (where outputs/ and checkpoints/ land), or `python -m <script>` for a
    module such as benchmarks.bench; returns a CompletedProcess. The command's main() runs in this process, as
    its `if __name__ == "__main__"` would run it (exit status, stdout and stderr as a user sees them), which
    spares the tests a Python start-up per command; `separate` (or an `env`) runs it in a process of its own,
    with `timeout`, as a user's shell would: each command keeps one such end-to-end test."""
    if separate or env is not None:
        return run_separately(script, args, cwd, check, timeout, env)
    module = importlib.import_module(Path(script).stem if script.endswith(".py") else script)
    argv = [str(arg) for arg in args]
    stdout, stderr = io.StringIO(), io.StringIO()
    saved = (os.getcwd(), sys.argv, signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM),
             torch.get_num_threads())
    os.chdir(cwd)
    sys.argv = [script, *argv]  # argparse names the command after it in its one-line errors
    try:
        with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
            code = exit_status(lambda: cli.run(lambda: module.main(argv)))
    finally:
        os.chdir(saved[0])
        sys.argv = saved[1]
        signal.signal(signal.SIGINT, saved[2])
        signal.signal(signal.SIGTERM, saved[3])
        torch.set_num_threads(saved[4])
    result = subprocess.CompletedProcess([script, *argv], code, stdout.getvalue(), stderr.getvalue())
    if check and code != 0:
        raise AssertionError(f"{script} {args} failed ({code}):\n{result.stderr[-3000:]}")
    return result


def exit_status(call):
    """The exit status a process would end with after call(): 0, SystemExit's code, or 1 with the traceback
    on stderr for an exception that escaped."""
    try:
        call()
    except SystemExit as exit:
        return exit.code if isinstance(exit.code, int) else (0 if exit.code is None else 1)
    except Exception:  # noqa: BLE001 - what the interpreter would print before exiting with status 1
        traceback.print_exc()
        return 1
    return 0


def run_separately(script, args, cwd, check, timeout, env):
    """`python <script> args` (or `python -m <script>`) in a process of its own."""
    command = [str(REPO / script)] if script.endswith(".py") else ["-m", script]
    env = {**(os.environ if env is None else env), "PYTHONPATH": str(REPO)}
    result = subprocess.run([sys.executable, *command, *map(str, args)], cwd=cwd, env=env,
                            capture_output=True, text=True, timeout=timeout)
    if check and result.returncode != 0:
        raise AssertionError(f"{script} {args} failed ({result.returncode}):\n{result.stderr[-3000:]}")
    return result


def assert_one_line_error(result, *words):
    """Exit status 2, a single `error:` line on stderr naming the problem, and no traceback."""
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == 2, (result.returncode, result.stderr[-2000:])
    assert "Traceback" not in result.stderr, result.stderr
    assert len(lines) == 1 and lines[0].startswith("error: "), lines
    for word in words:
        assert word in lines[0], (word, lines[0])


@pytest.fixture(autouse=True)
def torch_threads():
    """Each test starts with the threads torch had: a command's main() run in-process may set its own (toy2d
    trains on one), and the number of threads changes the rounding of a run's sums."""
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session", autouse=True)
def feature_cache(tmp_path_factory):
    """The FID statistics the tests compute are cached in a temporary folder, never in the user's cache; the
    Inception weights already converted there are read from it, not converted again."""
    root = tmp_path_factory.mktemp("cache")
    converted = cache_root() / "inception"
    if converted.is_dir():
        (root / "inception").symlink_to(converted)
    before = os.environ.get("FAKEFACEGEN_CACHE")
    os.environ["FAKEFACEGEN_CACHE"] = str(root)  # scripts the tests run inherit it
    yield root
    if before is None:
        del os.environ["FAKEFACEGEN_CACHE"]
    else:
        os.environ["FAKEFACEGEN_CACHE"] = before


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory):
    """A tiny toy-face run trained for 6 iterations: (working dir, checkpoint path)."""
    cwd = tmp_path_factory.mktemp("tiny")
    run_script("train.py", *TINY, "--max-steps", "6", "--run", "tiny", cwd=cwd, separate=True)
    return cwd, cwd / "checkpoints" / "tiny" / "latest.pt"


@pytest.fixture
def browser_page():
    """(page, errors): a page of headless Debian Chromium driven by Playwright, and the script errors it
    raises; skipped, with what to install, where either is missing."""
    sync_api = pytest.importorskip("playwright.sync_api", reason="pip install playwright (no `playwright install`)",
                                   exc_type=ImportError)
    if not shutil.which(CHROMIUM):
        pytest.skip(f"no {CHROMIUM}: apt-get install -y chromium")
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page, errors = browser.new_page(), []
            page.on("pageerror", lambda error: errors.append(str(error)))
            yield page, errors
        finally:
            browser.close()
