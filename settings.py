"""Training settings: every key with its default and its flag, the checks made before a run starts, and
how a resumed run's saved settings meet the flags given now. A config file in configs/ sets any key
(lr_g <-> --lr-g); the command line wins."""
import argparse

import diffaug
import losses
from cli import ArgumentParser, UserError, parse_with_config
from network import D_ARCHITECTURE_KEYS, D_NORMS, G_ARCHITECTURE_KEYS, RESOLUTIONS
from toyfaces import TOYFACES

DEFAULTS = {
    "config": None,
    "data": TOYFACES, "toy_size": 20000, "res": 64, "flip": False, "workers": 2,
    "nz": 100, "ngf": 64, "ndf": 64, "g_act": "relu", "d_norm": "batch", "init": "dcgan",
    "epochs": 25, "batch_size": 128, "max_steps": 0, "d_steps": 1, "g_steps": 1,
    "optim": "adam", "lr_g": 2e-4, "lr_d": 2e-4, "beta1": 0.5, "beta2": 0.999,
    "loss": "bce", "g_loss": "nonsaturating", "clip": 0.01, "gp_weight": 10.0, "ema": 0.0, "diffaug": "",
    "seed": 0, "device": "auto", "run": "", "resume": "",
    "log_every": 10, "ckpt_minutes": 10.0, "ckpt_every": 5, "recal_samples": 4096, "max_minutes": 0.0,
    "fid_every": 0, "fid_n": 5000, "fid_real": "",
    "data_on_device": "auto", "channels_last": "auto", "amp": "auto", "compile": False,
}


def add_data_flags(add):
    add("--config", help="TOML file from configs/; flags given here override its keys")
    add("--data", help="toyfaces (default), a dataset made by preprocess.py, or a folder of images")
    add("--toy-size", type=int, help="number of toy faces in one epoch (default 20000)")
    add("--res", type=int, choices=RESOLUTIONS, help="image size in pixels (default 64)")
    add("--flip", action=argparse.BooleanOptionalAction, help="random horizontal flips, done on the device")
    add("--workers", type=int, help="data loading processes (default 2; 0 loads in the training process)")


def add_model_flags(add):
    add("--nz", type=int, help="latent size (default 100)")
    add("--ngf", type=int, help="generator width: channels of its last hidden layer (default 64)")
    add("--ndf", type=int, help="discriminator width: channels of its first layer (default 64)")
    add("--g-act", choices=("relu", "leaky"), help="generator activation (default relu)")
    add("--d-norm", choices=D_NORMS, help="discriminator normalisation: batch (default), none, spectral")
    add("--init", choices=("dcgan", "default"), help="DCGAN's N(0, 0.02) init or PyTorch's default")


def add_optimisation_flags(add):
    add("--epochs", type=int, help="passes over the data (default 25)")
    add("--batch-size", type=int, help="images per D update (default 128)")
    add("--max-steps", type=int, help="stop after this many iterations (0: no limit; for smoke tests)")
    add("--max-minutes", type=float, help="stop after this many minutes of training (0: no limit)")
    add("--d-steps", type=int, help="D updates per iteration, each on a new real batch (default 1)")
    add("--g-steps", type=int, help="G updates per iteration (default 1; the anime recipe uses 5)")
    add("--optim", choices=("adam", "sgd", "rmsprop"), help="optimiser for both nets (default adam)")
    add("--lr-g", type=float, help="generator learning rate (default 2e-4)")
    add("--lr-d", type=float, help="discriminator learning rate (default 2e-4)")
    add("--beta1", type=float, help="Adam beta1 (default 0.5, as in DCGAN); SGD momentum, RMSprop alpha unused")
    add("--beta2", type=float, help="Adam beta2 (default 0.999)")
    add("--loss", choices=losses.LOSSES, help="bce (DCGAN, default), hinge, wgan (weight clipping), wgan-gp")
    add("--g-loss", choices=losses.G_LOSSES, help="with bce: nonsaturating (default) or the original saturating")
    add("--clip", type=float, help="wgan: clip every critic weight to [-clip, clip] (default 0.01)")
    add("--gp-weight", type=float, help="wgan-gp: weight of the gradient penalty (default 10)")
    add("--ema", type=float, help="keep an EMA of G with this decay, e.g. 0.999, and sample from it (0: off)")
    add("--diffaug", help="differentiable augmentation before D: any of color,translation,cutout")
    add("--seed", type=int, help="seed for weights, data order, noise (default 0)")


