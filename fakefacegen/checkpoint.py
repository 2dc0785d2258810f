"""Checkpoint files: written atomically, read with torch.load(weights_only=True) (data, never code), brought to
today's format (upgraded: the one place that knows older formats), checked before use. What a training
checkpoint holds is TrainState.state_dict() (training/state.py, the one layout).

load_checkpoint and load_generator also read a generator exported by `generate.py --export` (export.py), as the
same dict with G_eval and config only, so every tool that samples takes either file.
"""
import io
import warnings
from pathlib import Path

import torch

from fakefacegen.cli import UserError
from fakefacegen.export import EXPORT_SUFFIX, read_exported
from fakefacegen.files import atomic_path
from fakefacegen.network import (
    D_ARCHITECTURE_KEYS,
    G_ARCHITECTURE_KEYS,
    discriminator_from_config,
    generator_from_config,
)
from fakefacegen.settings import check_saved
from fakefacegen.training.iteration import METRICS
from fakefacegen.training.state import CHECKPOINT_FORMAT

# The settings format 1 may lack, with the value that means "as before": such a checkpoint resumes and samples
# as it was trained, whatever today's defaults.
FORMAT_1_SETTINGS = {"r1": 0.0, "r1_every": 16, "ema_kimg": 0.0, "ema_rampup": 0.05, "lr_schedule": "constant",
                     "lr_decay_start": 0.5, "mbstd": 0, "label_smooth": 1.0, "tensorboard": False,
                     "ada_target": 0.0, "ada_kimg": 100.0}
CHECKPOINT_SUFFIXES = (".pt", ".pth", ".ckpt", EXPORT_SUFFIX)  # the files load_checkpoint reads
TRAINING_KEYS = ("G", "D", "opt_g", "opt_d", "G_eval", "epoch", "step", "fixed_noise", "rng")  # what resuming needs


def save_checkpoint(paths, state):
    """A state (TrainState.state_dict()) to each of `paths`, atomically. torch.save goes to memory first, so a full disk
    fails in Python's own write, as one line naming the file, and the last good file stays."""
    buffer = io.BytesIO()
    torch.save(state, buffer)
    for path in paths:
        with atomic_path(path) as tmp:
            tmp.write_bytes(buffer.getbuffer())


def read_tensors(path, device="cpu"):
    """torch.load with weights_only=True: tensors and plain values, never code. Torch's multi-line warning
    before it refuses a pickle is silenced: the caller reports the refusal in one line."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return torch.load(path, map_location=device, weights_only=True)


def load_checkpoint(path, device="cpu"):
    """A checkpoint (or an exported generator) as a dict of tensors and plain values; a bad file is a UserError."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"checkpoint {path} not found: pass a file from checkpoints/<run>/ or an exported "
                        f"{EXPORT_SUFFIX}")
    exported = path.suffix.lower() == EXPORT_SUFFIX
    try:
        ckpt = read_exported(path, device) if exported else read_tensors(path, device)
    except Exception as err:  # truncated zip, pickle of code, random bytes: all mean "not a checkpoint"
        reason = str(err).strip().splitlines()[0][:120] if str(err).strip() else type(err).__name__
        fix = "export it again with generate.py --export" if exported else \
            "use another file from the run, e.g. latest.pt or an epoch_NNN.pt"
        raise UserError(f"{path} is not a readable {'generator file' if exported else 'checkpoint'} ({reason}): "
                        f"{fix}") from None
    if not isinstance(ckpt, dict) or not {"G_eval", "config"} <= set(ckpt) or not isinstance(ckpt["config"], dict):
        raise UserError(f"{path} is not a FakeFaceGen checkpoint (no generator and settings inside): pass one "
                        "written by train.py or generate.py --export")
    return upgraded(ckpt, path)


def upgraded(ckpt, path):
    """A loaded checkpoint in today's format, converted one format at a time; a newer format refused in one
    line. Format 1 -> 2: the settings it predates as they were, the metrics columns added since as zeros
    before the iteration count, no adaptive augmentation, no best FID. 2 -> 3: LeCam's averages at 0 (--lecam
    was off before it existed)."""
    version = ckpt.get("format", 1)
    if version not in range(1, CHECKPOINT_FORMAT + 1):
        raise UserError(f"{path} is in checkpoint format {version!r}, which this FakeFaceGen (format "
                        f"{CHECKPOINT_FORMAT}) does not read: update the repository (git pull), or use a checkpoint "
                        "written by this version")
    ckpt = dict(ckpt)
    if version == 1:
        ckpt["config"] = {**FORMAT_1_SETTINGS, **ckpt["config"]}
        window = ckpt.get("log_window")
        if torch.is_tensor(window) and 0 < len(window) < len(METRICS) + 1:
            missing = len(METRICS) + 1 - len(window)
            ckpt["log_window"] = torch.cat([window[:-1], window.new_zeros(missing), window[-1:]])
        ckpt.setdefault("augment_p", torch.zeros(()))
        ckpt.setdefault("best_fid", float("inf"))
    if version <= 2:
        ckpt.setdefault("lecam_anchors", torch.zeros(2))
    ckpt["format"] = CHECKPOINT_FORMAT
    return ckpt


def load_training_checkpoint(path):
    """A checkpoint to resume from: one that holds the optimisers, not only a sampler."""
    ckpt = load_checkpoint(path)
    if "opt_d" not in ckpt:
        raise UserError(f"{path} holds no optimiser state (not a training checkpoint): resume from latest.pt "
                        "or an epoch_NNN.pt")
    check_saved(ckpt["config"], path, G_ARCHITECTURE_KEYS + D_ARCHITECTURE_KEYS)
    missing = [key for key in TRAINING_KEYS if key not in ckpt]
    if missing:
        raise UserError(f"{path} lacks {', '.join(missing)}, which train.py always writes: it is damaged or was "
                        "not written by train.py; resume from another file of the run")
    return ckpt


def generator_from_state(ckpt, path, device="cpu"):
    """The sampling generator (eval mode, BatchNorm recalibrated) of a loaded checkpoint."""
    G = generator_from_config(check_saved(ckpt["config"], path, G_ARCHITECTURE_KEYS)).to(device)
    try:
        G.load_state_dict(ckpt["G_eval"])
    except (RuntimeError, TypeError, AttributeError):  # shapes that differ; no state dict at all
        raise UserError(f"{path}: the weights do not fit the architecture in its config") from None
    if not all(torch.isfinite(tensor).all() for tensor in G.state_dict().values() if tensor.is_floating_point()):
        raise UserError(f"{path} holds NaN or infinite weights (the run diverged before it was saved): its samples "
                        "would be blank; use an earlier epoch_NNN.pt of the run")
    return G.eval()


def load_generator(path, device="cpu"):
    """The checkpoint's sampling generator and its config: all that generate.py and the tools need."""
    ckpt = load_checkpoint(path, device)
    return generator_from_state(ckpt, path, device), ckpt["config"]


def discriminator_from_state(ckpt, path, device="cpu"):
    """The discriminator of a loaded training checkpoint (eval mode), or None for an exported generator."""
    if "D" not in ckpt:
        return None
    D = discriminator_from_config(check_saved(ckpt["config"], path, D_ARCHITECTURE_KEYS)).to(device)
    try:
        D.load_state_dict(ckpt["D"])
    except (RuntimeError, TypeError, AttributeError):
        raise UserError(f"{path}: the discriminator's weights do not fit the architecture in its config") from None
    return D.eval()
