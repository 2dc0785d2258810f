"""The one checkpoint layout: TrainState owns everything a run is, and its state_dict() is what a checkpoint
file holds. Files are saved atomically and loaded with torch.load(weights_only=True): data, never code.

    G, D, G_ema (with --ema), opt_g, opt_d    the training modules and optimisers
    G_eval                                    the sampler (G_ema or G) with BatchNorm recalibrated for eval
    epoch, batch_in_epoch, step               where the run is
    fixed_noise, rng, log_window, best_fid    the grid's noise, random states, unlogged metric sums, best FID
    augment_p                                 the adaptive augmentation's probability (--ada-target)
    config                                    every setting, so a sampler needs nothing but this file

load_checkpoint and load_generator also read a generator exported by `generate.py --export` (export.py), as the
same dict with G_eval and config only, so every tool that samples takes either file.
"""
import copy
import io
from pathlib import Path

import torch

from fakefacegen.cli import UserError
from fakefacegen.export import EXPORT_SUFFIX, read_exported
from fakefacegen.files import atomic_path
from fakefacegen.network import D_ARCHITECTURE_KEYS, G_ARCHITECTURE_KEYS, generator_from_config, models_from_config
from fakefacegen.runs import METRICS
from fakefacegen.sampling import recalibrated_copy
from fakefacegen.settings import check_saved, has_ema

GRID_SIZE = 64  # the fixed noise: an 8x8 grid every epoch
CHECKPOINT_SUFFIXES = (".pt", ".pth", ".ckpt", EXPORT_SUFFIX)  # the files load_checkpoint reads
# Noise vectors per forward pass when G_eval's BatchNorm is recalibrated: on a GPU four passes for the default
# --recal-samples 4096 (1,024 at once take about 0.5 GB while they pass at 64 px, 2 GB at 128 px).
RECAL_BATCH_CPU, RECAL_BATCH_CUDA = 256, 1024


def set_hyperparameters(optimizer, cfg, lr):
    """The learning rate and betas (SGD: momentum) of cfg on every parameter group: on resume the flags given
    now win over what the optimiser's saved state holds."""
    for group in optimizer.param_groups:
        group["lr"] = lr
        if "betas" in group:
            group["betas"] = (cfg["beta1"], cfg["beta2"])
        elif "momentum" in group and cfg["optim"] == "sgd":
            group["momentum"] = cfg["beta1"]


def make_optimizer(params, cfg, lr, device="cpu"):
    if cfg["optim"] == "adam":  # the fused kernel updates all parameters at once on CUDA
        return torch.optim.Adam(params, lr=lr, betas=(cfg["beta1"], cfg["beta2"]),
                                fused=torch.device(device).type == "cuda")
    if cfg["optim"] == "rmsprop":
        return torch.optim.RMSprop(params, lr=lr)
    return torch.optim.SGD(params, lr=lr, momentum=cfg["beta1"])


class TrainState:
    """G, D, the EMA of G, both optimisers, counters and random state of one run, seeded by cfg["seed"].

    Noise and flips come from `noise_generator`; the data order from (seed, epoch); torch's global state
    seeds loader workers. `log_window` sums the metrics since the last log line (its last slot counts the
    iterations summed), on the device, so the loop never waits for the host.
    """

    def __init__(self, cfg, device):
        self.cfg = cfg
        self.G, self.D = models_from_config(cfg, device)
        self.G_ema = copy.deepcopy(self.G) if has_ema(cfg) else None
        self.opt_g = make_optimizer(self.G.parameters(), cfg, cfg["lr_g"], device)
        self.opt_d = make_optimizer(self.D.parameters(), cfg, cfg["lr_d"], device)
        self.noise_generator = torch.Generator(device).manual_seed(cfg["seed"])
        self.fixed_noise = torch.randn(GRID_SIZE, cfg["nz"], generator=torch.Generator().manual_seed(cfg["seed"] + 1))
        self.epoch = self.batch_in_epoch = self.step = 0
        self.log_window = torch.zeros(len(METRICS) + 1, device=device)
        self.augment_p = torch.zeros((), device=device)  # --ada-target's probability, adapted on the device
        self.best_fid = float("inf")
        self.device = torch.device(device)

    def sampler(self):
        """The G that samples are drawn from: the EMA when there is one."""
        return self.G_ema if self.G_ema is not None else self.G

    def eval_generator(self):
        batch_size = RECAL_BATCH_CUDA if self.device.type == "cuda" else RECAL_BATCH_CPU
        return recalibrated_copy(self.sampler(), self.cfg["recal_samples"], self.cfg["nz"], self.device, batch_size)

    def state_dict(self, G_eval=None):
        """The checkpoint; G_eval is the recalibrated sampler, computed here unless the caller has it."""
        G_eval = G_eval if G_eval is not None else self.eval_generator()
        state = {"G": self.G.state_dict(), "D": self.D.state_dict(), "opt_g": self.opt_g.state_dict(),
                 "opt_d": self.opt_d.state_dict(), "G_eval": G_eval.state_dict(), "epoch": self.epoch,
                 "batch_in_epoch": self.batch_in_epoch, "step": self.step, "fixed_noise": self.fixed_noise,
                 "rng": {"torch": torch.get_rng_state(), "noise": self.noise_generator.get_state()},
                 "log_window": self.log_window, "augment_p": self.augment_p, "best_fid": self.best_fid,
                 "config": self.cfg}
        if self.G_ema is not None:
            state["G_ema"] = self.G_ema.state_dict()
        return state

    def load_state_dict(self, state):
        self.G.load_state_dict(state["G"])
        self.D.load_state_dict(state["D"])
        if self.G_ema is not None:
            self.G_ema.load_state_dict(state["G_ema"])
        self.opt_g.load_state_dict(state["opt_g"])
        self.opt_d.load_state_dict(state["opt_d"])
        set_hyperparameters(self.opt_g, self.cfg, self.cfg["lr_g"])
        set_hyperparameters(self.opt_d, self.cfg, self.cfg["lr_d"])
        self.epoch, self.batch_in_epoch, self.step = state["epoch"], state["batch_in_epoch"], state["step"]
        self.fixed_noise = state["fixed_noise"]
        torch.set_rng_state(state["rng"]["torch"])
        try:
            self.noise_generator.set_state(state["rng"]["noise"].cpu())
        except RuntimeError:  # a CUDA generator's state does not fit a CPU generator, nor the reverse
            raise UserError(f"this checkpoint was trained on another kind of device than {self.device.type}: resume "
                            "it there (--device), or start a new run") from None
        self.log_window = widened(state["log_window"]).to(self.device)
        self.augment_p = state.get("augment_p", torch.zeros(())).to(self.device)
        self.best_fid = state.get("best_fid", float("inf"))


