"""Training settings, declared once: SETTINGS is the table of every key (its default, what it accepts and its
help), from which train.py's flags, --help, the checks of a config file's and a checkpoint's values, and the
flag table of docs/training.md all come. A config file in configs/ sets any key (lr_g <-> --lr-g); the
command line wins. A run's settings are read-only once they are parsed (a MappingProxyType)."""
import argparse
from types import MappingProxyType
from typing import NamedTuple

from fakefacegen.cli import (
    SEED,
    ArgumentParser,
    UserError,
    check_run_name,
    check_values,
    integer,
    number,
    parse_with_config,
)
from fakefacegen.data.toyfaces import TOYFACES
from fakefacegen.network import D_ARCHITECTURE_KEYS, D_NORMS, G_ARCHITECTURE_KEYS, RESOLUTIONS
from fakefacegen.training import diffaug, losses
from fakefacegen.training.state import has_ema

# Ranges of the numeric settings that other commands' flags share, and the caps that need a reason.
TOY_SIZE_MAX = 10_000_000  # toy faces are drawn by index; an epoch's shuffled indices must fit in memory
WIDTH = integer(1, 256)  # ngf, ndf: the widest layer is 16x this, and 4096 channels take gigabytes at 256 px
BATCH_SIZE = integer(1, 8192)
WORKERS = integer(0, 256)
LEARNING_RATE = number(above=0, high=1)
DECAY = number(low=0, below=1)  # Adam's betas and the EMA decay
FID_N_MAX = 100_000  # images per side: their features (2048 float32 each, kept for KID) take 0.8 GB


class Setting(NamedTuple):
    """One key: its default, its argparse type (a Range for numbers; None: text, or a switch for a bool
    default), its choices, its help, and other spellings of its flag."""
    name: str
    default: object
    help: str
    type: object = None
    choices: tuple = None
    aliases: tuple = ()

    @property
    def flag(self):
        return "--" + self.name.replace("_", "-")


