"""Errors a user meets before any input is read: an older Python, and a GPU out of memory, each one line."""
import subprocess
import sys

import pytest
import torch
from conftest import REPO

from fakefacegen.cli import run

COMMANDS = ["train.py", "generate.py", "evaluate_fid.py", "preprocess.py", "latent.py", "explore.py", "protocol.py",
            "compare.py", "dataloader.py", "network.py", "-m benchmarks.bench", "-m benchmarks.gpu_check"]


@pytest.mark.parametrize("command", COMMANDS)
def test_an_older_python_gets_one_line_from_every_command(command):
    # sys.version_info faked before the command runs, as a Python 3.10 would report it
    target = f"runpy.run_module({command.split()[1]!r}, run_name='__main__')" if command.startswith("-m") \
        else f"runpy.run_path({command!r}, run_name='__main__')"
    code = ("import runpy, sys; sys.version_info = (3, 10, 13, 'final', 0); sys.argv = ['x', '--help']; "
            + target)
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2, result.stderr[-2000:]
    assert len(lines) == 1 and lines[0].startswith("error: FakeFaceGen needs Python 3.11 or newer"), lines
    assert "usage" not in result.stdout  # stopped before parsing any flag


def test_scripts_import_fakefacegen_before_any_other_package():
    """So that a Python too old for the packages (which then never installed) still gets the line, not
    `No module named numpy`."""
    for script in COMMANDS:
        if script.startswith("-m"):
            continue
        lines = (REPO / script).read_text().split('"""', 2)[2].lstrip().splitlines()
        assert lines[0].startswith("import fakefacegen "), script
    assert "import fakefacegen" in (REPO / "benchmarks" / "__init__.py").read_text()


def test_cuda_out_of_memory_is_one_line_saying_what_to_lower(capsys):
    def main():
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    with pytest.raises(SystemExit) as stopped:
        run(main)
    assert stopped.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: the GPU ran out of memory")
    assert "--batch-size" in lines[0] and "--device cpu" in lines[0]


def test_other_errors_still_raise():
    def main():
        raise RuntimeError("a bug")

    with pytest.raises(RuntimeError, match="a bug"):
        run(main)
