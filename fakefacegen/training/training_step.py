"""One training iteration: d_steps D updates, g_steps G updates, the EMA of G, metrics summed on the device.
train.py runs it and bench.py times it; the speed options it runs with are resolved here too."""
import contextlib

import torch
from torch.nn.parallel import DistributedDataParallel

from fakefacegen.training import cuda_graphs
from fakefacegen.data import dataloader
from fakefacegen.training import diffaug
from fakefacegen.training import losses
from fakefacegen.cli import UserError


def native_bf16(device):
    """Whether the hardware itself computes in bf16: CUDA GPUs of compute capability 8.0 and up (Ampere,
    Hopper; torch.cuda.is_bf16_supported() also says yes on a T4 or V100, which emulate it), and CPUs with
    AVX-512, where oneDNN has bf16 kernels (on AVX2 it emulates them: a step was 18x slower)."""
    if device.type == "cuda":
        return torch.cuda.get_device_capability(device) >= (8, 0)
    return device.type == "cpu" and torch.backends.cpu.get_cpu_capability().startswith("AVX512")


def speed_settings(cfg, device, processes=1):
    """Resolve `auto` to what was measured fastest on this kind of device (README: Speed).
    CUDA: the iteration as a CUDA graph, channels_last, and bf16 autocast where the GPU has bf16 (H100, 64 px,
    batch 128: 48.2k img/s, against 27.4k in fp32 and 14.5k for the best eager step). An eager CUDA step is
    bound by kernel launches, and there autocast's casts made it slower (11.8k against 14.5k), so without the
    graph `auto` keeps fp32. AVX-512 CPU: bf16 autocast and channels_last (2.2x the textbook loop at 64 px).
    Elsewhere fp32, the default layout and no graph. `cuda_graph_off` says why the graph is off where it
    was wanted."""
    blocker = check_speed_flags(cfg, device, processes)
    graph = cfg["cuda_graph"] in ("auto", "on") and device.type == "cuda" and blocker is None
    fast_cpu = device.type == "cpu" and native_bf16(device)  # oneDNN's fast bf16 kernels are NHWC
    return {"cuda_graph": graph,
            "channels_last": cfg["channels_last"] == "on"
            or (cfg["channels_last"] == "auto" and (device.type == "cuda" or fast_cpu)),
            "amp": cfg["amp"] == "bf16" or (cfg["amp"] == "auto" and (fast_cpu or graph and native_bf16(device))),
            "cuda_graph_off": blocker if cfg["cuda_graph"] != "off" and device.type == "cuda" else None}


def check_speed_flags(cfg, device, processes=1):
    """A speed setting asked for that this run cannot have is refused (train.py asks before loading data);
    returns why the iterations cannot be a CUDA graph (None: they can)."""
    if cfg["cuda_graph"] == "on" and device.type != "cuda":
        raise UserError(f"--cuda-graph on needs a CUDA GPU, and this run trains on {device.type}: use "
                        "--cuda-graph auto (or off)")
    blocker = cuda_graph_blocker(cfg, processes)
    if cfg["cuda_graph"] == "on" and blocker:
        raise UserError(f"--cuda-graph on: {blocker}; use --cuda-graph auto (or off) to train eagerly")
    return blocker


def cuda_graph_blocker(cfg, processes):
    """Why this run's iterations cannot be one CUDA graph (None: they can)."""
    if processes > 1:
        return ("under torchrun each iteration runs eagerly: capturing DDP's all-reduce needs NCCL's "
                "asynchronous error handling off and DDP built on a side stream, which this repo does not do")
    if cfg["lr_schedule"] != "constant" and cfg["optim"] != "adam":
        return (f"--lr-schedule {cfg['lr_schedule']} changes the learning rate every iteration, which a graph "
                f"reads from a device tensor: fused Adam does, --optim {cfg['optim']} does not")
    return None


def describe_speed(speed):
    """The speed settings in a few words, for the line a run starts with."""
    parts = [name for name, on in (("CUDA graph", speed["cuda_graph"]), ("bf16 autocast", speed["amp"]),
                                   ("channels_last", speed["channels_last"])) if on]
    return ", ".join(parts) or "fp32"


def use_tf32(device):
    """TF32 matrix products for training on CUDA (evaluation switches them off for FID's features)."""
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True


def prepare_models(G, D, speed):
    """The memory format the speed settings ask for; returns the modules the loop calls."""
    if speed["channels_last"]:
        G.to(memory_format=torch.channels_last)
        D.to(memory_format=torch.channels_last)
    return G, D