def add_run_flags(add):
    add("--device", help="auto | cpu | cuda | cuda:N (default auto)")
    add("--run", "--run-name", dest="run", help="run name: outputs/<run>/ and checkpoints/<run>/ (default: config "
        "name, res and time); under torchrun write --run-name, which torchrun's own parser leaves alone")
    add("--resume", help="auto (the newest run of this name or config) or a checkpoint path")
    add("--log-every", type=int, help="iterations per metrics.csv line and progress update (default 10)")
    add("--ckpt-minutes", type=float, help="also rewrite latest.pt this often (default 10)")
    add("--ckpt-every", type=int, help="keep epoch_NNN.pt every this many epochs (default 5; 0: never)")
    add("--recal-samples", type=int, help="noise samples to recalibrate G's BatchNorm for eval (default 4096)")
    add("--fid-every", type=int, help="FID every this many epochs into metrics.csv and fid.png; best.pt (0: off)")
    add("--fid-n", type=int, help="generated images per FID (default 5000; below 2048 FID is rank-deficient)")
    add("--fid-real", help="real images for FID: a packed dataset, folder, .npz stats (default: --data)")


def add_speed_flags(add):
    add("--data-on-device", choices=("auto", "on", "off"), help="keep the dataset as uint8 on the device and "
        "draw batches by index (auto: when it takes under half the free memory)")
    add("--channels-last", choices=("auto", "on", "off"),
        help="NHWC memory format (auto: on for CUDA and AVX-512 CPUs)")
    add("--amp", choices=("auto", "bf16", "off"), help="bf16 autocast, losses in fp32 "
        "(auto: on for CUDA and AVX-512 CPUs)")
    add("--compile", action=argparse.BooleanOptionalAction, help="torch.compile G and D (default off)")


def build_parser(description):
    parser = ArgumentParser(description=description)
    for add_flags in (add_data_flags, add_model_flags, add_optimisation_flags, add_run_flags, add_speed_flags):
        add_flags(parser.add_argument)
    return parser


def parse_settings(argv, description):
    """defaults < --config file < command line, checked; returns (settings, keys given on the command line)."""
    cfg, given = parse_with_config(build_parser(description), DEFAULTS, argv)
    check_settings(cfg)
    return cfg, given


def flag(key):
    return "--" + key.replace("_", "-")


def check_settings(cfg):
    for key in ("toy_size", "nz", "ngf", "ndf", "epochs", "batch_size", "d_steps", "g_steps", "log_every",
                "recal_samples"):
        if cfg[key] < 1:
            raise UserError(f"{flag(key)} must be at least 1, not {cfg[key]}")
    for key in ("lr_g", "lr_d", "ckpt_minutes"):
        if cfg[key] <= 0:
            raise UserError(f"{flag(key)} must be positive, not {cfg[key]}")
    for key in ("workers", "max_steps", "max_minutes", "ckpt_every", "fid_every"):
        if cfg[key] < 0:
            raise UserError(f"{flag(key)} cannot be negative")
    if cfg["fid_every"] and cfg["fid_n"] < 2:
        raise UserError("--fid-n must be at least 2 (2048 or more for a full-rank FID)")
    if not 0 <= cfg["ema"] < 1:
        raise UserError(f"--ema is a decay in [0, 1), e.g. 0.999, not {cfg['ema']}")
    if cfg["loss"] == "wgan-gp" and cfg["d_norm"] == "batch":
        raise UserError("WGAN-GP penalises each sample's gradient, which BatchNorm in D mixes across the batch: "
                        "add --d-norm none (or spectral)")
    try:
        diffaug.parse_policy(cfg["diffaug"])
    except ValueError as err:
        raise UserError(f"--diffaug: {err}") from None


def settings_from_checkpoint(ckpt, path, cfg, given):
    """The checkpoint's settings, with flags given now applied where they do not change the networks."""
    saved = ckpt["config"]
    for key in G_ARCHITECTURE_KEYS + D_ARCHITECTURE_KEYS:
        if key in given and cfg[key] != saved[key]:
            raise UserError(f"{path} was trained with {key}={saved[key]} but {flag(key)} {cfg[key]} was asked: "
                            "drop the flag to resume, or start a new run")
    return {**DEFAULTS, **saved, **{key: cfg[key] for key in given if key not in ("resume", "config")}, "resume": ""}