S = Setting
SETTINGS = {
    "data": [
        S("config", None, "TOML file from configs/; flags given here override its keys"),
        S("data", TOYFACES, "toyfaces, a dataset made by preprocess.py, or a folder of images"),
        S("toy_size", 20000, "number of toy faces in one epoch", integer(1, TOY_SIZE_MAX)),
        S("res", 64, "image size in pixels", int, RESOLUTIONS),
        S("flip", False, "random horizontal flips, done on the device"),
        S("workers", 2, "data loading processes (0 loads in the training process)", WORKERS),
    ],
    "model": [
        S("nz", 100, "latent size", integer(1, 4096)),
        S("ngf", 64, "generator width: channels of its last hidden layer", WIDTH),
        S("ndf", 64, "discriminator width: channels of its first layer", WIDTH),
        S("g_act", "relu", "generator activation", None, ("relu", "leaky")),
        S("d_norm", "batch", "discriminator normalisation: batch, none, spectral", None, D_NORMS),
        S("init", "dcgan", "DCGAN's N(0, 0.02) init or PyTorch's default", None, ("dcgan", "default")),
        S("mbstd", 4, "minibatch standard deviation feature in D over groups of this many images, against mode "
          "collapse (ProGAN, StyleGAN use 4; 0: off)", integer(0, 64)),
    ],
    "optimisation": [
        S("epochs", 25, "passes over the data", integer(1, 1_000_000)),
        S("batch_size", 64, "images per D update", BATCH_SIZE),
        S("max_steps", 0, "stop after this many iterations (0: no limit; for smoke tests)", integer(0)),
        S("max_minutes", 0.0, "stop after this many minutes of training (0: no limit)", number(low=0)),
        S("d_steps", 1, "D updates per iteration, each on a new real batch (the anime recipe uses 5)",
          integer(1, 100)),
        S("g_steps", 1, "G updates per iteration", integer(1, 100)),
        S("optim", "adam", "optimiser for both nets", None, ("adam", "sgd", "rmsprop")),
        S("lr_g", 2e-4, "generator learning rate", LEARNING_RATE),
        S("lr_d", 2e-4, "discriminator learning rate", LEARNING_RATE),
        S("beta1", 0.5, "Adam beta1 (0.5 in DCGAN); SGD momentum, RMSprop alpha unused", DECAY),
        S("beta2", 0.999, "Adam beta2", DECAY),
        S("loss", "bce", "bce (DCGAN), hinge, wgan (weight clipping), wgan-gp", None, losses.LOSSES),
        S("g_loss", "nonsaturating", "with bce: nonsaturating or the original saturating", None, losses.G_LOSSES),
        S("clip", 0.01, "wgan: clip every critic weight to [-clip, clip]", number(above=0)),
        S("gp_weight", 10.0, "wgan-gp: weight of the gradient penalty", number(low=0)),
        S("ema", 0.0, "keep an EMA of G with this decay, e.g. 0.999, and sample from it (0: off)", DECAY),
        S("ema_kimg", 10.0, "or an EMA of G whose half-life is this many thousand images, whatever the batch size "
          "(stylegan2-ada's ema_kimg, e.g. 10; 0: off)", number(low=0, high=100_000)),
        S("ema_rampup", 0.05, "with --ema-kimg: the half-life grows with the images seen, at most this fraction "
          "of them, so early samples are not averaged with noise (0: off)", number(low=0, high=1)),
        S("diffaug", "", "differentiable augmentation before D: any of color,translation,cutout"),
        S("ada_target", 0.0, "adaptive augmentation (StyleGAN2-ADA): apply each --diffaug transform with a "
          "probability that rises while the mean sign of D's outputs on real images is above this target and "
          "falls below it (e.g. 0.6; 0: --diffaug always applies)", number(low=0, below=1)),
        S("ada_kimg", 100.0, "with --ada-target: thousands of images over which the probability can go from 0 "
          "to 1", number(above=0, high=100_000)),
        S("r1", 0.0, "R1 penalty weight gamma on D's gradient at real images (StyleGAN2; e.g. 0.1 to 10 at "
          "64 px; 0: off)", number(low=0, high=1e4)),
        S("r1_every", 16, "apply R1 every this many D updates, scaled up to match (lazy regularisation)",
          integer(1, 1000)),
        S("label_smooth", 1.0, "with --loss bce: D's target for real images, e.g. 0.9 (one-sided label "
          "smoothing; 1: off)", number(above=0.5, high=1)),
        S("bcr", 0.0, "balanced consistency regularisation: weight of D's squared change in score when a real or "
          "fake image moves by up to 1/8 of its side (bCR, Zhao et al. 2021, used 10; 0: off)",
          number(low=0, high=1e4)),
        S("lecam", 0.0, "LeCam regularisation (Tseng et al. 2021, for limited data): weight of the squared excess of "
          "D's logits on real images over the moving average of its logits on fakes, and of that average on reals "
          "over its logits on fakes (the paper used 0.3; 0: off)", number(low=0, high=1e4)),
        S("lecam_decay", 0.99, "with --lecam: the decay of the moving averages of D's logits", DECAY),
        S("lr_schedule", "constant", "constant or linear: both learning rates fall linearly to 0 from "
          "--lr-decay-start of the run to its end", None, ("constant", "linear")),
        S("lr_decay_start", 0.5, "with --lr-schedule linear: the fraction of the planned iterations after "
          "which the rates decay", number(low=0, below=1)),
        S("seed", 0, "seed for weights, data order, noise", SEED),
    ],
    "run": [
        S("device", "auto", "auto | cpu | cuda | cuda:N | mps"),
        S("run", "", "run name: outputs/<run>/ and checkpoints/<run>/ (default: config name, res and time); "
          "under torchrun write --run-name, which torchrun's own parser leaves alone", aliases=("--run-name",)),
        S("resume", "", "auto (the newest run of this name or config) or a checkpoint path"),
        S("log_every", 10, "iterations per metrics.csv line and progress update", integer(1)),
        S("ckpt_minutes", 10.0, "also rewrite latest.pt this often (minutes)", number(above=0)),
        S("ckpt_every", 5, "keep epoch_NNN.pt every this many epochs (0: never)", integer(0)),
        S("recal_samples", 4096, "noise samples to recalibrate G's BatchNorm for eval", integer(1, 1_000_000)),
        S("fid_every", 0, "FID every this many epochs into metrics.csv and fid.png; best.pt (0: off)", integer(0)),
        S("fid_n", 5000, "generated images per FID (below 2048 FID is rank-deficient)",
          integer(2, FID_N_MAX, why="2048 or more for a full-rank FID")),
        S("fid_real", "", "real images for FID: a packed dataset, folder, .npz stats (default: --data)"),
        S("tensorboard", False, "also log losses, D's outputs, speed, FID and the grids to "
          "outputs/<run>/tensorboard/ (needs: pip install tensorboard)"),
    ],
    "speed": [
        S("data_on_device", "auto", "keep the dataset as uint8 on the device and draw batches by index (auto: "
          "when it takes under half the free memory)", None, ("auto", "on", "off")),
        S("channels_last", "auto", "NHWC memory format (auto: on for CUDA and AVX-512 CPUs)", None,
          ("auto", "on", "off")),
        S("amp", "auto", "bf16 autocast, losses in fp32 (auto: on for AVX-512 CPUs, and for CUDA GPUs with native "
          "bf16 when the iteration is a CUDA graph; off elsewhere)", None, ("auto", "bf16", "off")),
        S("cuda_graph", "auto", "record the whole iteration once as a CUDA graph and replay it (auto: on for "
          "CUDA, eager with a one-line reason where the run cannot be captured, e.g. under torchrun; on: such "
          "runs are refused; off: every kernel launched from Python)", None, ("auto", "on", "off")),
    ],
}
del S
DEFAULTS = MappingProxyType({s.name: s.default for group in SETTINGS.values() for s in group})

