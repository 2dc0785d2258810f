"""Training settings: every key with its default and its flag, the checks made before a run starts, and
how a resumed run's saved settings meet the flags given now. A config file in configs/ sets any key
(lr_g <-> --lr-g); the command line wins."""
import argparse

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

# Settings added after the first checkpoints were written, with the value that means "as before": a checkpoint
# without them resumes and samples as it always did (the defaults of new runs may differ).
AS_BEFORE = {"r1": 0.0, "r1_every": 16, "ema_kimg": 0.0, "ema_rampup": 0.05, "lr_schedule": "constant",
             "lr_decay_start": 0.5, "mbstd": 0, "label_smooth": 1.0, "tensorboard": False, "ada_target": 0.0,
             "ada_kimg": 100.0}
# Ranges of the numeric flags below that bench.py's flags share, and the caps that need a reason.
TOY_SIZE_MAX = 10_000_000  # toy faces are drawn by index; an epoch's shuffled indices must fit in memory
WIDTH = integer(1, 256)  # ngf, ndf: the widest layer is 16x this, and 4096 channels take gigabytes at 256 px
BATCH_SIZE = integer(1, 8192)
WORKERS = integer(0, 256)
LEARNING_RATE = number(above=0, high=1)
DECAY = number(low=0, below=1)  # Adam's betas and the EMA decay
FID_N_MAX = 100_000  # images per side: their features (2048 float32 each, kept for KID) take 0.8 GB

DEFAULTS = {
    "config": None,
    "data": TOYFACES, "toy_size": 20000, "res": 64, "flip": False, "workers": 2,
    "nz": 100, "ngf": 64, "ndf": 64, "g_act": "relu", "d_norm": "batch", "init": "dcgan",
    "epochs": 25, "batch_size": 64, "max_steps": 0, "d_steps": 1, "g_steps": 1,
    "optim": "adam", "lr_g": 2e-4, "lr_d": 2e-4, "beta1": 0.5, "beta2": 0.999,
    "loss": "bce", "g_loss": "nonsaturating", "clip": 0.01, "gp_weight": 10.0, "ema": 0.0, "diffaug": "",
    "r1": 0.0, "r1_every": 16, "ema_kimg": 10.0, "ema_rampup": 0.05, "lr_schedule": "constant",
    "lr_decay_start": 0.5, "mbstd": 4, "label_smooth": 1.0, "ada_target": 0.0, "ada_kimg": 100.0,
    "seed": 0, "device": "auto", "run": "", "resume": "",
    "log_every": 10, "ckpt_minutes": 10.0, "ckpt_every": 5, "recal_samples": 4096, "max_minutes": 0.0,
    "fid_every": 0, "fid_n": 5000, "fid_real": "",
    "data_on_device": "auto", "channels_last": "auto", "amp": "auto", "cuda_graph": "auto", "tensorboard": False,
}

# What turns the defaults back into the seeds' DCGAN (configs/dcgan_*.toml say the same in TOML).
SEEDS_DCGAN = {"batch_size": 128, "ema_kimg": 0.0, "mbstd": 0}


def add_data_flags(add):
    add("--config", help="TOML file from configs/; flags given here override its keys")
    add("--data", help="toyfaces, a dataset made by preprocess.py, or a folder of images")
    add("--toy-size", type=integer(1, TOY_SIZE_MAX), help="number of toy faces in one epoch")
    add("--res", type=int, choices=RESOLUTIONS, help="image size in pixels")
    add("--flip", action=argparse.BooleanOptionalAction, help="random horizontal flips, done on the device")
    add("--workers", type=WORKERS, help="data loading processes (0 loads in the training process)")


def add_model_flags(add):
    add("--nz", type=integer(1, 4096), help="latent size")
    add("--ngf", type=WIDTH, help="generator width: channels of its last hidden layer")
    add("--ndf", type=WIDTH, help="discriminator width: channels of its first layer")
    add("--g-act", choices=("relu", "leaky"), help="generator activation")
    add("--d-norm", choices=D_NORMS, help="discriminator normalisation: batch, none, spectral")
    add("--init", choices=("dcgan", "default"), help="DCGAN's N(0, 0.02) init or PyTorch's default")
    add("--mbstd", type=integer(0, 64), help="minibatch standard deviation feature in D over groups of this many "
        "images, against mode collapse (ProGAN, StyleGAN use 4; 0: off)")


