"""One training iteration: d_steps D updates, g_steps G updates, the EMA of G, metrics summed on the device.
train.py runs it and benchmarks/bench.py times it, with the speed settings of speed.py."""
import contextlib

import torch
from torch.nn.parallel import DistributedDataParallel

from fakefacegen.data import dataloader
from fakefacegen.training import cuda_graphs, diffaug, losses
from fakefacegen.training.speed import prepare_models, speed_settings, use_tf32

# Per log line, means over the iterations since the last: the losses, D's outputs on real and fake images, the
# mean sign of D's raw outputs on reals (ADA's overfitting signal: 1 when D is sure of every real image) and the
# probability that each augmentation applies (0 without --diffaug, 1 with it, adapted with --ada-target).
METRICS = ("loss_d", "loss_g", "d_real", "d_fake", "real_sign", "augment_p")


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
        prepare_models(state, self.speed)
        self.G, self.D = world.wrap(state.G), world.wrap(state.D)
        self.memory_format = torch.channels_last if self.speed["channels_last"] else torch.contiguous_format
        self.values = IterationValues(state.opt_g, state.opt_d)
        self.graph = self.graphed_iteration(cuda_graphs.capture) if self.speed["cuda_graph"] else None

    def graphed_iteration(self, capture):
        """This step's iteration over static buffers, recorded by `capture` (tests pass a CPU stand-in); the
        values that change between iterations move onto the device first."""
        state, cfg = self.state, self.cfg
        self.values.hold_on_device(self.device, learning_rates=cfg["lr_schedule"] != "constant")
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
            if self.graph.failed:
                self.without_graph()
        else:
            self.iteration(batches)
        return sum(len(images) for images in batches) * self.world.size

    def without_graph(self):
        """After a failed capture: plain eager iterations (no static buffers, no side stream) with what `auto`
        picks for eager steps: on CUDA that is fp32, faster than bf16 when kernels are launched one by one."""
        self.graph = None
        self.speed = {**speed_settings({**self.cfg, "cuda_graph": "off"}, self.device, self.world.size),
                      "cuda_graph_off": "the capture failed"}

    def set_schedules(self):
        """This iteration's learning rates (--lr-schedule) and EMA weight, where the iteration reads them."""
        state, cfg = self.state, self.cfg
        if cfg["lr_schedule"] != "constant":
            factor = lr_factor(cfg, state.step, self.planned_iterations)
            self.values.set_learning_rates(cfg["lr_g"] * factor, cfg["lr_d"] * factor)
        if state.G_ema is not None:
            self.values.set_ema_weight(1 - ema_decay(cfg, state.step * cfg["batch_size"]))

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
            signal = self.world.mean(metrics[METRICS.index("real_sign")].clone())
            diffaug.adapt_probability(state.augment_p, signal, cfg["ada_target"],
                                      cfg["batch_size"] * len(real_batches), cfg["ada_kimg"])
        state.log_window += torch.cat([metrics, metrics.new_ones(1)])  # the last slot counts the iterations
        if state.G_ema is not None:
            update_ema(state.G_ema, state.G, self.values.ema_weight)


class IterationValues:
    """The numbers an iteration reads that change between iterations: both learning rates (--lr-schedule) and
    the EMA's weight of G. Eager, they are Python numbers; for a CUDA graph, 0-dim device tensors filled in
    place, since a graph replays the numbers it was recorded with (fused Adam reads a tensor learning rate)."""

    def __init__(self, opt_g, opt_d):
        self.optimizers = (opt_g, opt_d)
        self.ema_weight = 0.0  # this iteration's weight of G in the EMA (1 - the decay)
        self.on_device = False

    def hold_on_device(self, device, learning_rates):
        """From now on every value is a device tensor (the learning rates only where they change)."""
        self.on_device = True
        self.ema_weight = torch.tensor(float(self.ema_weight), device=device)
        if learning_rates:
            for optimizer in self.optimizers:
                for group in optimizer.param_groups:
                    group["lr"] = torch.tensor(float(group["lr"]), device=device)

    def set_learning_rates(self, lr_g, lr_d):
        for optimizer, lr in zip(self.optimizers, (lr_g, lr_d)):
            for group in optimizer.param_groups:
                group["lr"] = self.updated(group["lr"], lr)

    def set_ema_weight(self, weight):
        self.ema_weight = self.updated(self.ema_weight, weight)

    def updated(self, held, number):
        """`held` with the new number: the same tensor filled in place on the device, else the number."""
        return held.fill_(number) if self.on_device else number


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
    # new_full fills on the device: a CUDA graph cannot record a copy from a Python number
    applied = augment_p if augment_p is not None else loss_d.new_full((), float(bool(policy)))
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
