"""Train several configs for the same budget and compare them on one figure and one table.

    python compare.py configs/ablation/*.toml --minutes 3               # the seeds' ablation
    python compare.py configs/demo.toml configs/wgan_gp.toml --minutes 5 --fid-n 2048 -- --res 32

Each config trains in its own run (outputs/compare-<name>/ and checkpoints/compare-<name>/) for --minutes of
training or --steps iterations, whichever you give; flags after `--` go to every train.py run. The figure
(comparison.png) draws the smoothed D and G losses of every run against training time, and FID where measured;
the table (comparison.md, also printed) lists the final losses, iterations, images seen and FID; samples.png
puts the top rows of every run's last sample grid side by side.
"""
import ctypes
import json
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from checkpoint import load_generator
from cli import ArgumentParser, UserError, integer, number, resolve_device, run
from fid import FID_N_MAX
from fid_sources import fid_of_generator, stats_of_real
from files import atomic_path, save_png, write_json
from inception import load_inception
from plots import plt, save_figure, smooth
from runs import checkpoint_dir, output_dir, read_metrics

PR_SET_PDEATHSIG = 1  # from Linux's <sys/prctl.h>


def build_parser():
    p = ArgumentParser(description=__doc__)
    p.add_argument("configs", nargs="+", help="TOML configs to compare")
    p.add_argument("--minutes", type=number(low=0), default=0, help="training minutes per config")
    p.add_argument("--steps", type=integer(0), default=0, help="iterations per config")
    p.add_argument("--fid-n", type=integer(0, FID_N_MAX), default=0,
                   help="measure FID of each final model on this many samples (0: not measured)")
    p.add_argument("--tag", default="", help="suffix for the run names, to keep several comparisons apart")
    p.add_argument("--out", default="outputs/comparison", help="folder for comparison.png/.md/.json")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    return p


def run_names(configs, tag):
    """compare-<config name>[-tag] per config; two configs of one name would share a run, so that is refused."""
    names = [f"compare-{Path(config).stem}" + (f"-{tag}" if tag else "") for config in configs]
    for name in set(names):
        same = [config for config, other in zip(configs, names) if other == name]
        if len(same) > 1:
            raise UserError(f"{' and '.join(same)} have the same file name, so their runs would share {name}: "
                            "rename one, or compare them in two runs with different --tag")
    return names


def die_with_parent():
    """In the child, before train.py starts: Linux sends it SIGTERM (train.py saves and stops) if compare.py
    dies, even by SIGKILL, so no training outlives the comparison. Elsewhere it is a no-op."""
    libc = ctypes.CDLL(None)
    if hasattr(libc, "prctl"):
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def train_one(config, name, args, extra):
    """Run train.py in its own process (a crash or NaN in one config does not stop the others); if compare is
    interrupted, the child is stopped (it saves latest.pt) before compare exits."""
    budget = ["--max-minutes", str(args.minutes)] if args.minutes else ["--max-steps", str(args.steps)]
    resume = ["--resume", "auto"] if (checkpoint_dir(name) / "latest.pt").exists() else []
    cmd = [sys.executable, str(Path(__file__).with_name("train.py")), "--config", config, "--run", name,
           "--device", args.device, "--epochs", "100000", *budget, *resume, *extra]
    print(f"== {name}: {' '.join(cmd[1:])}", flush=True)
    child = subprocess.Popen(cmd, preexec_fn=die_with_parent if sys.platform == "linux" else None)
    try:
        return child.wait()
    finally:
        if child.poll() is None:
            child.terminate()
            child.wait()


def read_run(name):
    """The loss lines of a run's metrics.csv (FID lines left out)."""
    return [r for r in read_metrics(output_dir(name) / "metrics.csv") if r["loss_d"]]


def final_fid(name, n, device):
    G, config = load_generator(checkpoint_dir(name) / "latest.pt", device)
    inception = load_inception(device)
    real = stats_of_real(config["fid_real"] or config["data"], config["res"], n, device, inception, seed=config["seed"])
    return fid_of_generator(G, real, n, device=device, inception=inception)