# What turns the defaults back into the seeds' DCGAN (configs/dcgan_*.toml say the same in TOML).
SEEDS_DCGAN = {"batch_size": 128, "ema_kimg": 0.0, "mbstd": 0}


def help_text(setting):
    """The setting's help ending with its default, so that the two cannot drift; a setting whose default is
    empty (no augmentation, no run name yet) says in its help what that means."""
    if setting.default in (None, ""):
        return setting.help
    return f"{setting.help} (default {shown_default(setting.default)})"


def shown_default(value):
    """A default as --help shows it: on/off for switches, 0.0002 rather than 0.0002000 for numbers."""
    if isinstance(value, bool):
        return "on" if value else "off"
    return f"{value:g}" if isinstance(value, float) else str(value)


def build_parser(description, add_own_flags=None):
    """train.py's flags, one per setting, in --help's groups; and a command's own where it has some (network.py,
    dataloader.py). Every flag defaults to None, so that "given on the command line" can be told apart."""
    parser = ArgumentParser(description=description)
    for title, settings in SETTINGS.items():
        group = parser.add_argument_group(f"{title} settings")
        for s in settings:
            if isinstance(s.default, bool):
                group.add_argument(s.flag, *s.aliases, dest=s.name, action=argparse.BooleanOptionalAction,
                                   help=help_text(s))
            else:
                group.add_argument(s.flag, *s.aliases, dest=s.name, type=s.type, choices=s.choices,
                                   help=help_text(s))
    if add_own_flags:
        add_own_flags(parser.add_argument)
    return parser


def flag_table():
    """docs/training.md's table of every setting, as markdown (tests/test_train.py keeps the two equal)."""
    lines = ["| flag | default | meaning |", "|---|---|---|"]
    for settings in SETTINGS.values():
        for s in settings:
            default = "" if s.default in (None, "") else f"`{shown_default(s.default)}`"
            meaning = s.help + (f" (one of {', '.join(map(str, s.choices))})" if s.choices else "")
            lines.append(f"| `{s.flag}` | {default} | {meaning.replace('|', '&#124;')} |")
    return "\n".join(lines)


def parse_settings(argv, description, add_own_flags=None):
    """defaults < --config file < command line, checked; returns (read-only settings, keys given on the command
    line). A command's own flags (add_own_flags(add)) carry their defaults into the settings."""
    parser = build_parser(description, add_own_flags)
    own = {a.dest: a.default for a in parser._actions if a.dest not in DEFAULTS and a.dest != "help"}
    cfg, given, in_file = parse_with_config(parser, {**DEFAULTS, **own}, argv)
    cfg = {**cfg, **steps_aside(cfg, given | in_file)}
    check_settings(cfg)
    return MappingProxyType(cfg), given


def steps_aside(cfg, chosen):
    """The default recipe's EMA and minibatch std step aside for what they cannot go with, where only their
    defaults put them: --ema 0.999 alone asks for that EMA, --loss wgan-gp alone for a D without minibatch std.
    Returns the settings that change."""
    changes = {}
    if cfg["ema"] and "ema_kimg" not in chosen:
        changes["ema_kimg"] = 0.0
    if cfg["loss"] == "wgan-gp" and "mbstd" not in chosen:
        changes["mbstd"] = 0
    return changes


def flag(key):
    return "--" + key.replace("_", "-")


