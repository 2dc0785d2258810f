"""Checkpoint files: written atomically, read with torch.load(weights_only=True) (data, never code), brought to
today's format (upgraded: the one place that knows older formats), checked before use. What a training
checkpoint holds is TrainState.state_dict() (training/state.py, the one layout).

load_checkpoint and load_generator also read a generator exported by `generate.py --export` (export.py), as the
same dict with G_eval and config only, so every tool that samples takes either file.
"""
import io
import math
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
from fakefacegen.settings import check_saved, check_saved_settings
from fakefacegen.training.iteration import METRICS
from fakefacegen.training.state import CHECKPOINT_FORMAT, GRID_SIZE, damaged_part, has_ema

# The settings format 1 may lack, with the value that means "as before": such a checkpoint resumes and samples
# as it was trained, whatever today's defaults.
FORMAT_1_SETTINGS = {"r1": 0.0, "r1_every": 16, "ema_kimg": 0.0, "ema_rampup": 0.05, "lr_schedule": "constant",
                     "lr_decay_start": 0.5, "mbstd": 0, "label_smooth": 1.0, "tensorboard": False,
                     "ada_target": 0.0, "ada_kimg": 100.0}
CHECKPOINT_SUFFIXES = (".pt", ".pth", ".ckpt", EXPORT_SUFFIX)  # the files load_checkpoint reads
# What resuming reads (G_ema too, with an EMA): train.py has written each of them since format 1.
TRAINING_KEYS = ("G", "D", "opt_g", "opt_d", "G_eval", "epoch", "batch_in_epoch", "step", "fixed_noise", "rng",
                 "log_window", "augment_p", "lecam_anchors", "best_fid")
NETWORK_PARTS = ("G", "D", "G_ema", "G_eval")


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
    """A checkpoint to resume from: one that holds the optimisers, not only a sampler, each part checked."""
    ckpt = load_checkpoint(path)
    if "opt_d" not in ckpt:
        raise UserError(f"{path} holds no optimiser state (not a training checkpoint): resume from latest.pt "
                        "or an epoch_NNN.pt")
    return checked_training_state(ckpt, path)


def checked_training_state(ckpt, path):
    """A training checkpoint checked like input before anything uses it: its settings by the rules of the flags,
    then every part resuming reads, for presence, type, shape, range and finite numbers. What needs the networks
    (the weights' and the optimiser states' shapes) is checked as TrainState.load_state_dict loads them, and the
    place in the epoch, which needs the data, by check_place_in_epoch. Anything off is a UserError naming the
    part and the file."""
    config = check_saved_settings(ckpt["config"], path)
    missing = [key for key in TRAINING_KEYS + (("G_ema",) if has_ema(config) else ()) if key not in ckpt]
    if missing:
        raise UserError(f"{path} lacks {', '.join(missing)}, which train.py always writes: it is damaged or was "
                        "not written by train.py; resume from another file of the run")
    for part in NETWORK_PARTS:
        if part in ckpt:
            check_weights(ckpt[part], part, path)
    for part in ("opt_g", "opt_d"):
        check_optimizer_state(ckpt[part], part, path)
    check_count(ckpt["step"], "step", path)
    check_count(ckpt["epoch"], "epoch", path, config["epochs"])
    check_count(ckpt["batch_in_epoch"], "batch_in_epoch", path)
    check_tensor(ckpt["fixed_noise"], "fixed_noise", path, (GRID_SIZE, config["nz"]))
    check_tensor(ckpt["log_window"], "log_window", path, (len(METRICS) + 1,))
    check_tensor(ckpt["augment_p"], "augment_p", path, ())
    check_tensor(ckpt["lecam_anchors"], "lecam_anchors", path, (2,))
    if not 0 <= ckpt["augment_p"].item() <= 1:
        raise damaged_part(path, "augment_p", f"is {ckpt['augment_p'].item():g}, not a probability from 0 to 1")
    best = ckpt["best_fid"]
    if not isinstance(best, (int, float)) or isinstance(best, bool) or math.isnan(best) or best < 0:
        raise damaged_part(path, "best_fid", f"is {repr(best)[:40]}, not a FID (a number from 0, or inf)")
    check_rng(ckpt["rng"], path)
    return ckpt


