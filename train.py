"""Train a DCGAN on faces: alternating Adam updates of D and G, checkpoints, sample grids and loss plots.

    python train.py --config configs/demo.toml                  # built-in toy faces, minutes on a CPU
    python train.py --epochs 25 --res 128 --data data/celeba128  # a dataset made by preprocess.py
    python train.py --config configs/celeba64.toml --resume auto # continue the newest celeba64 run exactly

Every key of a config file is also a flag (lr_g <-> --lr-g); the command line wins.
"""
import argparse
import contextlib
import copy
import csv
import json
import os
import signal
import time
from datetime import datetime
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

import dataloader
from cli import ArgumentParser, UserError, atomic_path, parse_with_config, resolve_device, run
from generate import ARCHITECTURE_KEYS, generator_from_config, grid_image, load_checkpoint, render, save_png
import diffaug
import losses
from network import D_NORMS, RESOLUTIONS, Discriminator, Generator, init_dcgan

DEFAULTS = {
    "config": None,
    "data": dataloader.TOYFACES, "toy_size": 20000, "res": 64, "flip": False, "workers": 2,
    "nz": 100, "ngf": 64, "ndf": 64, "g_act": "relu", "d_norm": "batch", "init": "dcgan",
    "epochs": 25, "batch_size": 128, "max_steps": 0, "d_steps": 1, "g_steps": 1,
    "optim": "adam", "lr_g": 2e-4, "lr_d": 2e-4, "beta1": 0.5, "beta2": 0.999,
    "loss": "bce", "g_loss": "nonsaturating", "clip": 0.01, "gp_weight": 10.0, "ema": 0.0, "diffaug": "",
    "seed": 0, "device": "auto", "run": "", "resume": "",
    "log_every": 10, "ckpt_minutes": 10.0, "ckpt_every": 5, "recal_samples": 4096, "max_minutes": 0.0,
    "fid_every": 0, "fid_n": 5000, "fid_real": "",
    "data_on_device": "auto", "channels_last": "auto", "amp": "auto", "compile": False,
}
D_ARCHITECTURE_KEYS = ("ndf", "d_norm")
METRICS = ("loss_d", "loss_g", "d_real", "d_fake")  # summed on the device, averaged per log line
GRID_SIZE = 64  # the fixed noise: an 8x8 grid every epoch


def build_parser():
    p = ArgumentParser(description=__doc__)
    add = p.add_argument
    add("--config", help="TOML file from configs/; flags given here override its keys")
    add("--data", help="toyfaces (default), a dataset made by preprocess.py, or a folder of images")
    add("--toy-size", type=int, help="number of toy faces in one epoch (default 20000)")
    add("--res", type=int, choices=RESOLUTIONS, help="image size in pixels (default 64)")
    add("--flip", action=argparse.BooleanOptionalAction, help="random horizontal flips, done on the device")
    add("--workers", type=int, help="data loading processes (default 2; 0 loads in the training process)")
    add("--nz", type=int, help="latent size (default 100)")
    add("--ngf", type=int, help="generator width: channels of its last hidden layer (default 64)")
    add("--ndf", type=int, help="discriminator width: channels of its first layer (default 64)")
    add("--g-act", choices=("relu", "leaky"), help="generator activation (default relu)")
    add("--d-norm", choices=D_NORMS, help="discriminator normalisation: batch (default), none, spectral")
    add("--init", choices=("dcgan", "default"), help="DCGAN's N(0, 0.02) init or PyTorch's default")
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
    add("--device", help="auto | cpu | cuda | cuda:N (default auto)")
    add("--run", "--run-name", dest="run", help="run name: outputs/<run>/ and checkpoints/<run>/ (default: config "
        "name, res and time); under torchrun write --run-name, which torchrun's own parser leaves alone")
    add("--resume", help="auto (the newest run of this name or config) or a checkpoint path")
    add("--log-every", type=int, help="iterations per metrics.csv line and progress update (default 10)")
    add("--ckpt-minutes", type=float, help="also rewrite latest.pt this often (default 10)")
    add("--ckpt-every", type=int, help="keep epoch_NNN.pt every this many epochs (default 5; 0: never)")
    add("--recal-samples", type=int, help="noise samples to recalibrate G's BatchNorm for eval (default 4096)")
    add("--data-on-device", choices=("auto", "on", "off"), help="keep the dataset as uint8 on the device and "
        "draw batches by index (auto: when it takes under half the free memory)")
    add("--channels-last", choices=("auto", "on", "off"),
        help="NHWC memory format (auto: on for CUDA and AVX-512 CPUs)")
    add("--amp", choices=("auto", "bf16", "off"), help="bf16 autocast, losses in fp32 "
        "(auto: on for CUDA and AVX-512 CPUs)")
    add("--compile", action=argparse.BooleanOptionalAction, help="torch.compile G and D (default off)")
    add("--fid-every", type=int, help="FID every this many epochs into metrics.csv and fid.png; best.pt (0: off)")
    add("--fid-n", type=int, help="generated images per FID (default 5000; below 2048 FID is rank-deficient)")
    add("--fid-real", help="real images for FID: a packed dataset, folder, .npz stats (default: --data)")
    return p


