"""One training iteration: d_steps D updates, g_steps G updates, the EMA of G, metrics summed on the device.
train.py runs it (wrapped in cuda_graphs.CudaGraphed on CUDA) and benchmarks/bench.py times it, with the speed
settings of speed.py. The maths of an update is train_iteration, d_update and g_update."""
import contextlib

import torch
from torch.nn.parallel import DistributedDataParallel

from fakefacegen.data import dataloader
from fakefacegen.training import diffaug, losses
from fakefacegen.training.speed import prepare_models, speed_settings, use_tf32

# Per log line, means over the iterations since the last: the losses, D's outputs on real and fake images, the
# mean sign of D's raw outputs on reals (ADA's overfitting signal: 1 when D is sure of every real image) and the
# probability that each augmentation applies (0 without --diffaug, 1 with it, adapted with --ada-target).
METRICS = ("loss_d", "loss_g", "d_real", "d_fake", "real_sign", "augment_p")


class Iteration:
    """One training iteration over a TrainState, called with d_steps uint8 batches: D's updates, G's updates,
    the adaptive augmentation's probability, the EMA of G, the metrics summed into state.log_window. Noise and
    flips draw from the state's generator, so a seed fixes them all. On CUDA, cuda_graphs.CudaGraphed wraps it
    and replays what run() records."""

    def __init__(self, state, world, planned_iterations=None):
        """planned_iterations: the run's length, which --lr-schedule linear decays over."""
        self.state, self.cfg, self.world, self.device = state, state.cfg, world, state.device
        self.planned_iterations = planned_iterations
        self.speed = speed_settings(self.cfg, self.device, world.size)
        use_tf32(self.device)
        prepare_models(state, self.speed)
        self.G, self.D = world.wrap(state.G), world.wrap(state.D)
        self.memory_format = torch.channels_last if self.speed["channels_last"] else torch.contiguous_format

    def __call__(self, uint8_batches):
        """One iteration on d_steps batches (empty ones, all undecodable, are left out); returns the number of
        real images used by all processes."""
        batches = [images for images in uint8_batches if len(images)]
        if batches:
            self.run(batches, *self.schedule())
        return sum(len(images) for images in batches) * self.world.size

    def schedule(self):
        """(lr_g, lr_d, EMA weight) of this iteration: the learning rates of --lr-schedule (None while they stay
        as the optimisers hold them) and the weight of G in the EMA (1 - the decay)."""
        state, cfg = self.state, self.cfg
        lr_g = lr_d = None
        if cfg["lr_schedule"] != "constant":
            factor = lr_factor(cfg, state.step, self.planned_iterations)
            lr_g, lr_d = cfg["lr_g"] * factor, cfg["lr_d"] * factor
        ema_weight = 1 - ema_decay(cfg, state.step * cfg["batch_size"]) if state.G_ema is not None else 0.0
        return lr_g, lr_d, ema_weight

    def kind(self):
        """What makes iterations differ in their kernels: which D updates carry lazy R1."""
        return r1_updates(self.cfg, self.state.step * self.cfg["d_steps"])

    def without_graph(self):
        """What `auto` picks for eager iterations after a failed capture: on CUDA that is fp32, faster than bf16
        when kernels are launched one by one."""
        self.speed = {**speed_settings({**self.cfg, "cuda_graph": "off"}, self.device, self.world.size),
                      "cuda_graph_off": "the capture failed"}

    def run(self, uint8_batches, lr_g, lr_d, ema_weight):
        """The iteration itself, with the schedule's values (numbers, or under a CUDA graph the device tensors
        it reads)."""
        state, cfg = self.state, self.cfg
        for optimizer, lr in ((state.opt_g, lr_g), (state.opt_d, lr_d)):
            if lr is not None:
                for group in optimizer.param_groups:
                    group["lr"] = lr
        real_batches = [self.model_input(images) for images in uint8_batches]
        adaptive = cfg["ada_target"] > 0
        with torch.autocast(self.device.type, torch.bfloat16, enabled=self.speed["amp"]):
            metrics = train_iteration(self.G, self.D, state.opt_g, state.opt_d, real_batches, cfg, self.noise,
                                      state.noise_generator, fresh_fakes=self.world.size > 1,
                                      first_d_update=state.step * cfg["d_steps"],
                                      augment_p=state.augment_p if adaptive else None,
                                      lecam_anchors=state.lecam_anchors)
        if adaptive:  # every process moves p by the same mean signal, so their augmentation stays the same
            signal = self.world.mean(metrics[METRICS.index("real_sign")].clone())
            diffaug.adapt_probability(state.augment_p, signal, cfg["ada_target"],
                                      cfg["batch_size"] * len(real_batches), cfg["ada_kimg"])
        state.log_window += torch.cat([metrics, metrics.new_ones(1)])  # the last slot counts the iterations
        if state.G_ema is not None:
            update_ema(state.G_ema, state.G, ema_weight)

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


