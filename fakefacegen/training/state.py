"""The state of a training run: G, D, the EMA of G, both optimisers, counters, random state and metric sums.
TrainState.state_dict() is the one checkpoint layout, format CHECKPOINT_FORMAT (checkpoint.py reads and writes
the files, and converts those of an older format in one function, upgraded):

    G, D, G_ema (with an EMA), opt_g, opt_d    the training modules and optimisers
    G_eval                                    the sampler (G_ema or G) with BatchNorm recalibrated for eval
    epoch, batch_in_epoch, step               where the run is
    fixed_noise, rng, log_window, best_fid    the grid's noise, random states, unlogged metric sums, best FID
    augment_p                                 the adaptive augmentation's probability (--ada-target)
    lecam_anchors                             LeCam's moving averages of D's logits (--lecam)
    config                                    every setting, so a sampler needs nothing but this file
    format                                    CHECKPOINT_FORMAT
"""
import copy
from types import MappingProxyType

import torch

from fakefacegen.cli import UserError
from fakefacegen.network import models_from_config
from fakefacegen.sampling import recalibrated_copy
from fakefacegen.training.iteration import METRICS

# The layout state_dict() writes; bumped when it changes, with the conversion in checkpoint.upgraded. Format 1
# (no "format" key) is every checkpoint written before formats were numbered.
CHECKPOINT_FORMAT = 3
GRID_SIZE = 64  # the fixed noise: an 8x8 grid every epoch
# Noise vectors per forward pass when G_eval's BatchNorm is recalibrated: on a GPU four passes for the default
# --recal-samples 4096 (1,024 at once take about 0.5 GB while they pass at 64 px, 2 GB at 128 px).
RECAL_BATCH_CPU, RECAL_BATCH_CUDA = 256, 1024


def has_ema(cfg):
    return bool(cfg["ema"] or cfg["ema_kimg"])


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
        self.cfg = MappingProxyType(dict(cfg))  # a run's settings are read-only
        self.G, self.D = models_from_config(cfg, device)
        self.G_ema = copy.deepcopy(self.G) if has_ema(cfg) else None
        self.opt_g = make_optimizer(self.G.parameters(), cfg, cfg["lr_g"], device)
        self.opt_d = make_optimizer(self.D.parameters(), cfg, cfg["lr_d"], device)
        self.noise_generator = torch.Generator(device).manual_seed(cfg["seed"])
        self.fixed_noise = torch.randn(GRID_SIZE, cfg["nz"], generator=torch.Generator().manual_seed(cfg["seed"] + 1))
        self.epoch = self.batch_in_epoch = self.step = 0
        self.log_window = torch.zeros(len(METRICS) + 1, device=device)
        self.augment_p = torch.zeros((), device=device)  # --ada-target's probability, adapted on the device
        self.lecam_anchors = torch.zeros(2, device=device)  # --lecam's moving averages of D's logits: real, fake
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
                 "log_window": self.log_window, "augment_p": self.augment_p, "lecam_anchors": self.lecam_anchors,
                 "best_fid": self.best_fid,
                 "config": dict(self.cfg), "format": CHECKPOINT_FORMAT}
        if self.G_ema is not None:
            state["G_ema"] = self.G_ema.state_dict()
        return state

    def load_state_dict(self, state, source="the checkpoint"):
        """A checkpoint's state (checkpoint.checked_training_state has checked its types, ranges and finite
        numbers), with what needs the networks checked as it loads: the weights' and the optimiser states'
        shapes. A part that does not fit is a UserError naming it and `source`."""
        for part, module in (("G", self.G), ("D", self.D), ("G_ema", self.G_ema)):
            if module is not None:
                try:
                    module.load_state_dict(state[part])
                except RuntimeError as err:  # missing, unexpected or differently shaped tensors
                    raise damaged_part(source, part, f"does not fit the network its config builds "
                                       f"({brief(err)})") from None
        self.load_optimizer(self.opt_g, state["opt_g"], "opt_g", source, trained=state["step"] > 0)
        self.load_optimizer(self.opt_d, state["opt_d"], "opt_d", source, trained=state["step"] > 0)
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
        self.log_window = state["log_window"].to(self.device)
        self.augment_p = state["augment_p"].to(self.device)
        self.lecam_anchors = state["lecam_anchors"].to(self.device)
        self.best_fid = state["best_fid"]

    def load_optimizer(self, optimizer, saved, part, source, trained):
        """An optimiser's saved state, refused unless it fits the parameters: one group per group, a state for
        every parameter once the run has trained (where the optimiser keeps one), of the parameter's shape.
        torch checks the groups' sizes but not the states' shapes, which would fail at the first step."""
        try:
            optimizer.load_state_dict(saved)
        except (ValueError, KeyError, TypeError, IndexError) as err:
            raise damaged_part(source, part, f"does not fit the optimiser of the networks its config builds "
                               f"({brief(err)})") from None
        for group in optimizer.param_groups:
            kept = optimizer_state_keys(self.cfg["optim"], group)
            for index, param in enumerate(group["params"]):
                param_state = optimizer.state.get(param, {})
                lacking = [key for key in kept if key not in param_state]
                if trained and lacking:
                    raise damaged_part(source, part, f"lacks {', '.join(lacking)} of parameter {index}, which "
                                       "every iteration writes")
                for key, value in param_state.items():
                    fits = not torch.is_tensor(value) or (value.numel() == 1 if key == "step" else
                                                          value.shape == param.shape)
                    if not fits:
                        raise damaged_part(source, part, f"holds {key} of shape {tuple(value.shape)} for a "
                                           f"parameter of shape {tuple(param.shape)}")


def optimizer_state_keys(optim, group):
    """What the optimiser keeps per parameter once it has stepped: SGD without momentum keeps nothing."""
    if optim == "adam":
        return ("step", "exp_avg", "exp_avg_sq")
    if optim == "rmsprop":
        return ("step", "square_avg")
    return ("momentum_buffer",) if group.get("momentum") else ()


def damaged_part(source, part, what):
    """The one-line refusal of a checkpoint part: `source` names the file."""
    return UserError(f"{source}: its {part} {what}, so it is damaged or was not written by train.py: resume from "
                     "another file of the run (latest.pt or an epoch_NNN.pt), or start a new run")


def brief(err):
    """An exception's first telling line: torch's load errors open with a header and put each tensor that does
    not fit on a line of its own."""
    lines = [line.strip() for line in str(err).strip().splitlines() if line.strip()]
    if len(lines) > 1 and lines[0].startswith("Error(s) in loading"):
        lines = lines[1:]
    return (lines[0] if lines else type(err).__name__)[:240]