def check_settings(cfg):
    positive = ("toy_size", "nz", "ngf", "ndf", "epochs", "batch_size", "d_steps", "g_steps", "log_every",
                "recal_samples")
    for key in positive:
        if cfg[key] < 1:
            raise UserError(f"--{key.replace('_', '-')} must be at least 1, not {cfg[key]}")
    for key in ("lr_g", "lr_d", "ckpt_minutes"):
        if cfg[key] <= 0:
            raise UserError(f"--{key.replace('_', '-')} must be positive, not {cfg[key]}")
    for key in ("workers", "max_steps", "max_minutes", "ckpt_every", "fid_every"):
        if cfg[key] < 0:
            raise UserError(f"--{key.replace('_', '-')} cannot be negative")
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


def default_run_name(cfg):
    stem = Path(cfg["config"]).stem if cfg["config"] else Path(str(cfg["data"])).name
    return f"{stem}-{cfg['res']}px-{datetime.now():%Y%m%d-%H%M%S}"


# ---------------------------------------------------------------------------------------------- models

def make_models(cfg, device):
    torch.manual_seed(cfg["seed"])  # the initial weights are part of what a seed reproduces
    G = Generator(cfg["res"], cfg["nz"], cfg["ngf"], cfg["g_act"])
    D = Discriminator(cfg["res"], cfg["ndf"], cfg["d_norm"])
    if cfg["init"] == "dcgan":
        init_dcgan(G)
        init_dcgan(D)
    return G.to(device), D.to(device)


def make_optimizer(params, cfg, lr, device="cpu"):
    if cfg["optim"] == "adam":  # the fused kernel updates all parameters at once on CUDA
        return torch.optim.Adam(params, lr=lr, betas=(cfg["beta1"], cfg["beta2"]),
                                fused=torch.device(device).type == "cuda")
    if cfg["optim"] == "rmsprop":
        return torch.optim.RMSprop(params, lr=lr)
    return torch.optim.SGD(params, lr=lr, momentum=cfg["beta1"])


@torch.no_grad()
def recalibrated_copy(G, samples, nz, device, batch_size=256):
    """A copy of G whose BatchNorm running statistics are the exact averages over `samples` noise vectors.

    Training-mode BatchNorm normalises with each batch's statistics; the running averages it keeps lag
    behind weights that move every step, so eval-mode samples drawn with them are often washed out or
    broken. Re-estimating them on the final weights makes eval mode match training mode, and lets each
    sample be drawn on its own. The noise comes from a fixed seed, so the copy depends on G alone.
    """
    G_eval = copy.deepcopy(G).train()
    for module in G_eval.modules():
        if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
            module.reset_running_stats()
            module.momentum = None  # a cumulative average over all the batches below
    generator = torch.Generator().manual_seed(0)
    for start in range(0, samples, batch_size):
        G_eval(torch.randn(min(batch_size, samples - start), nz, generator=generator).to(device))
    for module in G_eval.modules():
        if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
            module.momentum = 0.1
    return G_eval.eval()