def add_optimisation_flags(add):
    add("--epochs", type=integer(1, 1_000_000), help="passes over the data")
    add("--batch-size", type=BATCH_SIZE, help="images per D update")
    add("--max-steps", type=integer(0), help="stop after this many iterations (0: no limit; for smoke tests)")
    add("--max-minutes", type=number(low=0), help="stop after this many minutes of training (0: no limit)")
    add("--d-steps", type=integer(1, 100), help="D updates per iteration, each on a new real batch (the "
        "anime recipe uses 5)")
    add("--g-steps", type=integer(1, 100), help="G updates per iteration")
    add("--optim", choices=("adam", "sgd", "rmsprop"), help="optimiser for both nets")
    add("--lr-g", type=LEARNING_RATE, help="generator learning rate")
    add("--lr-d", type=LEARNING_RATE, help="discriminator learning rate")
    add("--beta1", type=DECAY, help="Adam beta1 (0.5 in DCGAN); SGD momentum, RMSprop alpha unused")
    add("--beta2", type=DECAY, help="Adam beta2")
    add("--loss", choices=losses.LOSSES, help="bce (DCGAN), hinge, wgan (weight clipping), wgan-gp")
    add("--g-loss", choices=losses.G_LOSSES, help="with bce: nonsaturating or the original saturating")
    add("--clip", type=number(above=0), help="wgan: clip every critic weight to [-clip, clip]")
    add("--gp-weight", type=number(low=0), help="wgan-gp: weight of the gradient penalty")
    add("--ema", type=DECAY, help="keep an EMA of G with this decay, e.g. 0.999, and sample from it (0: off)")
    add("--ema-kimg", type=number(low=0, high=100_000), help="or an EMA of G whose half-life is this many "
        "thousand images, whatever the batch size (stylegan2-ada's ema_kimg, e.g. 10; 0: off)")
    add("--ema-rampup", type=number(low=0, high=1), help="with --ema-kimg: the half-life grows with the images "
        "seen, at most this fraction of them, so early samples are not averaged with noise (0: off)")
    add("--diffaug", help="differentiable augmentation before D: any of color,translation,cutout")
    add("--ada-target", type=number(low=0, below=1), help="adaptive augmentation (StyleGAN2-ADA): apply each "
        "--diffaug transform with a probability that rises while the mean sign of D's outputs on real images is "
        "above this target and falls below it (e.g. 0.6; 0: --diffaug always applies)")
    add("--ada-kimg", type=number(above=0, high=100_000), help="with --ada-target: thousands of images over "
        "which the probability can go from 0 to 1")
    add("--r1", type=number(low=0, high=1e4), help="R1 penalty weight gamma on D's gradient at real images "
        "(StyleGAN2; e.g. 0.1 to 10 at 64 px; 0: off)")
    add("--r1-every", type=integer(1, 1000), help="apply R1 every this many D updates, scaled up to match "
        "(lazy regularisation)")
    add("--label-smooth", type=number(above=0.5, high=1), help="with --loss bce: D's target for real images, "
        "e.g. 0.9 (one-sided label smoothing; 1: off)")
    add("--lr-schedule", choices=("constant", "linear"), help="constant or linear: both learning "
        "rates fall linearly to 0 from --lr-decay-start of the run to its end")
    add("--lr-decay-start", type=number(low=0, below=1), help="with --lr-schedule linear: the fraction of "
        "the planned iterations after which the rates decay")
    add("--seed", type=SEED, help="seed for weights, data order, noise")


def add_run_flags(add):
    add("--device", help="auto | cpu | cuda | cuda:N | mps")
    add("--run", "--run-name", dest="run", help="run name: outputs/<run>/ and checkpoints/<run>/ (default: config "
        "name, res and time); under torchrun write --run-name, which torchrun's own parser leaves alone")
    add("--resume", help="auto (the newest run of this name or config) or a checkpoint path")
    add("--log-every", type=integer(1), help="iterations per metrics.csv line and progress update")
    add("--ckpt-minutes", type=number(above=0), help="also rewrite latest.pt this often (minutes)")
    add("--ckpt-every", type=integer(0), help="keep epoch_NNN.pt every this many epochs (0: never)")
    add("--recal-samples", type=integer(1, 1_000_000),
        help="noise samples to recalibrate G's BatchNorm for eval")
    add("--fid-every", type=integer(0),
        help="FID every this many epochs into metrics.csv and fid.png; best.pt (0: off)")
    add("--fid-n", type=integer(2, FID_N_MAX, why="2048 or more for a full-rank FID"),
        help="generated images per FID (below 2048 FID is rank-deficient)")
    add("--fid-real", help="real images for FID: a packed dataset, folder, .npz stats (default: --data)")
    add("--tensorboard", action=argparse.BooleanOptionalAction, help="also log losses, D's outputs, speed, FID and "
        "the grids to outputs/<run>/tensorboard/ (needs: pip install tensorboard)")