def check_count(value, part, path, high=None):
    """A whole number from 0 (to `high`), as the loop counts."""
    if not isinstance(value, int) or isinstance(value, bool) or value < 0 or (high is not None and value > high):
        rule = f"from 0 to {high} (its epochs)" if high is not None else "from 0"
        raise damaged_part(path, part, f"is {repr(value)[:40]}, not a whole number {rule}")


def check_tensor(value, part, path, shape):
    """A float32 tensor of `shape` with finite values: what TrainState makes."""
    if not torch.is_tensor(value) or value.dtype != torch.float32 or tuple(value.shape) != shape:
        what = f"a {type(value).__name__}" if not torch.is_tensor(value) else \
            f"a {str(value.dtype).removeprefix('torch.')} tensor of shape {tuple(value.shape)}"
        raise damaged_part(path, part, f"is {what}, not a float32 tensor of shape {shape}")
    if not torch.isfinite(value).all():
        raise damaged_part(path, part, "holds NaN or infinite values")


def check_weights(state, part, path):
    """A network's state dict: names to tensors, the floating ones finite (its shapes are checked against the
    network as it loads)."""
    if not isinstance(state, dict) or not all(isinstance(k, str) and torch.is_tensor(v) for k, v in state.items()):
        raise damaged_part(path, part, f"is a {type(state).__name__}, not a network's weights (names to tensors)")
    if not all(torch.isfinite(v).all() for v in state.values() if v.is_floating_point()):
        raise damaged_part(path, part, "holds NaN or infinite weights (the run diverged before it was saved)")


def check_optimizer_state(saved, part, path):
    """An optimiser's state dict: its groups (finite settings, parameter indices) and per-parameter state
    (finite tensors and numbers); that it fits the parameters is checked as it loads."""
    groups = saved.get("param_groups") if isinstance(saved, dict) else None
    if not isinstance(groups, list) or not isinstance(saved.get("state"), dict) or not groups or \
            not all(isinstance(g, dict) and isinstance(g.get("params"), list) for g in groups):
        raise damaged_part(path, part, "is not an optimiser's state (its state and param_groups)")
    for group in groups:
        for key, value in group.items():
            if key != "params" and not finite(value):
                raise damaged_part(path, part, f"has {key} = {str(value)[:40]} in a parameter group")
    for index, param_state in saved["state"].items():
        if not isinstance(param_state, dict):
            raise damaged_part(path, part, f"holds a {type(param_state).__name__} as the state of parameter {index}")
        for key, value in param_state.items():
            if not finite(value):
                raise damaged_part(path, part, f"holds NaN or infinite {key} for parameter {index}")


def finite(value):
    """False for a number, tensor or tuple of them holding NaN or infinity; True for anything else (a group's
    flags, None)."""
    if torch.is_tensor(value):
        return not value.is_floating_point() or bool(torch.isfinite(value).all())
    if isinstance(value, (tuple, list)):
        return all(finite(item) for item in value)
    return not isinstance(value, float) or math.isfinite(value)


def check_rng(rng, path):
    """The random states: torch's CPU state and the noise generator's, byte tensors (the noise generator's
    size depends on the device it ran on, which TrainState.load_state_dict checks)."""
    if not isinstance(rng, dict) or any(key not in rng for key in ("torch", "noise")):
        raise damaged_part(path, "rng", "lacks the torch and noise random states")
    for key, size in (("torch", torch.get_rng_state().numel()), ("noise", None)):
        state = rng[key]
        if not torch.is_tensor(state) or state.dtype != torch.uint8 or state.dim() != 1 or \
                (size is not None and state.numel() != size):
            raise damaged_part(path, "rng", f"{key} state is not a random generator's state (a byte tensor"
                               f"{f' of {size} bytes' if size else ''})")


def check_place_in_epoch(batch_in_epoch, d_steps, batches_per_epoch, path):
    """Where a resumed run is inside its epoch, against the data it trains on now: a whole group of d_steps
    batches, before the epoch's end (past it, the loop would never finish the epoch)."""
    if batch_in_epoch >= batches_per_epoch or batch_in_epoch % d_steps:
        raise UserError(f"{path}: its batch_in_epoch is {batch_in_epoch}, but an epoch of this data is "
                        f"{batches_per_epoch} batches, taken in groups of --d-steps {d_steps}: resume on the data "
                        "the run was trained on, or from an epoch_NNN.pt of the run (it starts an epoch)")


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