# ---------------------------------------------------------------------------------------------- one iteration

def train_iteration(G, D, opt_g, opt_d, real_batches, cfg, noise, generator=None, fresh_fakes=False):
    """d_steps D updates (one real batch each), then g_steps G updates; returns the METRICS as a tensor.

    The first G update reuses the last fake batch D saw, as the DCGAN reference does, saving a G forward;
    under DistributedDataParallel (fresh_fakes) each G forward must meet its own backward, so D's fakes are
    drawn without a graph and G draws its own. Nothing here reads values back to the host, so the GPU never
    waits for Python. D's logits are cast to float32, so every loss is computed in fp32 under autocast.
    """
    batch, policy = cfg["batch_size"], diffaug.parse_policy(cfg["diffaug"])

    def critic(x):
        return D(diffaug.augment(x, policy, generator) if policy else x).float()

    for real in real_batches:
        with torch.set_grad_enabled(not fresh_fakes):
            fake = G(noise(batch))
        real_logits, fake_logits = critic(real), critic(fake.detach())
        loss_d = losses.d_loss(cfg["loss"], real_logits, fake_logits)
        if cfg["loss"] == "wgan-gp":
            loss_d = loss_d + cfg["gp_weight"] * losses.gradient_penalty(D, real, fake[:len(real)], generator)
        opt_d.zero_grad(set_to_none=True)
        loss_d.backward()
        opt_d.step()
        if cfg["loss"] == "wgan":
            losses.clip_weights(D, cfg["clip"])
    for g_step in range(cfg["g_steps"]):
        if g_step or fresh_fakes:
            fake = G(noise(batch))
        with frozen(D):
            loss_g = losses.g_loss(cfg["loss"], critic(fake), cfg["g_loss"])
            opt_g.zero_grad(set_to_none=True)
            loss_g.backward()
        opt_g.step()
    # D(x), D(G(z)): probabilities for bce; the raw critic scores for the other losses
    score = torch.sigmoid if cfg["loss"] == "bce" else torch.as_tensor
    return torch.stack([loss_d.detach(), loss_g.detach(),
                        score(real_logits.detach()).mean(), score(fake_logits.detach()).mean()])


@contextlib.contextmanager
def frozen(D):
    """D's weights need no gradient while G learns: backward then skips D's weight gradients (and, under
    DistributedDataParallel, their all-reduce), which is a good part of a G step's cost."""
    params = [p for p in D.parameters() if p.requires_grad]
    for p in params:
        p.requires_grad_(False)
    try:
        with D.no_sync() if isinstance(D, DistributedDataParallel) else contextlib.nullcontext():
            yield
    finally:
        for p in params:
            p.requires_grad_(True)


@torch.no_grad()
def update_ema(G_ema, G, decay):
    """G_ema <- decay * G_ema + (1 - decay) * G; BatchNorm statistics are re-estimated when sampling."""
    for p_ema, p in zip(G_ema.parameters(), G.parameters()):
        p_ema.lerp_(p, 1 - decay)


# ---------------------------------------------------------------------------------------------- files

def rng_states(noise_generator):
    """The random state a run draws from: noise and flips come from one generator, the data order from
    (seed, epoch), the recalibration noise from a fixed seed; torch's global state seeds loader workers."""
    return {"torch": torch.get_rng_state(), "noise": noise_generator.get_state()}


def set_rng_states(states, noise_generator):
    torch.set_rng_state(states["torch"])
    noise_generator.set_state(states["noise"].cpu())


def save_checkpoint(path, state):
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


def write_json(path, data):
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(data, indent=2) + "\n")


class MetricsLog:
    """metrics.csv, one line per --log-every iterations; on resume, lines past the checkpoint are dropped."""

    COLUMNS = ("step", "epoch") + METRICS + ("images_per_s", "elapsed_s", "fid")

    def __init__(self, path, resume_step=None):
        self.path = path
        rows = []
        if resume_step is not None and path.exists():
            with path.open() as f:
                rows = [r for r in csv.DictReader(f) if int(r["step"]) <= resume_step]
        with atomic_path(path) as tmp:
            with tmp.open("w", newline="") as f:
                writer = csv.DictWriter(f, self.COLUMNS)
                writer.writeheader()
                writer.writerows(rows)
        self.elapsed = float(rows[-1]["elapsed_s"]) if rows else 0.0

    def append(self, row):
        with self.path.open("a", newline="") as f:
            csv.DictWriter(f, self.COLUMNS).writerow(row)

    def read(self):
        with self.path.open() as f:
            return list(csv.DictReader(f))


