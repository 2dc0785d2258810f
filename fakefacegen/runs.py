"""Where a run's files live: outputs/<run>/ (config.json, metrics.csv, samples/, plots) and
checkpoints/<run>/ (latest.pt, epoch_NNN.pt, best.pt), relative to where the command runs."""
import csv
import fcntl
import glob
import os
from datetime import datetime
from pathlib import Path

from fakefacegen.cli import UserError
from fakefacegen.data.toyfaces import TOYFACES
from fakefacegen.files import atomic_path, user_fixable_errors
from fakefacegen.training.iteration import METRICS

OUTPUTS, CHECKPOINTS = Path("outputs"), Path("checkpoints")
LOCK_NAME = ".lock"  # in checkpoints/<run>/: held by the process that trains the run


def output_dir(run):
    return OUTPUTS / one_folder(run)


def checkpoint_dir(run):
    return CHECKPOINTS / one_folder(run)


def one_folder(run):
    """A run's folder name: one name, never a path out of outputs/ or checkpoints/. Names given by the user
    were checked by the stricter check_run_name; this also holds for a name taken from a checkpoint's folder."""
    if not run or run in (".", "..") or any(c in run for c in "/\\\0"):
        raise UserError(f"run {run!r} is not a folder name: name the run with --run, e.g. --run celeba64")
    return run


def make_run_folders(run):
    """outputs/<run>/samples/ and checkpoints/<run>/, made first: a path that cannot be a folder (a file in the
    way, a read-only disk) fails in one line before any work."""
    for folder in (output_dir(run) / "samples", checkpoint_dir(run)):
        with user_fixable_errors(folder):
            folder.mkdir(parents=True, exist_ok=True)


class RunLock:
    """A run is owned by one process: an exclusive flock on checkpoints/<run>/.lock, held until release() (or
    the process's end: the kernel drops the lock of a killed process, so a kill -9 leaves nothing to clean up).
    The file holds the owner's PID, to name it to a second process, which is refused in one line."""

    def __init__(self):
        self.file = None

    def take(self, run):
        folder = checkpoint_dir(run)
        with user_fixable_errors(folder / LOCK_NAME):
            folder.mkdir(parents=True, exist_ok=True)
            lock = open(folder / LOCK_NAME, "a+")  # noqa: SIM115 - held open past this function, until release()
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock.seek(0)
            owner = lock.read().strip()  # empty for the instant between the owner's flock and its write
            lock.close()
            raise UserError(f"run {run} is being trained by process {owner or 'another process'}: wait for it, "
                            "or pick another --run") from None
        lock.truncate(0)
        lock.write(f"{os.getpid()}\n")
        lock.flush()
        self.file = lock

    def release(self):
        if self.file is not None:
            self.file.close()  # closing the last descriptor drops the flock
            self.file = None


def run_of_checkpoint(ckpt_path):
    """The run a checkpoint belongs to: the name of the folder it sits in."""
    return Path(ckpt_path).resolve().parent.name


def run_checkpoints(run):
    """The run's checkpoints, newest last: latest.pt and the epoch_NNN.pt (each written whole, atomically)."""
    folder = checkpoint_dir(run)
    found = [path for path in (folder / "latest.pt", *folder.glob("epoch_*.pt")) if path.is_file()]
    return sorted(found, key=lambda path: path.stat().st_mtime_ns)


def default_run_name(cfg):
    """<config or data name>-<res>px-<date>-<time>: the prefix is how --resume auto finds it again."""
    stem = Path(cfg["config"]).stem if cfg["config"] else Path(str(cfg["data"])).name
    return f"{stem}-{cfg['res']}px-{datetime.now():%Y%m%d-%H%M%S}"


def training_data(cfg):
    """What a run (by its saved settings) trained on: --data, the toy faces when it is not set."""
    return cfg.get("data") or TOYFACES


def fid_real_set(cfg):
    """What a run's FID is measured against: --fid-real, else its training data."""
    return cfg.get("fid_real") or training_data(cfg)


def find_resume_checkpoint(resume, cfg, run_given):
    """--resume auto|PATH -> a checkpoint path, or a UserError that says what is there to resume."""
    if resume != "auto":
        return Path(resume)
    if run_given:
        candidates = run_checkpoints(cfg["run"])
    else:  # the newest run made from the same config (or data) at the same resolution
        prefix = default_run_name(cfg).rsplit("-", 2)[0] + "-"
        runs = [folder.name for folder in CHECKPOINTS.glob(f"{glob.escape(prefix)}*") if folder.is_dir()]
        candidates = sorted((path for run in runs for path in run_checkpoints(run)),
                            key=lambda path: path.stat().st_mtime_ns)
    if not candidates:
        raise UserError("--resume auto found no checkpoint (latest.pt or epoch_NNN.pt) in checkpoints/<run>/ for "
                        "this run: start without --resume, or name the run with --run or the file with --resume PATH")
    return candidates[-1]


class MetricsLog:
    """metrics.csv, one line per --log-every iterations; on resume, lines past the checkpoint are dropped.
    Its rows are also kept in memory, as strings the way the file reads back, for the plots and the report."""

    COLUMNS = ("step", "epoch") + METRICS + ("images_per_s", "elapsed_s", "fid")

    def __init__(self, path, resume_step=None):
        self.path = path
        rows = []
        if resume_step is not None and path.exists():
            with path.open() as f:
                rows = [r for r in csv.DictReader(f) if int(r["step"]) <= resume_step]
        with atomic_path(path) as tmp, tmp.open("w", newline="") as f:
            writer = csv.DictWriter(f, self.COLUMNS)
            writer.writeheader()
            writer.writerows(rows)
        losses = loss_rows(rows)
        self.elapsed = float(losses[-1]["elapsed_s"]) if losses else 0.0
        self.rows = rows

    def append(self, row):
        with user_fixable_errors(self.path), self.path.open("a", newline="") as f:
            csv.DictWriter(f, self.COLUMNS).writerow(row)
        self.rows.append({column: str(row[column]) if column in row else "" for column in self.COLUMNS})


def loss_rows(rows):
    """The log lines of metrics.csv rows, without the FID lines (those carry a FID and nothing else)."""
    return [row for row in rows if row["loss_d"]]


def read_metrics(path):
    """The rows of a metrics.csv as dicts of strings ([] if there is none yet)."""
    if not Path(path).exists():
        return []
    with open(path) as f:
        return list(csv.DictReader(f))
