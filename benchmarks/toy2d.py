"""The 2-D study: GAN, WGAN and WGAN-GP on 8 Gaussians on a ring and on a spiral, with small MLPs.

    python -m benchmarks.toy2d                      # minutes on a CPU; figures in outputs/toy2d/

For each method a figure shows real points, generated points and the critic's contours at a few moments of
training (ring on top, spiral below), and modes.png plots how many of the 8 modes each method covers.
A mode (a Gaussian of the ring, an eighth of the spiral's length) is covered when at least 2% of the
generated points lie on it, within 3 standard deviations of the data.
"""
import math
from pathlib import Path

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from fakefacegen.cli import ArgumentParser, UserError, run
from fakefacegen.reports.plots import save_figure, subplots
from fakefacegen.training import losses
from fakefacegen.training.iteration import d_update

MODES = 8
MODE_STD = 0.05
MODE_SHARE = 0.02  # 2% of samples; a uniform spread over 8 modes gives 12.5% each
SNAPSHOTS = 4
SPIRAL_T = (0.5 * math.pi, 4 * math.pi)  # angle range of the spiral
METHODS = {  # the settings of the WGAN and WGAN-GP papers' own toy experiments
    "gan": {"loss": "bce", "d_steps": 1, "optim": "adam", "lr": 1e-4},
    "wgan": {"loss": "wgan", "d_steps": 5, "optim": "rmsprop", "lr": 5e-5, "clip": 0.01},
    "wgan-gp": {"loss": "wgan-gp", "d_steps": 5, "optim": "adam", "lr": 1e-4, "gp_weight": 0.1},
}


def spiral(t):
    return torch.stack([t * t.cos(), t * t.sin()], -1) / (1.5 * math.pi)


def sample_real(dataset, n, generator):
    """n points: 8 Gaussians on a circle of radius 2, or spread evenly along 1.75 turns of a spiral."""
    noise = MODE_STD * torch.randn(n, 2, generator=generator)
    if dataset == "ring":
        return ring_centres()[torch.randint(MODES, (n,), generator=generator)] + noise
    u = torch.rand(n, generator=generator)
    return spiral((u * (SPIRAL_T[1] ** 2 - SPIRAL_T[0] ** 2) + SPIRAL_T[0] ** 2).sqrt()) + noise  # even arc length


def ring_centres():
    angles = torch.arange(MODES) * 2 * math.pi / MODES
    return 2 * torch.stack([angles.cos(), angles.sin()], 1)


def mode_of(points, dataset):
    """The mode (0..7) each point belongs to, or -1 when it is more than 3 std from the data.

    Ring: the nearest of the 8 centres. Spiral: the spiral cut into 8 pieces of equal arc length.
    """
    if dataset == "ring":
        reference, labels = ring_centres(), torch.arange(MODES)
    else:
        steps = torch.linspace(0, 1, 2000)
        reference = spiral((steps * (SPIRAL_T[1] ** 2 - SPIRAL_T[0] ** 2) + SPIRAL_T[0] ** 2).sqrt())
        labels = (steps * MODES).long().clamp(max=MODES - 1)
    distance, nearest = torch.cdist(points, reference).min(dim=1)
    return torch.where(distance < 3 * MODE_STD, labels[nearest], -1)


def covered_modes(fake, dataset):
    modes = mode_of(fake, dataset)
    shares = torch.stack([(modes == m).float().mean() for m in range(MODES)])
    return int((shares >= MODE_SHARE).sum())


def mlp(n_in, n_out, width=128):
    return nn.Sequential(nn.Linear(n_in, width), nn.ReLU(), nn.Linear(width, width), nn.ReLU(),
                         nn.Linear(width, width), nn.ReLU(), nn.Linear(width, n_out))