def plot_losses(rows, path):
    """D and G loss per step, raw (faint) and smoothed, as loss.png."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in rows if r["loss_d"]]  # FID lines carry no losses
    steps = np.array([int(r["step"]) for r in rows])
    fig, ax = plt.subplots(figsize=(8, 4), dpi=100)
    for key, label, colour in (("loss_d", "D loss", "tab:blue"), ("loss_g", "G loss", "tab:orange")):
        values = np.array([float(r[key]) for r in rows])
        smooth = np.copy(values)
        for i in range(1, len(values)):
            smooth[i] = 0.9 * smooth[i - 1] + 0.1 * values[i]
        ax.plot(steps, values, color=colour, alpha=0.25, linewidth=0.8)
        ax.plot(steps, smooth, color=colour, label=label)
    ax.set_xlabel("iteration")
    ax.set_ylabel("loss")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)


def plot_fid(rows, path):
    """FID against the iteration, as fid.png."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    points = [(int(r["step"]), float(r["fid"])) for r in rows if r.get("fid")]
    fig, ax = plt.subplots(figsize=(6, 3.5), dpi=100)
    ax.plot(*zip(*points), marker="o")
    ax.set(xlabel="iteration", ylabel="FID (lower is better)")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)


def find_resume_checkpoint(resume, cfg, given):
    """--resume auto|PATH -> a checkpoint path, or a UserError that says what is there to resume."""
    if resume != "auto":
        return Path(resume)
    if "run" in given:
        candidates = [Path("checkpoints") / cfg["run"] / "latest.pt"]
    else:  # the newest run made from the same config (or data) at the same resolution
        prefix = default_run_name(cfg).rsplit("-", 2)[0] + "-"
        candidates = sorted(Path("checkpoints").glob(f"{prefix}*/latest.pt"), key=lambda p: p.stat().st_mtime)
    existing = [p for p in candidates if p.is_file()]
    if not existing:
        raise UserError("--resume auto found no checkpoints/<run>/latest.pt for this run: start without "
                        "--resume, or name the run with --run or the file with --resume PATH")
    return existing[-1]


def settings_from_checkpoint(ckpt, path, cfg, given):
    """The checkpoint's config, with flags given now applied where they do not change the networks."""
    saved = ckpt["config"]
    for key in ARCHITECTURE_KEYS + D_ARCHITECTURE_KEYS:
        if key in given and cfg[key] != saved[key]:
            raise UserError(f"{path} was trained with {key}={saved[key]} but --{key.replace('_', '-')} "
                            f"{cfg[key]} was asked: drop the flag to resume, or start a new run")
    return {**DEFAULTS, **saved, **{key: cfg[key] for key in given if key not in ("resume", "config")}, "resume": ""}


# ---------------------------------------------------------------------------------------------- main

class StopRequest:
    """Ctrl-C / SIGTERM set a flag; the loop saves latest.pt at the end of the iteration and stops."""

    def __init__(self):
        self.requested = False
        signal.signal(signal.SIGINT, self.handle)
        signal.signal(signal.SIGTERM, self.handle)

    def handle(self, signum, frame):
        if self.requested:  # a second Ctrl-C means now
            raise KeyboardInterrupt
        self.requested = True


