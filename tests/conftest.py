"""Shared test helpers: run a script as a user would, and a tiny trained checkpoint."""
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

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


def run_script(script, *args, cwd, check=True, timeout=300, env=None):
    """Run `python <script> args` in `cwd` (where outputs/ and checkpoints/ land), or `python -m <script>` for a
    module such as benchmarks.bench (found from the repository's root), in `env` (default: this process's);
    returns CompletedProcess."""
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
    run_script("train.py", *TINY, "--max-steps", "6", "--run", "tiny", cwd=cwd)
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
