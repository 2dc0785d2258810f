"""TensorBoard events for --tensorboard, in outputs/<run>/tensorboard/: the log lines' losses, D outputs and
speed, FID, and the fixed-noise grid. Optional: only --tensorboard needs the tensorboard package.

Event files are append-only logs rather than files replaced atomically: a kill can cut the last record, and
TensorBoard's reader skips a cut record. On resume the events past the checkpoint are marked for TensorBoard to
drop (purge_step), as metrics.csv drops its lines past the checkpoint."""
from numbers import Real

import numpy as np

from fakefacegen.cli import UserError

MISSING = "--tensorboard needs the tensorboard package: pip install tensorboard"
# metrics.csv's columns -> TensorBoard tags, grouped so that related curves share a section of the page.
TAGS = {"loss_d": "loss/loss_d", "loss_g": "loss/loss_g", "d_real": "D_output/d_real",
        "d_fake": "D_output/d_fake", "real_sign": "D_output/real_sign",
        "augment_p": "augment/p", "images_per_s": "speed/images_per_s", "fid": "eval/fid"}
GRID_TAG = "samples/fixed_noise"


def summary_writer_class():
    """torch's SummaryWriter, or a UserError in one line when the tensorboard package is not installed.
    Call it while checking the settings, so that a missing package stops the run before anything is written."""
    try:  # imported here, not at the top: tensorboard is an optional extra that only --tensorboard needs
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:  # torch.utils.tensorboard imports the tensorboard package first
        raise UserError(MISSING) from None
    return SummaryWriter


class TensorBoardLog:
    """One run's TensorBoard writer. The loop calls it only at log lines and saves, with the Python floats it
    already has, so it adds no host sync; events reach the disk every 30 s, at each grid and at close()."""

    def __init__(self, log_dir, resume_step=None):
        """log_dir: outputs/<run>/tensorboard; resume_step: the checkpoint's iteration when resuming, so
        that the events an interrupted run wrote after it are dropped, not drawn twice."""
        writer_class = summary_writer_class()
        purge = None if resume_step is None else resume_step + 1  # metrics.csv keeps steps <= resume_step
        self.writer = writer_class(log_dir=str(log_dir), purge_step=purge, flush_secs=30)

    def scalars(self, step, values):
        """A log line: {"loss_d": .., "loss_g": .., "d_real": .., "d_fake": .., "images_per_s": ..}, floats."""
        for name, value in values.items():
            self.writer.add_scalar(TAGS.get(name, f"train/{name}"), checked_float(name, value), step)

    def fid(self, step, value):
        self.writer.add_scalar(TAGS["fid"], checked_float("fid", value), step)

    def grid(self, step, image):
        """The fixed-noise grid (a PIL image) drawn at a save; flushed, as a save is where a run may end."""
        self.writer.add_image(GRID_TAG, np.asarray(image.convert("RGB")), step, dataformats="HWC")
        self.writer.flush()

    def close(self):
        self.writer.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def checked_float(name, value):
    """A plain number as float; a tensor is refused, because reading it here would sync the device."""
    if not isinstance(value, Real):
        raise TypeError(f"TensorBoardLog: {name} must be a Python float, not {type(value).__name__} "
                        "(read tensors once per log line, where the loop already does)")
    return float(value)