class Distributed:
    """torchrun's world: rank, size, and the few collective operations the loop needs (a no-op when alone)."""

    def __init__(self, device_name):
        self.size = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0"))
        if self.size == 1:
            self.device = resolve_device(device_name)
            return
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        wants_cuda = device_name != "cpu" and torch.cuda.is_available()
        self.device = torch.device("cuda", local_rank) if wants_cuda else torch.device("cpu")
        if wants_cuda:
            torch.cuda.set_device(self.device)
        dist.init_process_group("nccl" if wants_cuda else "gloo")

    @property
    def main(self):
        return self.rank == 0

    def shard(self, rows):
        """This rank's contiguous share of a global batch (or of global noise)."""
        share = len(rows) // self.size
        return rows[self.rank * share:(self.rank + 1) * share]

    def mean(self, tensor):
        if self.size > 1:
            dist.all_reduce(tensor)
            tensor /= self.size
        return tensor

    def any(self, flag):
        """True on every rank if it is true on any: ranks must agree before leaving the loop together."""
        if self.size == 1:
            return flag
        value = torch.tensor([float(flag)], device=self.device)
        dist.all_reduce(value, op=dist.ReduceOp.MAX)
        return bool(value.item())

    def same_on_all(self, value):
        """Rank 0's value of a picklable object, on every rank."""
        if self.size == 1:
            return value
        box = [value]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def wrap(self, model):
        if self.size == 1:
            return model
        return DistributedDataParallel(model, device_ids=[self.device.index] if self.device.type == "cuda" else None)

    def check_in_sync(self, *models):
        """Compare every parameter across ranks (float64 sums per tensor); say so on rank 0.

        BatchNorm's running statistics are left out: each rank updates them from its own share of the
        batch, DDP copies rank 0's at every forward, and checkpoints hold rank 0's."""
        if self.size == 1:
            return
        sums = torch.stack([p.detach().double().sum() for m in models for p in m.parameters()])
        gathered = [torch.empty_like(sums) for _ in range(self.size)]
        dist.all_gather(gathered, sums)
        if any(not torch.equal(gathered[0], other) for other in gathered[1:]):
            raise RuntimeError("the processes ended with different weights: please report this")
        if self.main:
            print(f"weights identical on all {self.size} processes")

    def close(self):
        if self.size > 1:
            dist.destroy_process_group()


