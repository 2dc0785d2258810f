"""Writing files so that a crash, a kill or a power cut never leaves half of one: atomic paths, JSON and PNG,
fsync, and the clean-up of what killed processes left behind."""
import contextlib
import ctypes
import errno
import glob
import json
import os
from collections.abc import Mapping
from pathlib import Path

from fakefacegen.cli import USER_FIXABLE, UserError

try:  # the C library, for renameat2; none on Windows
    _renameat2 = getattr(ctypes.CDLL(None, use_errno=True), "renameat2", None)
except (OSError, TypeError):
    _renameat2 = None
if _renameat2 is not None:
    _renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
AT_FDCWD, RENAME_EXCHANGE = -100, 2  # from Linux's <fcntl.h> and <linux/fs.h>


@contextlib.contextmanager
def atomic_path(path):
    """Yield a temporary path beside `path`; rename it over `path` only if the block succeeds.

    A crash or kill midway leaves the previous file untouched and a stray .NAME.PID.tmp, which the next
    write of the same name removes. The file is fsynced before the rename and the directory after it, so
    after a power cut `path` holds the old bytes or the new ones, never an empty or torn file.
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with user_fixable_errors(path):
            path.parent.mkdir(parents=True, exist_ok=True)
            for stale in dead_siblings(path, suffix=".tmp"):
                stale.unlink(missing_ok=True)
            yield tmp
            fsync_file(tmp)  # the caller wrote and closed tmp itself: reopen it to flush its bytes
            os.replace(tmp, path)
            fsync_dir(path.parent)
    finally:
        with contextlib.suppress(OSError):  # on a read-only or vanished folder there is nothing to clean up
            tmp.unlink(missing_ok=True)


def same_file(a, b):
    """Whether two paths name one file: by inode where both exist (links and other spellings included), else
    by the absolute path they resolve to."""
    a, b = Path(a), Path(b)
    try:
        return os.path.samefile(a, b)
    except OSError:
        return a.resolve() == b.resolve()


def refuse_overwriting(out, inputs, flag):
    """A UserError if the output path `out` (given by `flag`) is one of the files a command reads: no command
    writes over its own input."""
    for source in inputs:
        if source is not None and Path(source).is_file() and same_file(out, source):
            raise UserError(f"{flag} {out} is {source}, which this command reads: write the output to another file")


@contextlib.contextmanager
def user_fixable_errors(path):
    """A full disk, a quota, a read-only folder while writing `path`: one line that names it (UserError)."""
    try:
        yield
    except OSError as err:
        if err.errno not in USER_FIXABLE:
            raise
        raise UserError(f"cannot write {path}: {err.strerror}; pick another path, free some space or fix the "
                        "permissions (what was there before is intact)") from None


def fsync_file(path):
    """Flush a file's bytes to the disk (on Linux any descriptor of the file will do)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_dir(path):
    """Flush a directory's entries (a rename, a new name) to the disk; skipped where the system cannot."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except (PermissionError, IsADirectoryError):  # Windows opens no directory: nothing to flush there
        return
    try:
        os.fsync(fd)
    except OSError as err:
        if err.errno not in (errno.EINVAL, errno.ENOTSUP):  # a filesystem without directory fsync
            raise
    finally:
        os.close(fd)


def pid_alive(pid):
    """Whether a process with this id exists (on this machine)."""
    try:
        os.kill(pid, 0)  # signal 0: only asks whether the process exists
    except (ProcessLookupError, OverflowError):  # OverflowError: beyond a C int, so no process at all
        return False
    except PermissionError:  # it exists but belongs to someone else
        pass
    return True


def dead_siblings(path, tag="", suffix=""):
    """The hidden siblings .NAME.<tag>PID<suffix> of `path` whose process is gone: what a killed writer
    left. Only that name's siblings are listed, so this stays cheap in a folder of many files."""
    path = Path(path)
    prefix = f".{path.name}.{tag}"
    for sibling in path.parent.glob(glob.escape(prefix) + "*" + glob.escape(suffix)):
        pid = sibling.name[len(prefix):len(sibling.name) - len(suffix)]
        if pid.isdigit() and not pid_alive(int(pid)):
            yield sibling


def exchange(a, b):
    """Swap two existing paths in one atomic step (Linux renameat2 RENAME_EXCHANGE): a reader sees one or
    the other at each name, never neither. Returns False, having done nothing, where the system or the
    filesystem cannot."""
    if _renameat2 is None:
        return False
    if _renameat2(AT_FDCWD, os.fsencode(a), AT_FDCWD, os.fsencode(b), RENAME_EXCHANGE) == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.EINVAL, errno.ENOSYS, errno.ENOTSUP, errno.EXDEV):  # an old kernel or filesystem
        return False
    raise OSError(code, os.strerror(code), str(a), None, str(b))


def write_json(path, data):
    """A dict with one top-level key per line (a list: one item per line), each value compact: a config
    reads like a table, and the 200k file names of a dataset.json stay on one line."""
    if isinstance(data, Mapping):
        lines, brackets = [f"  {json.dumps(key)}: {json.dumps(value)}" for key, value in data.items()], "{}"
    else:
        lines, brackets = [f"  {json.dumps(item)}" for item in data], "[]"
    with atomic_path(path) as tmp:
        tmp.write_text(brackets[0] + "\n" + ",\n".join(lines) + "\n" + brackets[1] + "\n")


def write_text(path, text):
    """A text file (a table, a page), atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def save_png(image, path):
    """A PIL image as a PNG, atomically."""
    with atomic_path(path) as tmp:
        image.save(tmp, format="PNG")
