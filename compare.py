"""Train several configs for the same budget and compare them on one figure and one table.

    python compare.py configs/ablation/*.toml --minutes 3               # the seeds' ablation
    python compare.py configs/demo.toml configs/wgan_gp.toml --minutes 5 --fid-n 2048 -- --res 32

Each config trains in its own run (outputs/compare-<name>/ and checkpoints/compare-<name>/) for --minutes of
training or --steps iterations, whichever you give; flags after `--` go to every train.py run. The figure
(comparison.png) draws the smoothed D and G losses of every run against training time, and FID where measured;
the table (comparison.md, also printed) lists the final losses, iterations, images seen and FID; samples.png
puts the top rows of every run's last sample grid side by side.
"""
import fakefacegen  # noqa: F401  (first: an older Python stops there with one line)

# isort: split
import signal
from pathlib import Path

import numpy as np

from fakefacegen.checkpoint import load_generator
from fakefacegen.cli import ArgumentParser, UserError, integer, number, resolve_device, run
from fakefacegen.files import write_json, write_text
from fakefacegen.metrics.fid_sources import FidMeter
from fakefacegen.reports.comparison import (
    check_configs,
    check_out_folder,
    exit_if_failed,
    images_seen,
    markdown_table,
    outcome,
    parse_with_extra,
    plot,
    read_run,
    run_config,
    run_names,
    sample_sheet,
    stop_on_sigterm,
    train_one,
)
from fakefacegen.runs import checkpoint_dir, fid_real_set
from fakefacegen.settings import FID_N_MAX

WRITTEN = ("comparison.png", "samples.png", "comparison.md", "comparison.json")


def build_parser():
    p = ArgumentParser(description=__doc__)
    p.add_argument("configs", nargs="+", help="TOML configs to compare")
    p.add_argument("--minutes", type=number(low=0), default=0, help="training minutes per config")
    p.add_argument("--steps", type=integer(0), default=0, help="iterations per config")
    p.add_argument("--fid-n", type=integer(0, FID_N_MAX), default=0,
                   help="measure FID of each final model on this many samples (0: not measured)")
    p.add_argument("--tag", default="", help="suffix for the run names, to keep several comparisons apart")
    p.add_argument("--out", default="outputs/comparison", help="folder for comparison.png/.md/.json")
    p.add_argument("--force", action="store_true", help="replace an earlier comparison's files in --out")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N | mps")
    return p


def final_fid(name, n, device):
    G, config = load_generator(checkpoint_dir(name) / "latest.pt", device)
    return FidMeter(fid_real_set(config), config["res"], n, device, config["seed"])(G, progress=True)


def table(results):
    rows = []
    for r in results:
        if not r["rows"]:
            rows.append([r["name"], outcome(r["code"]), "", "", "", "", ""])
            continue
        last = r["rows"][-10:]
        fid = f"{r['fid']:.1f}" if r["fid"] is not None else "-"
        rows.append([r["name"], r["rows"][-1]["step"], images_seen(r["config"], r["rows"]),
                     f"{float(r['rows'][-1]['elapsed_s']) / 60:.1f}",
                     f"{np.mean([float(x['loss_d']) for x in last]):.3f}",
                     f"{np.mean([float(x['loss_g']) for x in last]):.3f}", fid])
    return markdown_table(["config", "iterations", "images seen", "minutes", "D loss", "G loss", "FID"], rows)


def main(argv=None):
    args, extra = parse_with_extra(build_parser(), argv)
    if bool(args.minutes) == bool(args.steps):
        raise UserError("give the budget as --minutes M or --steps N (one of them)")
    if args.fid_n == 1:
        raise UserError("--fid-n 1: FID needs at least 2 samples (0: not measured)")
    check_out_folder(args.out, WRITTEN, args.force)
    budget = ["--max-minutes", str(args.minutes)] if args.minutes else ["--max-steps", str(args.steps)]
    names = run_names(args.configs, "compare", args.tag)
    check_configs(args.configs, names, [*budget, *extra])  # all of them, before the first trains
    signal.signal(signal.SIGTERM, stop_on_sigterm)
    results = []
    for config, name in zip(args.configs, names):
        code = train_one(config, name, args.device, budget, extra)
        fid = final_fid(name, args.fid_n, resolve_device(args.device)) if args.fid_n and code == 0 else None
        results.append({"name": name, "config": run_config(name), "rows": read_run(name), "fid": fid, "code": code})
    out = Path(args.out)
    plot([r for r in results if r["rows"]], out / "comparison.png")
    sample_sheet([(r["name"], r["name"]) for r in results], out / "samples.png")
    text = table(results)
    write_text(out / "comparison.md", text + "\n")
    write_json(out / "comparison.json", [{k: r[k] for k in ("name", "fid", "code")} | {"final": r["rows"][-1:]}
                                         for r in results])
    print(text)
    print(f"wrote {out / 'comparison.png'}, {out / 'samples.png'} and {out / 'comparison.md'}")
    exit_if_failed(results)


if __name__ == "__main__":
    run(main)
