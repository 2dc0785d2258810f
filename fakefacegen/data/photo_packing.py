"""Packing a folder or .zip of photos into a packed dataset: decoding, crop and resize run in worker
processes, chunk by chunk, and the pixels stream to disk, so memory stays flat whatever the number of photos."""
import collections
import os
import signal
import threading
import time
import zipfile
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

from fakefacegen.cli import UserError
from fakefacegen.data.image_files import IMAGE_EXTENSIONS, BadImage, crop_label, find_images, load_face, open_member, zip_images
from fakefacegen.data.packed import build_dataset

CHUNK_BYTES = 4 << 20  # pixels a worker sends back at once; with WINDOW chunks in flight, caps the RAM used
WINDOW = 4  # chunks in flight per worker


def default_workers():
    """All the cores this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def list_source(src):
    """--src -> (the names of its images (relative paths or zip members), [{file, reason}] of the zip members
    skipped before reading: names that lead out of the zip); UserError if there are no images."""
    src = Path(src)
    if not src.exists():
        raise UserError(f"--src {src} does not exist: give a folder of images or a .zip such as "
                        "img_align_celeba.zip")
    escaping = []
    if src.is_dir():
        names = [path.relative_to(src).as_posix() for path in find_images(src)]
    elif zipfile.is_zipfile(src):
        try:
            names, escaping = zip_images(src)
        except (zipfile.BadZipFile, OSError) as err:
            raise UserError(f"--src {src} is a damaged zip file ({err}): download it again") from None
    else:
        raise UserError(f"--src {src} is neither a folder nor a zip file: give a folder of images or a .zip")
    if not names:
        raise UserError(f"no images ({', '.join(e[1:] for e in IMAGE_EXTENSIONS)}) found in {src}: "
                        "check the path")
    return names, escaping


def load_chunk(task):
    """Worker: decode a list of images -> (uint8 (k, res, res, 3) kept pixels, kept names, skipped)."""
    src, names, res, crop, draft = task
    is_zip = not os.path.isdir(src)
    faces, kept, skipped = [], [], []
    for name in names:
        try:
            faces.append(load_face(open_member(src, name, is_zip), res, crop, draft))
            kept.append(name)
        except BadImage as err:
            skipped.append({"file": name, "reason": str(err)})
    pixels = np.stack(faces) if faces else np.zeros((0, res, res, 3), np.uint8)
    return pixels, kept, skipped


def start_worker():
    """Worker start-up. Ctrl-C is left to the main process, which stops the pool and cleans up (else each
    worker prints its own traceback); and a worker quits when its parent dies, even by SIGKILL, which
    gives no chance to clean up: otherwise orphaned workers would wait for more work forever."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    parent = os.getppid()

    def watch():
        while os.getppid() == parent:
            time.sleep(1)
        os._exit(1)

    threading.Thread(target=watch, daemon=True).start()


def run_chunks(tasks, workers):
    """Results of load_chunk for each task, in order, computed `workers` at a time.

    Only WINDOW chunks per worker are in flight, so finished pixels never pile up in memory.
    """
    if workers <= 1:
        yield from map(load_chunk, tasks)
        return
    pool = ProcessPoolExecutor(workers, initializer=start_worker)
    try:
        pending = collections.deque()
        for task in tasks:
            pending.append(pool.submit(load_chunk, task))
            if len(pending) >= WINDOW * workers:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()
    finally:
        pool.shutdown(cancel_futures=True)


def chunk_size(count, res, workers):
    """Images per task: ~CHUNK_BYTES of pixels, but small enough that every worker gets several tasks."""
    by_bytes = max(1, CHUNK_BYTES // (res * res * 3))
    return max(1, min(by_bytes, -(-count // (WINDOW * workers))))


def pack_source(src, out, res, crop, limit=None, workers=1, force=False, preview=False, draft=True):
    """Preprocess a folder or zip of photos into the packed dataset `out`; returns (kept, skipped)."""
    names, escaping = list_source(src)
    names = names[:limit]
    size = chunk_size(len(names), res, workers)
    tasks = [(str(src), names[i:i + size], res, crop, draft) for i in range(0, len(names), size)]
    source_meta = {"crop": crop_label(crop), "source": str(src)}
    chunks = listed_first(escaping, run_chunks(tasks, min(workers, len(tasks))), res)
    return build_dataset(out, force, res, len(names) + len(escaping), chunks, source_meta, preview,
                         desc=Path(src).name, src=src)


def listed_first(skipped, chunks, res):
    """The chunks, after one of no pixels that lists `skipped`; closing it closes `chunks` (and their workers)."""
    yield np.zeros((0, res, res, 3), np.uint8), [], skipped
    yield from chunks