def r1_updates(cfg, first_d_update):
    """For each D update of an iteration, whether it carries lazy R1 (every r1_every-th D update of the run)."""
    return tuple(bool(cfg["r1"]) and (first_d_update + i) % cfg["r1_every"] == 0 for i in range(cfg["d_steps"]))


def train_iteration(G, D, opt_g, opt_d, real_batches, cfg, noise, generator=None, fresh_fakes=False, first_d_update=0,
                    augment_p=None, lecam_anchors=None):
    """d_steps D updates (one real batch each), then g_steps G updates; returns (loss_d, loss_g, D(x), D(G(z)),
    the mean sign of D on reals, the augmentation probability) as one tensor (runs.METRICS). first_d_update: how
    many D updates came before, which decides where lazy R1 falls; augment_p: with --ada-target, the
    probability that each --diffaug transform applies to an image (None: always, as --diffaug alone does);
    lecam_anchors: with --lecam, the moving averages of D's logits (on reals, on fakes), updated in place.

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
                                                    cfg["r1"] * cfg["r1_every"] / 2 if r1_due else 0.0,
                                                    lecam_anchors)
        real_sign = real_sign + diffaug.overfitting(real_logits) / len(real_batches)
    for g_step in range(cfg["g_steps"]):
        if g_step or fresh_fakes:
            fake = G(noise(batch))
        loss_g = g_update(opt_g, critic, D, fake, cfg)
    # D(x), D(G(z)): probabilities for bce; the raw critic scores for the other losses
    score = torch.sigmoid if cfg["loss"] == "bce" else torch.as_tensor
    # new_full fills on the device: a CUDA graph cannot record a copy from a Python number
    applied = augment_p if augment_p is not None else loss_d.new_full((), float(bool(policy)))
    return torch.stack([loss_d.detach(), loss_g.detach(), score(real_logits.detach()).mean(),
                        score(fake_logits.detach()).mean(), real_sign, applied.float()])


def d_update(opt_d, critic, penalised, real, fake, cfg, generator=None, real_target=1.0, r1_weight=0.0,
             lecam_anchors=None):
    """One D update on a real and a fake batch under cfg's loss; returns (loss, real logits, fake logits).

    critic: what D's loss sees (D after any augmentation); penalised: what WGAN-GP's penalty differentiates
    (D itself). WGAN clips every weight the optimiser updates. real_target: BCE's target for real images
    (label smoothing below 1); r1_weight: the R1 penalty's weight in this update (0: none); cfg["bcr"]: the
    weight of balanced consistency regularisation (0: none); with cfg["lecam"], lecam_anchors are the moving
    averages of D's logits (on reals, on fakes) the penalty reads, then moved by this update's logits."""
    real_logits, fake_logits = critic(real), critic(fake.detach())
    loss = losses.d_loss(cfg["loss"], real_logits, fake_logits, real_target)
    if r1_weight:
        loss = loss + r1_weight * losses.r1_penalty(critic, real)
    if cfg["bcr"]:
        loss = loss + cfg["bcr"] * losses.consistency_penalty(critic, real, fake.detach(), real_logits, fake_logits,
                                                              generator)
    if cfg["lecam"]:
        loss = loss + cfg["lecam"] * losses.lecam_penalty(real_logits, fake_logits, lecam_anchors)
        means = torch.stack([real_logits.detach().mean(), fake_logits.detach().mean()])
        lecam_anchors.lerp_(means, 1 - cfg["lecam_decay"])  # in place: a CUDA graph replays the update
    if cfg["loss"] == "wgan-gp":
        loss = loss + cfg["gp_weight"] * losses.gradient_penalty(penalised, real, fake[:len(real)], generator)
    opt_d.zero_grad(set_to_none=True)
    loss.backward()
    opt_d.step()
    torch.clear_autocast_cache()  # the bf16 copies autocast keeps of D's weights are stale now
    if cfg["loss"] == "wgan":
        losses.clip_weights([p for group in opt_d.param_groups for p in group["params"]], cfg["clip"])
    return loss, real_logits, fake_logits


def g_update(opt_g, critic, D, fake, cfg):
    """One G update on a fake batch (drawn with G's graph) against the critic; returns the loss."""
    with frozen(D):
        loss = losses.g_loss(cfg["loss"], critic(fake), cfg["g_loss"])
        opt_g.zero_grad(set_to_none=True)
        loss.backward()
    opt_g.step()
    torch.clear_autocast_cache()  # and those of G's weights: the next G update must see the new ones
    return loss


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
