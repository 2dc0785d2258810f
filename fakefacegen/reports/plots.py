"""Figures: matplotlib without a display, saved atomically; the loss and FID curves of a run.

Figures are made without pyplot, whose global list of open figures no two threads may share: train.py draws
its curves in the background thread that writes a save, while training goes on."""
import numpy as np
from matplotlib.figure import Figure

from fakefacegen.files import atomic_path
from fakefacegen.runs import loss_rows


def subplots(nrows=1, ncols=1, figsize=None, dpi=100, **kwargs):
    """(figure, axes) as pyplot.subplots gives them, drawn with the Agg renderer (no display is needed)."""
    fig = Figure(figsize=figsize, dpi=dpi)
    return fig, fig.subplots(nrows, ncols, **kwargs)


def save_figure(fig, path):
    """The figure as a PNG, written atomically."""
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")


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
    fig, ax = subplots(figsize=(8, 4))
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
    fig, ax = subplots(figsize=(6, 3.5))
    ax.plot(*zip(*points), marker="o")
    ax.set(xlabel="iteration", ylabel="FID (lower is better)")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    save_figure(fig, path)
