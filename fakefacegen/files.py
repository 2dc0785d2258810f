"""Writing files so that a crash, a kill or a power cut never leaves half of one: atomic paths, JSON and PNG,
fsync, and the clean-up of what killed processes left behind; the one rule for what a command may write over
(check_output); what a file is, told by its first bytes."""
import contextlib
import ctypes
import errno
import glob
import json
import os
import shutil
import stat
import tempfile
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
PACKED_DATASET_FILES = ("images.npy", "dataset.json")  # a folder holding both is preprocess.py's, and only its
# The first bytes of the files one command may be handed in place of another's, and what they make the file.
MAGIC = ((b"\x93NUMPY", "a .npy array"), (b"\x89PNG\r\n\x1a\n", "a PNG image"), (b"\xff\xd8\xff", "a JPEG image"),
         (b"GIF87a", "a GIF image"), (b"GIF89a", "a GIF image"), (b"PK\x03\x04", "a zip archive (.zip, .npz or .pt)"),
         (b"PK\x05\x06", "an empty zip archive"), (b"\x1f\x8b", "a gzip archive"))


def what_file_is(path):
    """What a file holds, read from its first bytes (never from its name): 'a PNG image', 'a pickle', 'a .npy
    array', 'a zip archive (.zip, .npz or .pt)', 'a safetensors file', 'an empty file', 'text', ..."""
    try:
        with open(path, "rb") as f:
            head = f.read(16)
    except OSError as err:
        return f"unreadable ({err.strerror})"
    if not head:
        return "an empty file"
    for magic, kind in MAGIC:
        if head.startswith(magic):
            return kind
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "a WebP image"
    if head[0] == 0x80 and 2 <= head[1] <= 5:  # PROTO opcode and version: pickles of protocol 2 and later
        return "a pickle"
    if len(head) >= 10 and head[8:10] == b'{"':  # an 8-byte header length, then the JSON header
        return "a safetensors file"
    if all(32 <= byte < 127 or byte in b"\t\r\n" for byte in head):
        return "text"
    return "of no format this project reads"


def path_kind(path):
    """What is at `path` once links are followed: missing, file, folder, stream (a character device such as
    /dev/null or a terminal, or a pipe), socket or block device."""
    try:
        mode = os.stat(path).st_mode
    except (FileNotFoundError, NotADirectoryError):
        return "missing"
    if stat.S_ISREG(mode):
        return "file"
    if stat.S_ISDIR(mode):
        return "folder"
    if stat.S_ISCHR(mode) or stat.S_ISFIFO(mode):
        return "stream"
    return "socket" if stat.S_ISSOCK(mode) else "block device"


def packed_dataset_holding(path):
    """The packed dataset folder (images.npy + dataset.json) that `path` lies in, at any depth, or None."""
    for folder in Path(os.path.realpath(path)).parents:
        if all((folder / name).is_file() for name in PACKED_DATASET_FILES):
            return folder
    return None


def check_output(path, flag, force=False, ours=False, suffixes=(), inputs=(), kind="file", names=()):
    """The one rule for every path a command writes, checked before any work; returns `path` as a Path.

    - A stream (/dev/null, /dev/stdout on a terminal or a pipe, a named pipe) is written through (atomic_path
      streams the bytes into it), never replaced; a folder where a file goes, a socket or a block device is
      refused.
    - Nothing goes into a packed dataset's folder, or any folder inside one: preprocess.py --force replaces
      only a folder that holds its own files alone.
    - No output is one of the command's `inputs`.
    - A file's extension names the format written: one of `suffixes`, else refused with them.
    - An existing file is replaced only if the command chose its name itself (`ours`: its default names under
      outputs/<run>/, or in its own folder, which carry the settings that made them) or with --force (`force`).

    kind "folder": files named `names` go into the folder `path` (made if missing), by the same rules;
    kind "dataset": `path` is a dataset folder that preprocess.py builds and swaps in whole, by its own rule
    for what it may replace (a dataset of its own, with --force).
    """
    path = Path(path)
    found = path_kind(path)
    if found == "stream" and kind == "file":
        return path
    check_place(path, flag, found, kind, suffixes)
    refuse_overwriting(path, inputs, flag)
    if suffixes and path.suffix.lower() not in suffixes:
        raise UserError(f"{flag} {path}: the name must end in {' or '.join(suffixes)} (the format written), e.g. "
                        f"{path.with_suffix(suffixes[0]).name}")
    if ours or force:
        return path
    if kind == "file" and found == "file":
        raise UserError(f"{flag} {path} already exists: add --force to replace it, or give another name")
    taken = sorted(set(os.listdir(path)) & set(names)) if kind == "folder" and found == "folder" else []
    if taken:
        raise UserError(f"{flag} {path} already holds {len(taken)} of the files this writes ({taken[0]}, ...): add "
                        "--force to replace them, or give another folder")
    return path


def check_place(path, flag, found, kind, suffixes):
    """check_output's rules on where `path` is: what is there now (`found`) fits `kind`, its parent is a
    folder, and no packed dataset holds it."""
    if kind == "file" and found not in ("missing", "file"):
        raise UserError(f"{flag} {path} is a {found}, not a file: give a file name"
                        + (f" ending in {suffixes[0]}" if suffixes else ""))
    if kind == "folder" and found not in ("missing", "folder"):
        raise UserError(f"{flag} {path} is a {found}, not a folder: give a folder")
    existing = next((p for p in path.absolute().parents if p.exists()), None)
    if existing is not None and not existing.is_dir():
        raise UserError(f"{flag} {path}: {existing} is a file, not a folder")
    dataset = packed_dataset_holding(path if kind == "dataset" else path / "x" if kind == "folder" else path)
    if dataset is not None:
        raise UserError(f"{flag} {path} is inside the packed dataset {dataset}: write it elsewhere, a dataset folder "
                        "holds only what preprocess.py wrote")


@contextlib.contextmanager
def atomic_path(path):
    """Yield a temporary path beside `path`; rename it over `path` only if the block succeeds.

    A crash or kill midway leaves the previous file untouched and a stray .NAME.PID.tmp, which the next
    write of the same name removes. The file is fsynced before the rename and the directory after it, so
    after a power cut `path` holds the old bytes or the new ones, never an empty or torn file.
    """
    path = Path(path)
    found = path_kind(path)
    if found == "stream":
        yield from _written_through(path)
        return
    if found not in ("missing", "file"):
        raise UserError(f"cannot write {path}: it is a {found}, which is never replaced; pick another path")
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


def _written_through(path):
    """atomic_path's way with a stream (/dev/null, a terminal, a pipe): the caller writes a private temporary,
    whose bytes are then copied into the stream; the device node or pipe itself stays as it is."""
    with tempfile.TemporaryDirectory(prefix="fakefacegen-") as folder, user_fixable_errors(path):
        tmp = Path(folder) / path.name
        yield tmp
        try:
            with open(tmp, "rb") as source, open(path, "wb") as stream:
                shutil.copyfileobj(source, stream)
        except BrokenPipeError:
            raise UserError(f"cannot write {path}: its reader closed it before the end (a broken pipe)") from None


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
