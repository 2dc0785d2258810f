"""Figures: matplotlib without a display, saved atomically; the loss and FID curves of a run."""
import matplotlib

matplotlib.use("Agg")  # no display is needed, nor wanted on a training server
import matplotlib.pyplot as plt  # noqa: E402 - after choosing the backend
import numpy as np  # noqa: E402

from files import atomic_path  # noqa: E402
from runs import loss_rows  # noqa: E402


def save_figure(fig, path):
    """The figure as a PNG, written atomically, then closed."""
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)


def smooth(values, weight=0.9):
    """An exponential moving average of a curve: noisy GAN losses read better smoothed."""
    out = np.array(values, dtype=float)
    for i in range(1, len(out)):
        out[i] = weight * out[i - 1] + (1 - weight) * out[i]
    return out


def plot_losses(rows, path):
    """D and G loss per step, raw (faint) and smoothed, as loss.png."""
    rows = loss_rows(rows)
    steps = np.array([int(r["step"]) for r in rows])
    fig, ax = plt.subplots(figsize=(8, 4), dpi=100)
    for key, label, colour in (("loss_d", "D loss", "tab:blue"), ("loss_g", "G loss", "tab:orange")):
        values = np.array([float(r[key]) for r in rows])
        ax.plot(steps, values, color=colour, alpha=0.25, linewidth=0.8)
        ax.plot(steps, smooth(values), color=colour, label=label)
    ax.set_xlabel("iteration")
    ax.set_ylabel("loss")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    save_figure(fig, path)


def plot_fid(rows, path):
    """FID against the iteration, as fid.png."""
    points = [(int(r["step"]), float(r["fid"])) for r in rows if r.get("fid")]
    fig, ax = plt.subplots(figsize=(6, 3.5), dpi=100)
    ax.plot(*zip(*points), marker="o")
    ax.set(xlabel="iteration", ylabel="FID (lower is better)")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    save_figure(fig, path)