def plot(results, path):
    with_fid = [r for r in results if r["fid"] is not None]
    fig, axes = plt.subplots(1, 3 if with_fid else 2, figsize=(15 if with_fid else 10, 4), dpi=100)
    for r in results:
        minutes = [float(row["elapsed_s"]) / 60 for row in r["rows"]]
        for ax, key in zip(axes, ("loss_d", "loss_g")):
            ax.plot(minutes, smooth([float(row[key]) for row in r["rows"]]), label=r["name"])
    for ax, title in zip(axes, ("D loss (smoothed)", "G loss (smoothed)")):
        ax.set(title=title, xlabel="training minutes")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    if with_fid:
        axes[2].barh([r["name"] for r in with_fid], [r["fid"] for r in with_fid], color="tab:green")
        axes[2].set(title="FID at the end (lower is better)")
        axes[2].invert_yaxis()
    fig.tight_layout()
    save_figure(fig, path)


def sample_sheet(results, path, rows=4, columns=4):
    """The top `rows` rows of each run's last training grid, labelled, `columns` runs across."""
    panels = []
    for r in results:
        grids = list((output_dir(r["name"]) / "samples").glob("*.png"))
        if grids:
            grid = Image.open(max(grids, key=lambda p: p.stat().st_mtime_ns)).convert("RGB")
            panels.append((r["name"], grid.crop((0, 0, grid.width, round(grid.height * rows / 8)))))
    if not panels:
        return
    width, height = max(p.width for _, p in panels), max(p.height for _, p in panels)
    across = min(columns, len(panels))
    sheet = Image.new("RGB", (across * (width + 10) - 10, -(-len(panels) // across) * (height + 24)), "white")
    draw = ImageDraw.Draw(sheet)
    for i, (name, panel) in enumerate(panels):
        x, y = (i % across) * (width + 10), (i // across) * (height + 24)
        sheet.paste(panel, (x, y + 18))
        draw.text((x + 2, y + 3), name, fill="black")
    save_png(sheet, path)


def table(results):
    lines = ["| config | iterations | images seen | minutes | D loss | G loss | FID |", "|---|---|---|---|---|---|---|"]
    for r in results:
        if not r["rows"]:
            lines.append(f"| {r['name']} | failed (exit {r['code']}) | | | | | |")
            continue
        last = r["rows"][-10:]
        images = int(r["config"]["batch_size"] * r["config"]["d_steps"] * int(r["rows"][-1]["step"]))
        fid = f"{r['fid']:.1f}" if r["fid"] is not None else "-"
        lines.append(f"| {r['name']} | {r['rows'][-1]['step']} | {images} | "
                     f"{float(r['rows'][-1]['elapsed_s']) / 60:.1f} | "
                     f"{np.mean([float(x['loss_d']) for x in last]):.3f} | "
                     f"{np.mean([float(x['loss_g']) for x in last]):.3f} | {fid} |")
    return "\n".join(lines)


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    extra = argv[argv.index("--") + 1:] if "--" in argv else []
    args = build_parser().parse_args(argv[:argv.index("--")] if "--" in argv else argv)
    if bool(args.minutes) == bool(args.steps):
        raise UserError("give the budget as --minutes M or --steps N (one of them)")
    for config in args.configs:
        if not Path(config).is_file():
            raise UserError(f"config {config} not found")
    signal.signal(signal.SIGTERM, stop_on_sigterm)
    results = []
    for config, name in zip(args.configs, run_names(args.configs, args.tag)):
        code = train_one(config, name, args, extra)
        rows = read_run(name)
        cfg_path = output_dir(name) / "config.json"
        cfg = json.loads(cfg_path.read_text()) if cfg_path.exists() else {}
        fid = final_fid(name, args.fid_n, resolve_device(args.device)) if args.fid_n and code == 0 else None
        results.append({"name": name, "config": cfg, "rows": rows, "fid": fid, "code": code})
    out = Path(args.out)
    plot([r for r in results if r["rows"]], out / "comparison.png")
    sample_sheet(results, out / "samples.png")
    text = table(results)
    with atomic_path(out / "comparison.md") as tmp:
        tmp.write_text(text + "\n")
    write_json(out / "comparison.json", [{k: r[k] for k in ("name", "fid", "code")} | {"final": r["rows"][-1:]}
                                         for r in results])
    print(text)
    print(f"wrote {out / 'comparison.png'}, {out / 'samples.png'} and {out / 'comparison.md'}")
    failed = [f"{r['name']} (exit {r['code']})" for r in results if r["code"] != 0]
    if failed:
        print(f"error: {len(failed)} of {len(results)} runs failed: {', '.join(failed)}", file=sys.stderr)
        sys.exit(1)


def stop_on_sigterm(signum, frame):
    """SIGTERM like Ctrl-C: unwind, so that train_one stops its child before compare exits."""
    raise KeyboardInterrupt


if __name__ == "__main__":
    run(main)
