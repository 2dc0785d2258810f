"""files.py: atomic writes reach the disk (fsync of the file, then the rename, then the directory), leave
the old file on failure, and the next write of a name removes what killed writers left beside it."""
import errno
import os
import subprocess
import sys

import pytest
from PIL import Image

from fakefacegen import files
from fakefacegen.cli import UserError


def dead_pid():
    """The id of a process that has just exited (so none is running under it)."""
    child = subprocess.Popen([sys.executable, "-c", ""])
    child.wait()
    return child.pid


def test_stale_temporaries_of_dead_writers_are_removed(tmp_path):
    target = tmp_path / "x.json"
    stale = [tmp_path / ".x.json.99999999.tmp", tmp_path / f".x.json.{dead_pid()}.tmp"]
    odd = tmp_path / "[a].json"  # glob's special characters in the name
    stale.append(tmp_path / ".[a].json.99999999.tmp")
    live = tmp_path / f".x.json.{os.getppid()}.tmp"  # pytest's parent: alive, maybe still writing
    kept = [live, tmp_path / ".x.json.notapid.tmp", tmp_path / ".y.json.99999999.tmp", tmp_path / "x.json.99999999.tmp"]
    for path in stale + kept:
        path.write_text("half a file")
    files.write_json(target, {"a": 1})
    files.write_json(odd, [1])
    assert [path.name for path in stale if path.exists()] == []
    assert [path.name for path in kept if not path.exists()] == []
    assert live.read_text() == "half a file"
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([target.name, odd.name, *(p.name for p in kept)])


def inode(path_or_fd):
    info = os.fstat(path_or_fd) if isinstance(path_or_fd, int) else os.stat(path_or_fd)
    return info.st_dev, info.st_ino


def record_fsync_and_replace(monkeypatch):
    """A list that os.fsync (with the file's inode) and os.replace append to, in the order they run."""
    events = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd):
        events.append(("fsync", inode(fd)))
        real_fsync(fd)

    def replace(source, target):
        events.append(("replace", None))
        real_replace(source, target)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    return events


def test_atomic_path_fsyncs_the_file_before_the_rename_and_the_folder_after(tmp_path, monkeypatch):
    events = record_fsync_and_replace(monkeypatch)
    target = tmp_path / "sub" / "x.json"
    files.write_json(target, {"a": 1})
    assert events == [("fsync", inode(target)), ("replace", None), ("fsync", inode(target.parent))]
    events.clear()
    files.save_png(Image.new("RGB", (4, 4)), tmp_path / "p.png")
    assert events == [("fsync", inode(tmp_path / "p.png")), ("replace", None), ("fsync", inode(tmp_path))]


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EIO])
def test_a_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path, code):
    target = tmp_path / "x.json"
    files.write_json(target, {"old": True})
    before = target.read_bytes()
    # A full disk is the user's to fix: one line naming the file; an I/O error stays an OSError (a traceback).
    expected = UserError if code in files.USER_FIXABLE else OSError
    with pytest.raises(expected) as raised, files.atomic_path(target) as tmp:
        tmp.write_text('{"new": tr')  # half written when the disk fills up
        raise OSError(code, os.strerror(code))
    if expected is UserError:
        assert str(target) in str(raised.value) and "intact" in str(raised.value)
    else:
        assert raised.value.errno == code
    assert target.read_bytes() == before and sorted(p.name for p in tmp_path.iterdir()) == ["x.json"]


def test_exchange_swaps_two_folders(tmp_path):
    if files._renameat2 is None:
        pytest.skip("no renameat2 in this C library: publish falls back to two renames")
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "from_a").write_text("a")
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "from_b").write_text("b")
    assert files.exchange(tmp_path / "a", tmp_path / "b")
    assert [p.name for p in (tmp_path / "a").iterdir()] == ["from_b"]
    assert [p.name for p in (tmp_path / "b").iterdir()] == ["from_a"]
    with pytest.raises(FileNotFoundError):
        files.exchange(tmp_path / "a", tmp_path / "nowhere")