def check_settings(cfg):
    """What the flags' ranges cannot see: a run name that is a path, settings that do not go together."""
    if cfg["run"]:
        check_run_name(cfg["run"])
    if cfg["loss"] == "wgan-gp" and cfg["d_norm"] == "batch":
        raise UserError("WGAN-GP penalises each sample's gradient, which BatchNorm in D mixes across the batch: "
                        "add --d-norm none (or spectral)")
    if cfg["mbstd"] and cfg["loss"] == "wgan-gp":
        raise UserError("--mbstd mixes the images of a group in D, which WGAN-GP's per-sample penalty forbids: "
                        "drop --mbstd, or use --r1 with another loss")
    if cfg["ema"] and cfg["ema_kimg"]:
        raise UserError("give the EMA once: --ema (a decay per step) or --ema-kimg (a half-life in images)")
    if cfg["lr_schedule"] == "linear" and cfg["max_minutes"] and not cfg["max_steps"]:
        raise UserError("--lr-schedule linear decays over the planned iterations, which --max-minutes does not "
                        "fix: give --max-steps (or --epochs) as the budget instead")
    if cfg["label_smooth"] < 1 and cfg["loss"] != "bce":
        raise UserError(f"--label-smooth smooths BCE's real targets; --loss {cfg['loss']} has none: drop it")
    if cfg["ada_target"] and not cfg["diffaug"]:
        raise UserError("--ada-target adapts how often the --diffaug transforms apply: name them too, e.g. "
                        "--diffaug color,translation,cutout")
    if cfg["ada_target"] and cfg["loss"] not in ("bce", "hinge"):
        raise UserError(f"--ada-target reads the sign of D's outputs, which --loss {cfg['loss']} does not centre "
                        "on 0: use --loss bce or hinge, or fixed --diffaug without --ada-target")
    try:
        diffaug.parse_policy(cfg["diffaug"])
    except ValueError as err:
        raise UserError(f"--diffaug: {err}") from None


def check_saved(config, path, keys):
    """A checkpoint's config (already in today's format, checkpoint.py) with `keys` present and valid by the
    rules of their flags."""
    missing = [key for key in keys if key not in config]
    if missing:
        raise UserError(f"{path}: its config lacks {', '.join(missing)}, so it was not written by train.py: use "
                        "another file from the run, e.g. latest.pt or an epoch_NNN.pt")
    check_values(build_parser(""), {key: config[key] for key in keys}, DEFAULTS, path)
    return config


def check_saved_settings(config, path):
    """A training checkpoint's config by the rules of the flags: the architecture's keys present, every setting
    it holds of its flag's type, choices and range (no NaN), and the settings together (check_settings). Keys
    it lacks are today's defaults (settings_from_checkpoint), and keys no setting has are left out there."""
    check_saved(config, path, G_ARCHITECTURE_KEYS + D_ARCHITECTURE_KEYS)
    known = {key: value for key, value in config.items() if key in DEFAULTS}
    check_values(build_parser(""), known, DEFAULTS, path)
    try:
        check_settings({**DEFAULTS, **known})
    except UserError as err:
        raise UserError(f"{path}: its settings do not go together, which train.py never saves ({err}): resume "
                        "from another file of the run, or start a new run") from None
    return config


def settings_from_checkpoint(ckpt, path, cfg, given):
    """The checkpoint's settings, with the flags given now applied; flags that would change the networks or the
    optimisers' kind (what the saved weights and optimiser state are made of) are refused."""
    saved = {key: value for key, value in {**DEFAULTS, **ckpt["config"]}.items() if key in DEFAULTS}
    for key in G_ARCHITECTURE_KEYS + D_ARCHITECTURE_KEYS + ("optim",):
        if key in given and cfg[key] != saved[key]:
            raise UserError(f"{path} was trained with {key}={saved[key]} but {flag(key)} {cfg[key]} was asked: "
                            "drop the flag to resume, or start a new run")
    if ({"ema", "ema_kimg"} & given) and has_ema(cfg) != has_ema(saved):
        raise UserError(f"{path} was trained {'with' if has_ema(saved) else 'without'} an EMA of G: it cannot be "
                        "switched on or off on resume (its decay can change); drop the flag, or start a new run")
    if ckpt.get("batch_in_epoch") and {"batch_size", "d_steps"} & given and \
            (cfg["batch_size"], cfg["d_steps"]) != (saved["batch_size"], saved["d_steps"]):
        raise UserError(f"{path} stopped inside an epoch of its batches: --batch-size and --d-steps can change on "
                        "resume only from a checkpoint at an epoch's end (an epoch_NNN.pt)")
    merged = {**saved, **{key: cfg[key] for key in given if key not in ("resume", "config")}, "resume": ""}
    check_settings(merged)  # the flags given now must go with the saved ones too
    return merged

