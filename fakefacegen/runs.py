"""Where a run's files live: outputs/<run>/ (config.json, metrics.csv, samples/, plots) and
checkpoints/<run>/ (latest.pt, epoch_NNN.pt, best.pt), relative to where the command runs."""
import csv
from datetime import datetime
from pathlib import Path

from fakefacegen.cli import UserError
from fakefacegen.data.toyfaces import TOYFACES
from fakefacegen.files import atomic_path, user_fixable_errors
from fakefacegen.training.step import METRICS

OUTPUTS, CHECKPOINTS = Path("outputs"), Path("checkpoints")


def output_dir(run):
    return OUTPUTS / run


def checkpoint_dir(run):
    return CHECKPOINTS / run


def run_of_checkpoint(ckpt_path):
    """The run a checkpoint belongs to: the name of the folder it sits in."""
    return Path(ckpt_path).resolve().parent.name


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
        candidates = [checkpoint_dir(cfg["run"]) / "latest.pt"]
    else:  # the newest run made from the same config (or data) at the same resolution
        prefix = default_run_name(cfg).rsplit("-", 2)[0] + "-"
        candidates = sorted(CHECKPOINTS.glob(f"{prefix}*/latest.pt"), key=lambda p: p.stat().st_mtime)
    existing = [p for p in candidates if p.is_file()]
    if not existing:
        raise UserError("--resume auto found no checkpoints/<run>/latest.pt for this run: start without "
                        "--resume, or name the run with --run or the file with --resume PATH")
    return existing[-1]


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

    def read(self):
        """The rows so far (a copy: a save's background job reads it while the run appends)."""
        return list(self.rows)


def loss_rows(rows):
    """The log lines of metrics.csv rows, without the FID lines (those carry a FID and nothing else)."""
    return [row for row in rows if row["loss_d"]]


def read_metrics(path):
    """The rows of a metrics.csv as dicts of strings ([] if there is none yet)."""
    if not Path(path).exists():
        return []
    with open(path) as f:
        return list(csv.DictReader(f))