def add_speed_flags(add):
    add("--data-on-device", choices=("auto", "on", "off"), help="keep the dataset as uint8 on the device and "
        "draw batches by index (auto: when it takes under half the free memory)")
    add("--channels-last", choices=("auto", "on", "off"),
        help="NHWC memory format (auto: on for CUDA and AVX-512 CPUs)")
    add("--amp", choices=("auto", "bf16", "off"), help="bf16 autocast, losses in fp32 (auto: on for AVX-512 CPUs, "
        "and for CUDA GPUs with native bf16 when the iteration is a CUDA graph; off elsewhere)")
    add("--cuda-graph", choices=("auto", "on", "off"), help="record the whole iteration once as a CUDA graph and "
        "replay it (auto: on for CUDA, eager with a one-line reason where the run cannot be captured, e.g. under "
        "torchrun; on: such runs are refused; off: every kernel launched from Python)")


def build_parser(description, add_own_flags=None):
    """train.py's flags, and a command's own where it has some (network.py, dataloader.py)."""
    parser = ArgumentParser(description=description)
    for add_flags in (add_data_flags, add_model_flags, add_optimisation_flags, add_run_flags, add_speed_flags):
        add_flags(with_default(parser.add_argument))
    if add_own_flags:
        add_own_flags(parser.add_argument)
    return parser


def with_default(add_argument):
    """add_argument that ends a flag's help with its default from DEFAULTS, so that the two cannot drift;
    flags whose default is empty (no augmentation, no run name yet) say in their help what that means."""
    def add(*names, **kwargs):
        key = kwargs.get("dest") or names[0].lstrip("-").replace("-", "_")
        if DEFAULTS.get(key) not in (None, ""):
            help_text, default = kwargs["help"], shown_default(DEFAULTS[key])
            kwargs["help"] = help_text[:-1] + f"; default {default})" if help_text.endswith(")") \
                else f"{help_text} (default {default})"
        return add_argument(*names, **kwargs)
    return add


def shown_default(value):
    """A default as --help shows it: on/off for switches, 0.0002 rather than 0.0002000 for numbers."""
    if isinstance(value, bool):
        return "on" if value else "off"
    return f"{value:g}" if isinstance(value, float) else str(value)


def parse_settings(argv, description, add_own_flags=None):
    """defaults < --config file < command line, checked; returns (settings, keys given on the command line).
    A command's own flags (add_own_flags(add)) carry their defaults into the settings."""
    parser = build_parser(description, add_own_flags)
    own = {a.dest: a.default for a in parser._actions if a.dest not in DEFAULTS and a.dest != "help"}
    cfg, given, in_file = parse_with_config(parser, {**DEFAULTS, **own}, argv)
    give_way(cfg, given | in_file)
    check_settings(cfg)
    return cfg, given


def give_way(cfg, chosen):
    """The default recipe's EMA and minibatch std step aside for what they cannot go with, where only their
    defaults put them: --ema 0.999 alone asks for that EMA, --loss wgan-gp alone for a D without minibatch std."""
    if cfg["ema"] and "ema_kimg" not in chosen:
        cfg["ema_kimg"] = 0.0
    if cfg["loss"] == "wgan-gp" and "mbstd" not in chosen:
        cfg["mbstd"] = 0


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
    """A checkpoint's config with the settings it predates as they were; `keys` present and valid by the rules of
    their flags."""
    config = {**AS_BEFORE, **config}
    missing = [key for key in keys if key not in config]
    if missing:
        raise UserError(f"{path}: its config lacks {', '.join(missing)}, so it was not written by train.py: use "
                        "another file from the run, e.g. latest.pt or an epoch_NNN.pt")
    check_values(build_parser(""), {key: config[key] for key in keys}, DEFAULTS, path)
    return config


def settings_from_checkpoint(ckpt, path, cfg, given):
    """The checkpoint's settings, with the flags given now applied; flags that would change the networks or the
    optimisers' kind (what the saved weights and optimiser state are made of) are refused."""
    # Settings the code no longer has (--compile) are dropped; those it gained since are as they were before them.
    saved = {key: value for key, value in {**DEFAULTS, **AS_BEFORE, **ckpt["config"]}.items() if key in DEFAULTS}
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