def train_method(method, dataset, steps, seed, batch=256, nz=8):
    """Train one method; returns snapshots [(step, fake points, critic grid)] and [(step, covered modes)]."""
    settings = {"bcr": 0.0, "lecam": 0.0, **METHODS[method]}  # and the regularisers d_update reads, off
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    G, D = mlp(nz, 2), mlp(2, 1)
    if settings["optim"] == "adam":
        opt_g = torch.optim.Adam(G.parameters(), settings["lr"], betas=(0.5, 0.9))
        opt_d = torch.optim.Adam(D.parameters(), settings["lr"], betas=(0.5, 0.9))
    else:
        opt_g = torch.optim.RMSprop(G.parameters(), settings["lr"])
        opt_d = torch.optim.RMSprop(D.parameters(), settings["lr"])
    critic = lambda x: D(x).squeeze(1)  # noqa: E731 - one logit per point
    grid = torch.stack(torch.meshgrid(torch.linspace(-3, 3, 120), torch.linspace(-3, 3, 120), indexing="xy"), -1)
    eval_noise = torch.randn(2000, nz, generator=generator)
    snapshot_at = set(np.linspace(0, steps, SNAPSHOTS, dtype=int).tolist())
    snapshots, coverage = [], []
    for step in tqdm(range(steps + 1), desc=f"{method} on {dataset}", leave=False):
        if step in snapshot_at or step % 100 == 0:
            with torch.no_grad():
                fake = G(eval_noise)
                coverage.append((step, covered_modes(fake, dataset)))
                if step in snapshot_at:
                    snapshots.append((step, fake.numpy(), critic(grid.reshape(-1, 2)).reshape(120, 120).numpy()))
        if step == steps:
            break
        for _ in range(settings["d_steps"]):
            real = sample_real(dataset, batch, generator)
            fake = G(torch.randn(batch, nz, generator=generator)).detach()
            d_update(opt_d, critic, critic, real, fake, settings, generator)
        loss_g = losses.g_loss(settings["loss"], critic(G(torch.randn(batch, nz, generator=generator))))
        opt_g.zero_grad(set_to_none=True)
        loss_g.backward()
        opt_g.step()
    return snapshots, coverage


def plot_method(method, results, seed, path):
    datasets = list(results)
    fig, axes = subplots(len(datasets), SNAPSHOTS, figsize=(3 * SNAPSHOTS, 3 * len(datasets)), dpi=90,
                             squeeze=False)
    for row, dataset in enumerate(datasets):
        real = sample_real(dataset, 1000, torch.Generator().manual_seed(seed + 1)).numpy()
        for col, (step, fake, scores) in enumerate(results[dataset][0]):
            ax = axes[row, col]
            ax.contourf(np.linspace(-3, 3, 120), np.linspace(-3, 3, 120), scores, levels=20, cmap="RdBu_r",
                        alpha=0.6)
            ax.scatter(real[:, 0], real[:, 1], s=2, c="black", label="real")
            ax.scatter(fake[:, 0], fake[:, 1], s=2, c="darkorange", label="generated")
            ax.set(xlim=(-3, 3), ylim=(-3, 3), xticks=[], yticks=[], aspect="equal")
            ax.set_title(f"{dataset}, step {step}", fontsize=10)
    axes[0, 0].legend(loc="lower left", fontsize=8, markerscale=4)
    fig.suptitle(f"{method}: real (black), generated (orange), critic output (red high, blue low)")
    fig.tight_layout()
    save_figure(fig, path)


def plot_modes(all_results, path):
    datasets = list(next(iter(all_results.values())))
    fig, axes = subplots(1, len(datasets), figsize=(5 * len(datasets), 3.5), dpi=90, squeeze=False)
    for ax, dataset in zip(axes[0], datasets):
        for method, results in all_results.items():
            steps, modes = zip(*results[dataset][1])
            ax.plot(steps, modes, label=method)
        ax.set(title=f"modes covered: {dataset}", xlabel="G step", ylabel=f"of {MODES}", ylim=(-0.3, MODES + 0.3))
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    save_figure(fig, path)


def build_parser():
    p = ArgumentParser(prog="python -m benchmarks.toy2d", description=__doc__)
    p.add_argument("--steps", type=int, default=2000, help="G updates per method (default 2000)")
    p.add_argument("--methods", default="gan,wgan,wgan-gp", help="any of gan, wgan, wgan-gp")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="outputs/toy2d", help="folder for the figures")
    return p


def main(argv=None):
    args = build_parser().parse_args(argv)
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    if not methods or any(m not in METHODS for m in methods) or args.steps < 1:
        raise UserError(f"--methods takes any of {', '.join(METHODS)} and --steps a positive number")
    torch.set_num_threads(1)  # tiny MLPs: threads cost more than they save
    out = Path(args.out)
    all_results = {}
    for method in methods:
        all_results[method] = {d: train_method(method, d, args.steps, args.seed) for d in ("ring", "spiral")}
        plot_method(method, all_results[method], args.seed, out / f"{method}.png")
        final = {d: r[1][-1][1] for d, r in all_results[method].items()}
        print(f"{method:8s} modes covered at the end: ring {final['ring']}/8, spiral {final['spiral']}/8 "
              f"-> {out / (method + '.png')}")
    plot_modes(all_results, out / "modes.png")
    print(f"wrote {out / 'modes.png'}")


if __name__ == "__main__":
    run(main)
