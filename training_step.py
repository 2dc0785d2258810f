"""One training iteration: d_steps D updates, g_steps G updates, the EMA of G, metrics summed on the device.
train.py runs it and bench.py times it; the speed options it runs with are resolved here too."""
import contextlib

import torch
from torch.nn.parallel import DistributedDataParallel

import dataloader
import diffaug
import losses


def native_bf16(device):
    """Whether the hardware itself computes in bf16: CUDA GPUs of compute capability 8.0 and up (Ampere,
    Hopper; torch.cuda.is_bf16_supported() also says yes on a T4 or V100, which emulate it), and CPUs with
    AVX-512, where oneDNN has bf16 kernels (on AVX2 it emulates them: a step was 18x slower)."""
    if device.type == "cuda":
        return torch.cuda.get_device_capability(device) >= (8, 0)
    return device.type == "cpu" and torch.backends.cpu.get_cpu_capability().startswith("AVX512")


def speed_settings(cfg, device):
    """Resolve `auto` to what bench.py measured fastest on this kind of device. AVX-512 CPU: bf16 autocast and
    channels_last (2.0x the textbook loop at 64 px). CUDA: channels_last in fp32 (H100, 64 px: 14.5k img/s,
    against 11.8k with bf16 as well: an eager step there is bound by kernel launches, and autocast adds casts).
    Elsewhere fp32 and the default layout."""
    fast_cpu = device.type == "cpu" and native_bf16(device)  # oneDNN's fast bf16 kernels are NHWC
    return {"channels_last": cfg["channels_last"] == "on"
            or (cfg["channels_last"] == "auto" and (device.type == "cuda" or fast_cpu)),
            "amp": cfg["amp"] == "bf16" or (cfg["amp"] == "auto" and fast_cpu)}


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
    state.log_window. Noise and flips draw from the state's generator, so a seed fixes them all."""

    def __init__(self, state, world, planned_iterations=None):
        """planned_iterations: the run's length, which --lr-schedule linear decays over."""
        self.state, self.cfg, self.world, self.device = state, state.cfg, world, state.device
        self.planned_iterations = planned_iterations
        self.speed = speed_settings(self.cfg, self.device)
        use_tf32(self.device)
        G, D = prepare_models(state.G, state.D, self.speed)
        self.G, self.D = world.wrap(G), world.wrap(D)
        self.memory_format = torch.channels_last if self.speed["channels_last"] else torch.contiguous_format

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
        real_batches = [self.model_input(images) for images in uint8_batches if len(images)]
        if not real_batches:
            return 0
        state, cfg = self.state, self.cfg
        if cfg["lr_schedule"] != "constant":
            factor = lr_factor(cfg, state.step, self.planned_iterations)
            set_learning_rate(state.opt_g, cfg["lr_g"] * factor)
            set_learning_rate(state.opt_d, cfg["lr_d"] * factor)
        with torch.autocast(self.device.type, torch.bfloat16, enabled=self.speed["amp"]):
            metrics = train_iteration(self.G, self.D, state.opt_g, state.opt_d, real_batches, cfg, self.noise,
                                      state.noise_generator, fresh_fakes=self.world.size > 1,
                                      first_d_update=state.step * cfg["d_steps"])
        state.log_window += torch.cat([metrics, metrics.new_ones(1)])  # the last slot counts the iterations
        if state.G_ema is not None:
            update_ema(state.G_ema, state.G, ema_decay(cfg, state.step * cfg["batch_size"]))
        return sum(len(r) for r in real_batches) * self.world.size


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
        group["lr"] = lr


def train_iteration(G, D, opt_g, opt_d, real_batches, cfg, noise, generator=None, fresh_fakes=False, first_d_update=0):
    """d_steps D updates (one real batch each), then g_steps G updates; returns
    (loss_d, loss_g, D(x), D(G(z))) as one tensor. first_d_update: how many D updates came before, which
    decides where lazy R1 falls.

    The first G update reuses the last fake batch D saw, as the DCGAN reference does, saving a G forward;
    under DistributedDataParallel (fresh_fakes) each G forward must meet its own backward, so D's fakes are
    drawn without a graph and G draws its own. Nothing here reads values back to the host, so the GPU never
    waits for Python. D's logits are cast to float32, so every loss is computed in fp32 under autocast.
    """
    batch, policy = cfg["batch_size"], diffaug.parse_policy(cfg["diffaug"])

    def critic(x):
        return D(diffaug.augment(x, policy, generator) if policy else x).float()

    for i, real in enumerate(real_batches):
        with torch.set_grad_enabled(not fresh_fakes):
            fake = G(noise(batch))
        r1_due = cfg["r1"] and (first_d_update + i) % cfg["r1_every"] == 0
        loss_d, real_logits, fake_logits = d_update(opt_d, critic, D, real, fake, cfg, generator, cfg["label_smooth"],
                                                    cfg["r1"] * cfg["r1_every"] / 2 if r1_due else 0.0)
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
def update_ema(G_ema, G, decay):
    """G_ema <- decay * G_ema + (1 - decay) * G; BatchNorm statistics are re-estimated when sampling."""
    for p_ema, p in zip(G_ema.parameters(), G.parameters()):
        p_ema.lerp_(p, 1 - decay)