def fast_bf16(device):
    """Whether bf16 convolutions pay here: on CUDA with bf16, and on CPUs with AVX-512, where oneDNN made a step
    2x faster (bench.py); on AVX2 it emulates them and a step was 18x slower."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    return device.type == "cpu" and torch.backends.cpu.get_cpu_capability().startswith("AVX512")


def speed_settings(cfg, device):
    """Resolve the `auto` speed options to what bench.py measured fastest on this kind of device."""
    nhwc_pays = device.type == "cuda" or fast_bf16(device)  # oneDNN's fast kernels are NHWC too
    return {"channels_last": cfg["channels_last"] == "on" or (cfg["channels_last"] == "auto" and nhwc_pays),
            "amp": cfg["amp"] == "bf16" or (cfg["amp"] == "auto" and fast_bf16(device)),
            "compile": bool(cfg["compile"])}


def prepare_models(G, D, speed, device):
    """Memory format, then compilation; returns the callables the loop uses (the modules stay for saving)."""
    if speed["channels_last"]:
        G.to(memory_format=torch.channels_last)
        D.to(memory_format=torch.channels_last)
    if speed["compile"]:
        return torch.compile(G), torch.compile(D)
    return G, D


def main(argv=None):
    cfg, given = parse_with_config(build_parser(), DEFAULTS, argv)
    check_settings(cfg)
    world = Distributed(cfg["device"])
    try:
        train(cfg, given, world)
    finally:
        world.close()


def train(cfg, given, world):
    ckpt, resume_path = None, None
    if cfg["resume"]:
        resume_path = find_resume_checkpoint(cfg["resume"], cfg, given)
        ckpt = load_checkpoint(resume_path)
        if "opt_d" not in ckpt:
            raise UserError(f"{resume_path} holds no optimiser state (not a training checkpoint): resume "
                            "from latest.pt or an epoch_NNN.pt")
        cfg = settings_from_checkpoint(ckpt, resume_path, cfg, given)
    if cfg["batch_size"] % world.size:
        raise UserError(f"--batch-size {cfg['batch_size']} is the global batch: make it a multiple of the "
                        f"{world.size} processes")
    cfg["run"] = world.same_on_all(cfg["run"] or default_run_name(cfg))  # the clocks of ranks may differ
    device = world.device
    speed = speed_settings(cfg, device)
    if device.type == "cuda":  # TF32 for training; evaluate_fid switches it off for its features
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
    dataset = dataloader.open_dataset(cfg["data"], cfg["res"], cfg["seed"], cfg["toy_size"])
    per_iteration = cfg["batch_size"] * cfg["d_steps"]
    if len(dataset) < per_iteration:
        raise UserError(f"{dataset.description}: fewer images than one iteration needs ({per_iteration}); "
                        "lower --batch-size or --d-steps")
    on_device = cfg["data_on_device"] == "on" or (cfg["data_on_device"] == "auto"
                                                  and dataloader.fits_on_device(dataset, device))
    if cfg["data_on_device"] == "on" and isinstance(dataset, dataloader.ImageFolder):
        raise UserError("--data-on-device on needs a packed dataset (preprocess.py) or toyfaces, not a folder")
    out_dir, ckpt_dir = Path("outputs") / cfg["run"], Path("checkpoints") / cfg["run"]
    if ckpt is None and (ckpt_dir / "latest.pt").exists():
        raise UserError(f"run {cfg['run']} already exists: continue it with --resume auto --run {cfg['run']}, "
                        "or pick another --run")
    if world.main:
        if cfg["data"] == dataloader.TOYFACES:
            print("training on the built-in toy faces (--data PATH trains on real images)")
        (out_dir / "samples").mkdir(parents=True, exist_ok=True)
        write_json(out_dir / "config.json", cfg)
    device_images = dataloader.load_to_device(dataset, device) if on_device else None

    G, D = make_models(cfg, device)
    G_ema = copy.deepcopy(G) if cfg["ema"] else None  # the averaged G that grids and checkpoints sample
    opt_g = make_optimizer(G.parameters(), cfg, cfg["lr_g"], device)
    opt_d = make_optimizer(D.parameters(), cfg, cfg["lr_d"], device)
    noise_generator = torch.Generator(device).manual_seed(cfg["seed"])
    fixed_noise = torch.randn(GRID_SIZE, cfg["nz"], generator=torch.Generator().manual_seed(cfg["seed"] + 1))
    epoch, batch_in_epoch, step = 0, 0, 0
    if ckpt is not None:
        G.load_state_dict(ckpt["G"])
        D.load_state_dict(ckpt["D"])
        if G_ema is not None:
            G_ema.load_state_dict(ckpt["G_ema"])
        opt_g.load_state_dict(ckpt["opt_g"])
        opt_d.load_state_dict(ckpt["opt_d"])
        epoch, batch_in_epoch, step = ckpt["epoch"], ckpt["batch_in_epoch"], ckpt["step"]
        fixed_noise = ckpt["fixed_noise"]
        set_rng_states(ckpt["rng"], noise_generator)
        if world.main:
            print(f"resuming {resume_path} at epoch {epoch + 1}, iteration {step}")
    G_step, D_step = prepare_models(G, D, speed, device)
    G_step, D_step = world.wrap(G_step), world.wrap(D_step)
    log = MetricsLog(out_dir / "metrics.csv", resume_step=step if ckpt is not None else None) if world.main else None
    if world.main:
        where = "on the device" if on_device else f"through {cfg['workers']} loader workers"
        print(f"{dataset.description}, read {where}; run {cfg['run']} on {device}"
              + (f" x {world.size} processes" if world.size > 1 else "")
              + f"; outputs in {out_dir}/, checkpoints in {ckpt_dir}/")

    def noise(n):
        """This rank's share of n latents: every rank draws all n and keeps its share, so the noise (and
        the generator's state) is the same whatever the number of processes."""
        return world.shard(torch.randn(n, cfg["nz"], generator=noise_generator, device=device))

    def model_input(images):
        flip = torch.rand(len(images) * world.size, generator=noise_generator, device=device) < 0.5 \
            if cfg["flip"] else None
        x = dataloader.to_model_input(images, device, world.shard(flip) if flip is not None else None)
        return x.contiguous(memory_format=torch.channels_last if speed["channels_last"] else torch.contiguous_format)

    def checkpoint_state():
        sampler = G_ema if G_ema is not None else G
        state = {"G": G.state_dict(), "D": D.state_dict(), "opt_g": opt_g.state_dict(), "opt_d": opt_d.state_dict(),
                 "G_eval": recalibrated_copy(sampler, cfg["recal_samples"], cfg["nz"], device).state_dict(),
                 "epoch": epoch, "batch_in_epoch": batch_in_epoch, "step": step, "fixed_noise": fixed_noise,
                 "rng": rng_states(noise_generator), "log_window": window, "best_fid": best_fid, "config": cfg}
        if G_ema is not None:
            state["G_ema"] = G_ema.state_dict()
        return state

    fid_meter = FidMeter(cfg, device) if cfg["fid_every"] and world.main else None
    best_fid = ckpt.get("best_fid", float("inf")) if ckpt is not None else float("inf")
    stop = StopRequest()
    window = ckpt["log_window"].to(device) if ckpt is not None else torch.zeros(len(METRICS) + 1, device=device)
    window_images, window_start, elapsed = 0, time.perf_counter(), log.elapsed if log else 0.0
    last_save, skipped, budget_spent = time.monotonic(), 0, False
    while epoch < cfg["epochs"] and not stop.requested:
        batches = [world.shard(b) for b in dataloader.epoch_batches(len(dataset), cfg["batch_size"], cfg["seed"], epoch)]
        epoch_end = len(batches) // cfg["d_steps"] * cfg["d_steps"]  # a last partial group is dropped
        todo = batches[batch_in_epoch:epoch_end]
        loader = iter(dataloader.device_batches(device_images, todo) if on_device
                      else dataloader.batch_loader(dataset, todo, cfg["workers"]))
        bar = tqdm(total=epoch_end // cfg["d_steps"], initial=batch_in_epoch // cfg["d_steps"], disable=not world.main,
                   desc=f"epoch {epoch + 1}/{cfg['epochs']}", unit="it", dynamic_ncols=True, leave=False)
        while batch_in_epoch < epoch_end:
            real_batches = []
            for _ in range(cfg["d_steps"]):
                images, bad = next(loader)
                skipped += bad
                if len(images):
                    real_batches.append(model_input(images))
            batch_in_epoch += cfg["d_steps"]
            step += 1
            bar.update(1)
            if real_batches:
                with torch.autocast(device.type, torch.bfloat16, enabled=speed["amp"]):
                    metrics = train_iteration(G_step, D_step, opt_g, opt_d, real_batches, cfg, noise,
                                              noise_generator, fresh_fakes=world.size > 1)
                window += torch.cat([metrics, window.new_ones(1)])  # the last slot counts the iterations summed
                if G_ema is not None:
                    update_ema(G_ema, G, cfg["ema"])
                window_images += sum(len(r) for r in real_batches) * world.size
            log_line = step % cfg["log_every"] == 0 or batch_in_epoch == epoch_end or step == cfg["max_steps"]
            if log_line:
                values = checked_means(world.mean(window), step, ckpt_dir)
                now = time.perf_counter()
                elapsed += now - window_start
                rate = window_images / (now - window_start)
                if world.main:
                    log.append({"step": step, "epoch": epoch + 1, **dict(zip(METRICS, values)),
                                "images_per_s": f"{rate:.1f}", "elapsed_s": f"{elapsed:.2f}"})
                    bar.set_postfix(loss_d=f"{values[0]:.3f}", loss_g=f"{values[1]:.3f}", img_s=f"{rate:.0f}")
                window.zero_()
                window_images, window_start = 0, now
            budget_spent = step == cfg["max_steps"] or \
                0 < cfg["max_minutes"] * 60 < elapsed + time.perf_counter() - window_start
            # Under torchrun the ranks decide together, on log lines only, so they leave the loop as one.
            if world.size == 1 or log_line:
                leave = stop.requested or budget_spent or time.monotonic() - last_save > cfg["ckpt_minutes"] * 60
                if world.any(leave):
                    break
        bar.close()
        budget_spent, stop.requested = world.any(budget_spent), world.any(stop.requested)
        checked_means(window, step, ckpt_dir)  # never save weights that went non-finite since the last line
        finished_epoch = batch_in_epoch == epoch_end
        if finished_epoch:
            epoch, batch_in_epoch = epoch + 1, 0
        if world.main:
            best_fid = save_everything(cfg, checkpoint_state(), log, fid_meter, best_fid, finished_epoch,
                                       stop.requested or budget_spent, out_dir, ckpt_dir, device)
        last_save, now = time.monotonic(), time.perf_counter()
        elapsed += now - window_start  # saving and FID count as elapsed time, not as training speed
        window_images, window_start = 0, now
        if budget_spent:
            break
    world.check_in_sync(G, D)
    if world.main:
        if skipped:
            print(f"skipped {skipped} images that could not be decoded")
        if stop.requested:
            print(f"stopped at iteration {step}; continue with: python train.py --resume auto --run {cfg['run']}")
        else:
            print(f"done: {step} iterations; samples in {out_dir}/samples/, checkpoint {ckpt_dir}/latest.pt")


