"""Drawing faces from a generator: seed-indexed noise, rendering to uint8, interpolation paths and the
BatchNorm recalibration that makes eval-mode samples match training."""
import copy

import numpy as np
import torch
from tqdm import tqdm

from fakefacegen import cli


def sample_noise(seeds, nz):
    """One latent vector per seed, each from its own generator: seed s gives the same face whatever --n is."""
    return torch.stack([torch.randn(nz, generator=torch.Generator().manual_seed(int(s))) for s in seeds])


def truncate(z, psi):
    """The truncation trick: each code moved toward the prior's mean by psi (1: unchanged; 0: the mean face).

    Shrinking, rather than BigGAN's resampling of the components beyond a threshold, keeps each seed's face (a
    calmer version of it, not another face) and applies as well to a code projected from a photo; z's prior
    N(0, I) has its mean at 0, so the mean face is G(0)."""
    return z * psi


@torch.no_grad()
def render(G, z, device, batch_size=256):
    """Latents -> uint8 images (N, H, W, 3), in batches; eval mode makes each image independent of the rest."""
    images = []
    for chunk in z.split(batch_size):
        images.append(to_uint8(G(chunk.to(device))))
    return np.concatenate(images)


def to_uint8(images):
    """Images in [-1, 1] (N, 3, H, W) -> uint8 (N, H, W, 3) on the CPU, rounded as a PNG of them stores."""
    return images.float().add(1).mul(127.5).round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()


def generated_batches(G, n, seed, device, batch_size):
    """uint8 samples of seeds seed..seed+n-1, rounded as generate.py saves them (what pytorch-fid would
    read from those PNGs); G is put in eval mode for the duration."""
    was_training = G.training
    G.eval()
    try:
        for start in range(0, n, batch_size):
            seeds = range(seed + start, seed + min(n, start + batch_size))
            yield render(G, sample_noise(seeds, G.nz), device, batch_size)
    finally:
        G.train(was_training)


def slerp(a, b, t):
    """Spherical interpolation: keeps the norm that Gaussian latents concentrate around."""
    cos = torch.dot(a / a.norm(), b / b.norm()).clamp(-1, 1)
    omega = torch.arccos(cos)
    if omega.abs() < 1e-4:
        return (1 - t) * a + t * b
    return (torch.sin((1 - t) * omega) * a + torch.sin(t * omega) * b) / torch.sin(omega)


def interpolation_latents(z, frames):
    """Frames along slerp paths z0 -> z1 -> ... -> z0, so the GIF loops without a jump."""
    path = []
    for a, b in zip(z, torch.roll(z, -1, 0)):
        path += [slerp(a, b, t) for t in torch.arange(frames) / frames]
    return torch.stack(path)


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
    # 4,096 samples take over a minute on a busy CPU: a bar then, none for a quick one
    with tqdm(total=samples, desc="BatchNorm re-estimation", unit="sample", leave=False,
              delay=cli.PROGRESS_DELAY_S) as bar:
        for start in range(0, samples, batch_size):
            count = min(batch_size, samples - start)
            G_eval(torch.randn(count, nz, generator=generator).to(device))
            bar.update(count)
    for module in G_eval.modules():
        if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
            module.momentum = 0.1
    return G_eval.eval()