class TrainingStep:
    """The iteration train.py runs over a TrainState: uint8 batches in, weights updated, metrics summed into
    state.log_window. Noise and flips draw from the state's generator, so a seed fixes them all. On CUDA the
    iteration is replayed as a CUDA graph (cuda_graphs.py) where the settings allow; the eager iteration is
    the same code, and is what the graph records."""

    def __init__(self, state, world, planned_iterations=None):
        """planned_iterations: the run's length, which --lr-schedule linear decays over."""
        self.state, self.cfg, self.world, self.device = state, state.cfg, world, state.device
        self.planned_iterations = planned_iterations
        self.speed = speed_settings(self.cfg, self.device, world.size)
        use_tf32(self.device)
        G, D = prepare_models(state.G, state.D, self.speed)
        self.G, self.D = world.wrap(G), world.wrap(D)
        self.memory_format = torch.channels_last if self.speed["channels_last"] else torch.contiguous_format
        self.ema_weight = 0.0  # this iteration's weight of G in the EMA; a device tensor under a graph
        self.graph = self.graphed_iteration(cuda_graphs.capture) if self.speed["cuda_graph"] else None

    def graphed_iteration(self, capture):
        """This step's iteration over static buffers, recorded by `capture` (tests pass a CPU stand-in).
        What the eager loop passes as Python numbers each iteration moves into device tensors first: a
        graph would replay the number it was recorded with."""
        state, cfg = self.state, self.cfg
        if cfg["lr_schedule"] != "constant":
            for optimizer in (state.opt_g, state.opt_d):
                for group in optimizer.param_groups:
                    group["lr"] = torch.tensor(float(group["lr"]), device=self.device)
        self.ema_weight = torch.zeros((), device=self.device)
        shape = (cfg["d_steps"], cfg["batch_size"] // self.world.size, cfg["res"], cfg["res"], 3)
        return cuda_graphs.GraphedIteration(self.iteration, shape, self.device, [state.noise_generator],
                                            [state.opt_g, state.opt_d], capture)

    def noise(self, n):
        """This rank's share of n latents: every rank draws all n and keeps its share, so the noise (and the
        generator's state) is the same whatever the number of processes."""
        return self.world.shard(torch.randn(n, self.cfg["nz"], generator=self.state.noise_generator,
                                            device=self.device))

    def model_input(self, images):
        flip = None
        if self.cfg["flip"]:
            draws = torch.rand(len(images) * self.world.size, generator=self.state.noise_generator, device=self.device)
            flip = self.world.shard(draws < 0.5)
        x = dataloader.to_model_input(images, self.device, flip)
        return x.contiguous(memory_format=self.memory_format)

    def __call__(self, uint8_batches):
        """One iteration on d_steps batches (empty ones, all undecodable, are left out); returns the number of
        real images used by all processes."""
        batches = [images for images in uint8_batches if len(images)]
        if not batches:
            return 0
        self.set_schedules()
        if self.graph is not None and self.graph.fits(batches):
            # Iterations differ in their kernels only by where lazy R1 falls: one graph for each pattern.
            self.graph(batches, kind=r1_updates(self.cfg, self.state.step * self.cfg["d_steps"]))
        else:
            self.iteration(batches)
        return sum(len(images) for images in batches) * self.world.size

    def set_schedules(self):
        """This iteration's learning rates (--lr-schedule) and EMA weight, where the iteration reads them."""
        state, cfg = self.state, self.cfg
        if cfg["lr_schedule"] != "constant":
            factor = lr_factor(cfg, state.step, self.planned_iterations)
            set_learning_rate(state.opt_g, cfg["lr_g"] * factor)
            set_learning_rate(state.opt_d, cfg["lr_d"] * factor)
        if state.G_ema is not None:
            weight = 1 - ema_decay(cfg, state.step * cfg["batch_size"])
            if torch.is_tensor(self.ema_weight):
                self.ema_weight.fill_(weight)
            else:
                self.ema_weight = weight

    def iteration(self, uint8_batches):
        """The iteration itself, eager; under a graph, what the graph records."""
        state, cfg = self.state, self.cfg
        real_batches = [self.model_input(images) for images in uint8_batches]
        adaptive = cfg["ada_target"] > 0
        with torch.autocast(self.device.type, torch.bfloat16, enabled=self.speed["amp"]):
            metrics = train_iteration(self.G, self.D, state.opt_g, state.opt_d, real_batches, cfg, self.noise,
                                      state.noise_generator, fresh_fakes=self.world.size > 1,
                                      first_d_update=state.step * cfg["d_steps"],
                                      augment_p=state.augment_p if adaptive else None)
        if adaptive:  # every process moves p by the same mean signal, so their augmentation stays the same
            signal = self.world.mean(metrics[4].clone())
            diffaug.adapt_probability(state.augment_p, signal, cfg["ada_target"],
                                      cfg["batch_size"] * len(real_batches), cfg["ada_kimg"])
        state.log_window += torch.cat([metrics, metrics.new_ones(1)])  # the last slot counts the iterations
        if state.G_ema is not None:
            update_ema(state.G_ema, state.G, self.ema_weight)


def ema_decay(cfg, images_seen):
    """The EMA's decay for the next update: --ema as given, or from --ema-kimg, the half-life in images (the
    weight of an old value halves every ema_kimg thousand images, whatever the batch size), which ramps up
    with --ema-rampup to that fraction of the images seen so far, as stylegan2-ada does."""
    if cfg["ema"]:
        return cfg["ema"]
    half_life = cfg["ema_kimg"] * 1000
    if cfg["ema_rampup"]:
        half_life = min(half_life, images_seen * cfg["ema_rampup"])
    return 0.5 ** (cfg["batch_size"] / max(half_life, 1e-8))


def lr_factor(cfg, step, planned):
    """--lr-schedule linear: 1 until --lr-decay-start of the planned iterations, then down to 0 at the end."""
    start = cfg["lr_decay_start"] * planned
    return 1.0 if step < start else max(0.0, (planned - step) / max(planned - start, 1))


def set_learning_rate(optimizer, lr):
    for group in optimizer.param_groups:
        if torch.is_tensor(group["lr"]):
            group["lr"].fill_(lr)  # in place: a CUDA graph reads the rate from this tensor
        else:
            group["lr"] = lr


def r1_updates(cfg, first_d_update):
    """For each D update of an iteration, whether it carries lazy R1 (every r1_every-th D update of the run)."""
    return tuple(bool(cfg["r1"]) and (first_d_update + i) % cfg["r1_every"] == 0 for i in range(cfg["d_steps"]))


def train_iteration(G, D, opt_g, opt_d, real_batches, cfg, noise, generator=None, fresh_fakes=False, first_d_update=0,
                    augment_p=None):
    """d_steps D updates (one real batch each), then g_steps G updates; returns (loss_d, loss_g, D(x), D(G(z)),
    the mean sign of D on reals, the augmentation probability) as one tensor (runs.METRICS). first_d_update: how
    many D updates came before, which decides where lazy R1 falls; augment_p: with --ada-target, the
    probability that each --diffaug transform applies to an image (None: always, as --diffaug alone does).

    The first G update reuses the last fake batch D saw, as the DCGAN reference does, saving a G forward;
    under DistributedDataParallel (fresh_fakes) each G forward must meet its own backward, so D's fakes are
    drawn without a graph and G draws its own. Nothing here reads values back to the host, so the GPU never
    waits for Python. D's logits are cast to float32, so every loss is computed in fp32 under autocast.
    """
    batch, policy = cfg["batch_size"], diffaug.parse_policy(cfg["diffaug"])

    def critic(x):
        return D(diffaug.augment(x, policy, generator, augment_p) if policy else x).float()

    real_sign = 0.0  # ADA's signal, over every D update of the iteration
    for real, r1_due in zip(real_batches, r1_updates(cfg, first_d_update)):
        with torch.set_grad_enabled(not fresh_fakes):
            fake = G(noise(batch))
        loss_d, real_logits, fake_logits = d_update(opt_d, critic, D, real, fake, cfg, generator, cfg["label_smooth"],
                                                    cfg["r1"] * cfg["r1_every"] / 2 if r1_due else 0.0)
        real_sign = real_sign + diffaug.overfitting(real_logits) / len(real_batches)
    for g_step in range(cfg["g_steps"]):
        if g_step or fresh_fakes:
            fake = G(noise(batch))
        with frozen(D):
            loss_g = losses.g_loss(cfg["loss"], critic(fake), cfg["g_loss"])
            opt_g.zero_grad(set_to_none=True)
            loss_g.backward()
        opt_g.step()
        torch.clear_autocast_cache()  # and those of G's weights: the next G update must see the new ones
    # D(x), D(G(z)): probabilities for bce; the raw critic scores for the other losses
    score = torch.sigmoid if cfg["loss"] == "bce" else torch.as_tensor
    applied = augment_p if augment_p is not None else loss_d.new_tensor(float(bool(policy)))
    return torch.stack([loss_d.detach(), loss_g.detach(), score(real_logits.detach()).mean(),
                        score(fake_logits.detach()).mean(), real_sign, applied.float()])


def d_update(opt_d, critic, penalised, real, fake, cfg, generator=None, real_target=1.0, r1_weight=0.0):
    """One D update on a real and a fake batch under cfg's loss; returns (loss, real logits, fake logits).

    critic: what D's loss sees (D after any augmentation); penalised: what WGAN-GP's penalty differentiates
    (D itself). WGAN clips every weight the optimiser updates. real_target: BCE's target for real images
    (label smoothing below 1); r1_weight: the R1 penalty's weight in this update (0: none)."""
    real_logits, fake_logits = critic(real), critic(fake.detach())
    loss = losses.d_loss(cfg["loss"], real_logits, fake_logits, real_target)
    if r1_weight:
        loss = loss + r1_weight * losses.r1_penalty(critic, real)
    if cfg["loss"] == "wgan-gp":
        loss = loss + cfg["gp_weight"] * losses.gradient_penalty(penalised, real, fake[:len(real)], generator)
    opt_d.zero_grad(set_to_none=True)
    loss.backward()
    opt_d.step()
    torch.clear_autocast_cache()  # the bf16 copies autocast keeps of D's weights are stale now
    if cfg["loss"] == "wgan":
        losses.clip_weights([p for group in opt_d.param_groups for p in group["params"]], cfg["clip"])
    return loss, real_logits, fake_logits


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
def update_ema(G_ema, G, weight):
    """G_ema <- (1 - weight) * G_ema + weight * G, weight a number or a 0-dim tensor (1 - the decay);
    BatchNorm statistics are re-estimated when sampling."""
    for p_ema, p in zip(G_ema.parameters(), G.parameters()):
        p_ema.lerp_(p, weight)