def save_everything(cfg, state, log, fid_meter, best_fid, finished_epoch, stopping, out_dir, ckpt_dir, device):
    """latest.pt (and epoch_NNN.pt, best.pt), FID, the grid and the loss plot; returns the best FID so far."""
    epoch, step = state["epoch"], state["step"]
    names = ["latest.pt"]
    if finished_epoch and cfg["ckpt_every"] and epoch % cfg["ckpt_every"] == 0:
        names.append(f"epoch_{epoch:03d}.pt")
    G_eval = generator_from_config(cfg).to(device)
    G_eval.load_state_dict(state["G_eval"])
    G_eval.eval()
    if fid_meter is not None and finished_epoch and epoch % cfg["fid_every"] == 0:
        fid = fid_meter(G_eval)
        log.append({"step": step, "epoch": epoch, "fid": f"{fid:.4f}"})
        plot_fid(log.read(), out_dir / "fid.png")
        tqdm.write(f"epoch {epoch}: FID {fid:.2f} ({cfg['fid_n']} samples; best before {best_fid:.2f})")
        if fid < best_fid:
            best_fid = state["best_fid"] = fid
            names.append("best.pt")
    for name in names:
        save_checkpoint(ckpt_dir / name, state)
    if finished_epoch or stopping:
        grid_name = f"epoch_{epoch:03d}.png" if finished_epoch else f"step_{step:06d}.png"
        save_png(grid_image(render(G_eval, state["fixed_noise"], device)), out_dir / "samples" / grid_name)
        plot_losses(log.read(), out_dir / "loss.png")
        tqdm.write(f"iteration {step}, epoch {epoch if finished_epoch else epoch + 1}: saved "
                   f"{ckpt_dir}/latest.pt and {out_dir}/samples/{grid_name}")
    return best_fid


class FidMeter:
    """FID of a generator against the real set, whose statistics are computed (or read from cache) once."""

    def __init__(self, cfg, device):
        import evaluate_fid  # loads Inception only for runs that ask for FID

        self.fid_of_generator, self.n, self.device = evaluate_fid.fid_of_generator, cfg["fid_n"], device
        self.inception = evaluate_fid.load_inception(device)
        self.real = evaluate_fid.stats_of_real(cfg["fid_real"] or cfg["data"], cfg["res"], cfg["fid_n"], device,
                                               self.inception, seed=cfg["seed"])

    def __call__(self, G):
        return self.fid_of_generator(G, self.real, self.n, seed=0, device=self.device, inception=self.inception,
                                     progress=False)


def checked_means(window, step, ckpt_dir):
    """The window's averaged metrics, or a one-line stop if any went non-finite (latest.pt stays good)."""
    sums = window.tolist()  # the one host sync per log line
    values = [v / max(sums[-1], 1) for v in sums[:-1]]
    if not all(np.isfinite(values)):
        raise UserError(f"the loss became non-finite by iteration {step}: lower --lr-d/--lr-g or check the "
                        f"data; {ckpt_dir}/latest.pt is the last good state")
    return values


if __name__ == "__main__":
    run(main)