def widened(log_window):
    """A saved log window with the metrics added since it was written (runs.METRICS gained columns at its end)
    as zeros before the iteration count, its last slot."""
    missing = len(METRICS) + 1 - len(log_window)
    return torch.cat([log_window[:-1], log_window.new_zeros(missing), log_window[-1:]]) if missing else log_window


def save_checkpoint(paths, state):
    """A state (see cpu_copy) to each of `paths`, atomically. torch.save goes to memory first, so a full disk
    fails in Python's own write, as one line naming the file, and the last good file stays."""
    buffer = io.BytesIO()
    torch.save(state, buffer)
    for path in paths:
        with atomic_path(path) as tmp:
            tmp.write_bytes(buffer.getbuffer())


def cpu_copy(value):
    """A copy of a nest of dicts, lists and tuples whose tensors are copied to the CPU: the state of this
    moment, to be written in the background while training changes the originals in place."""
    if isinstance(value, torch.Tensor):
        return value.detach().to("cpu", copy=True)
    if isinstance(value, dict):
        return {key: cpu_copy(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(cpu_copy(item) for item in value)
    return value


def load_checkpoint(path, device="cpu"):
    """A checkpoint (or an exported generator) as a dict of tensors and plain values; a bad file is a UserError."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"checkpoint {path} not found: pass a file from checkpoints/<run>/ or an exported "
                        f"{EXPORT_SUFFIX}")
    exported = path.suffix.lower() == EXPORT_SUFFIX
    try:
        ckpt = read_exported(path, device) if exported else torch.load(path, map_location=device, weights_only=True)
    except Exception as err:  # truncated zip, pickle of code, random bytes: all mean "not a checkpoint"
        reason = str(err).strip().splitlines()[0][:120] if str(err).strip() else type(err).__name__
        fix = "export it again with generate.py --export" if exported else \
            "use another file from the run, e.g. latest.pt or an epoch_NNN.pt"
        raise UserError(f"{path} is not a readable {'generator file' if exported else 'checkpoint'} ({reason}): "
                        f"{fix}") from None
    if not isinstance(ckpt, dict) or not {"G_eval", "config"} <= set(ckpt) or not isinstance(ckpt["config"], dict):
        raise UserError(f"{path} is not a FakeFaceGen checkpoint (no generator and settings inside): pass one "
                        "written by train.py or generate.py --export")
    return ckpt


def load_training_checkpoint(path):
    """A checkpoint to resume from: one that holds the optimisers, not only a sampler."""
    ckpt = load_checkpoint(path)
    if "opt_d" not in ckpt:
        raise UserError(f"{path} holds no optimiser state (not a training checkpoint): resume from latest.pt "
                        "or an epoch_NNN.pt")
    check_saved(ckpt["config"], path, G_ARCHITECTURE_KEYS + D_ARCHITECTURE_KEYS)
    return ckpt


def generator_from_state(ckpt, path, device="cpu"):
    """The sampling generator (eval mode, BatchNorm recalibrated) of a loaded checkpoint."""
    check_saved(ckpt["config"], path, G_ARCHITECTURE_KEYS)
    G = generator_from_config(ckpt["config"]).to(device)
    try:
        G.load_state_dict(ckpt["G_eval"])
    except (RuntimeError, TypeError, AttributeError):  # shapes that differ; no state dict at all
        raise UserError(f"{path}: the weights do not fit the architecture in its config") from None
    return G.eval()


def load_generator(path, device="cpu"):
    """The checkpoint's sampling generator and its config: all that generate.py and the tools need."""
    ckpt = load_checkpoint(path, device)
    return generator_from_state(ckpt, path, device), ckpt["config"]
