"""Writing files so that a crash or a kill never leaves half of one: atomic paths, JSON and PNG."""
import contextlib
import json
import os
from pathlib import Path


@contextlib.contextmanager
def atomic_path(path):
    """Yield a temporary path beside `path`; rename it over `path` only if the block succeeds.

    A crash or kill midway leaves the previous file untouched (at worst a stray .tmp file).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_json(path, data):
    """A dict with one top-level key per line (a list: one item per line), each value compact: a config
    reads like a table, and the 200k file names of a dataset.json stay on one line."""
    if isinstance(data, dict):
        lines, brackets = [f"  {json.dumps(key)}: {json.dumps(value)}" for key, value in data.items()], "{}"
    else:
        lines, brackets = [f"  {json.dumps(item)}" for item in data], "[]"
    with atomic_path(path) as tmp:
        tmp.write_text(brackets[0] + "\n" + ",\n".join(lines) + "\n" + brackets[1] + "\n")


def save_png(image, path):
    """A PIL image as a PNG, atomically."""
    with atomic_path(path) as tmp:
        image.save(tmp, format="PNG")
