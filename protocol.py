"""The quality protocol: train configs on photos the FID reference never holds, for one budget in images, and
measure every final generator against those held-out faces.

    python protocol.py configs/dcgan_celeba64.toml configs/ema.toml --images 2000000 --seeds 0,1
    python protocol.py configs/dcgan_anime64.toml configs/diffaug.toml --set anime64 --images 1000000
    python protocol.py configs/dcgan_celeba128.toml --set celeba128 --images 125000 --seeds 0
    python protocol.py configs/celeba64.toml --celeba img_align_celeba.zip --partition list_eval_partition.txt \
        --images 250000 --train-n 10000 --fid-n 10000 --seeds 0     # your own CelebA, its official split

--set celeba64 trains on the 5,800 photos of ../shared/data/celeba_sample that ../shared/fid_reference does not
hold (packed once, --crop celeba, into data/protocol/celeba64-train/) and measures FID, KID, precision/recall
(k = 3) and repeated faces of --fid-n samples (4,200) against the 4,200 faces of celeba_a + celeba_b; --set
celeba128 trains on the same photos at 128 px and measures against the same 4,200 held-out photos cut the same way
at 128 px; --set anime64 trains on anime_sample less anime_a and measures against the 2,100 faces of anime_a. The
budget is real images seen by D, not minutes (minutes rank machines, not methods): each run stops after ceil(images
/ (batch_size x d_steps)) iterations of its own settings. Each config trains once per seed (runs
protocol-<set>-<config>-s<seed>, resumed when they exist); the table gives the mean and standard deviation over
seeds. Flags after `--` go to every train.py run; the data, resolution, seed and budget are the protocol's. A run
whose data holds any held-out photo is refused (one line, exit status 2), before it trains and again before it is
measured.

--set celeba64-official (the set --celeba picks) and celeba128-official work from your own CelebA: --celeba is
img_align_celeba.zip (or the folder it unpacks to), --partition its list_eval_partition.txt, the split the field
uses (0 train, 1 validation, 2 test). Runs train on the train split's photos, or its first --train-n sorted by
name (packed once, --crop celeba, into data/protocol/<set>-train/), and are measured against the first --fid-n
photos of the test split sorted by name (default: all 19,962), each cut as the development references are: the
box 19,39,159,179, then a bicubic resize. A partition file that does not list exactly the photos of --celeba, or
that puts a photo in two splits, is refused. Before anything is packed or trained, the time it will take is
printed, from a plain training step and an Inception batch timed on this machine.

Writes into --out: table.md (also printed), protocol.json, samples.png (the last grid of each config's first
seed, side by side) and losses.png.
"""
import fakefacegen  # noqa: F401  (first: an older Python stops there with one line)

# isort: split
import signal
import time
from pathlib import Path

import numpy as np
import torch

from fakefacegen.cli import ArgumentParser, UserError, integer, resolve_device, run, seed_list
from fakefacegen.files import write_json, write_text
from fakefacegen.metrics.heldout import (
    SETS,
    check_trained_apart,
    ensure_split,
    held_out,
    official_held_out,
    reference_stats,
    scores_against,
    split_dir,
    steps_for_images,
)
from fakefacegen.metrics.inception import features_of_images, load_inception
from fakefacegen.metrics.precision_recall import PR_K
from fakefacegen.network import models_from_config
from fakefacegen.reports.comparison import (
    EPOCHS_WITHOUT_END,
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
from fakefacegen.runs import checkpoint_dir
from fakefacegen.settings import FID_N_MAX, parse_settings

REPO = Path(__file__).resolve().parent
BUDGET_FREE = ["--max-steps", "0", "--max-minutes", "0"]  # a config's own budget gives way to the protocol's
WRITTEN = ("table.md", "protocol.json", "samples.png", "losses.png")
TIMED_STEPS = 3  # training iterations timed for the estimate, after one to warm up
TIMED_FACES = 8  # faces through Inception for the estimate, after a batch to warm up


def build_parser():
    p = ArgumentParser(description=__doc__)
    p.add_argument("configs", nargs="+", help="TOML configs to measure")
    p.add_argument("--set", choices=sorted(SETS),
                   help="what to train on and measure against (default celeba64, or celeba64-official with --celeba)")
    p.add_argument("--celeba", metavar="ZIP",
                   help="your img_align_celeba.zip (or its folder), for the -official sets")
    p.add_argument("--partition", metavar="FILE", help="its list_eval_partition.txt, for the -official sets")
    p.add_argument("--train-n", type=integer(1),
                   help="-official sets: train on the first N photos of the train split (default: all 162,770)")
    p.add_argument("--images", type=integer(1), required=True, help="budget: real images seen by D per run")
    p.add_argument("--seeds", type=seed_list, default=[0, 1], help="training seeds per config (default 0,1)")
    p.add_argument("--fid-n", type=integer(PR_K + 1, FID_N_MAX),
                   help="samples per FID, at most the held-out faces (default: all of them: 4200 for celeba, 2100 "
                   "for anime, 19,962 for the official test split)")
    p.add_argument("--shared", default=str(REPO.parent / "shared"),
                   help="the folder holding data/ and fid_reference/ (default: ../shared beside the repository)")
    p.add_argument("--tag", default="", help="suffix for the run names, to keep several protocols apart")
    p.add_argument("--out", help="folder for table.md, protocol.json, samples.png (default outputs/protocol-SET)")
    p.add_argument("--force", action="store_true", help="replace the files of an earlier protocol in --out")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N | mps")
    return p


def plan_runs(args, held, split, extra):
    """One plan per config and seed: its run name, train.py flags and iterations, every run's data checked."""
    names = iter(run_names(args.configs, f"protocol-{held.pset.name}", args.tag, [f"-s{s}" for s in args.seeds]))
    plans = []
    for config in args.configs:
        for seed in args.seeds:
            name = next(names)
            flags = ["--data", str(split), "--res", str(held.pset.res), "--seed", str(seed), *extra]
            # Parsed as train.py will parse them: the budget flags train_one adds, then these, the user's last.
            cfg, _ = parse_settings(["--config", config, "--epochs", str(EPOCHS_WITHOUT_END), *BUDGET_FREE, *flags], "")
            wanted = {"res": held.pset.res, "seed": seed, "epochs": EPOCHS_WITHOUT_END, "max_steps": 0,
                      "max_minutes": 0, "run": "", "resume": ""}
            for key, value in wanted.items():
                if cfg[key] != value:
                    raise UserError(f"{config}{' with the flags after --' if extra else ''} sets {key} = "
                                    f"{cfg[key]!r}: the protocol sets it ({value!r}); leave it out")
            if Path(cfg["data"]) != split:  # the split is packed after these checks, from no held-out photo
                check_trained_apart(f"{config} (seed {seed})", cfg["data"], held)
            earlier = run_config(name)
            if earlier:  # a run to resume: what it trained on so far counts too
                check_trained_apart(f"run {name}", earlier.get("data"), held)
            plans.append({"config": config, "seed": seed, "name": name, "flags": flags, "cfg": cfg,
                          "steps": steps_for_images(args.images, cfg)})
    return plans


def set_name(args):
    """The held-out set's name: --set, else the official split's with --celeba, else the development set's."""
    return args.set or ("celeba64-official" if args.celeba else "celeba64")


def pick_set(args):
    """The held-out set the flags ask for: a development set from --shared, or an official one from --celeba and
    --partition; flags of the other kind are refused."""
    name = set_name(args)
    pset = SETS[name]
    if pset.official:
        if not (args.celeba and args.partition):
            raise UserError(f"--set {name} needs --celeba img_align_celeba.zip and --partition "
                            "list_eval_partition.txt, your own CelebA and its official split")
        return official_held_out(pset, args.celeba, args.partition, args.train_n)
    given = [flag for flag, value in (("--celeba", args.celeba), ("--partition", args.partition),
                                      ("--train-n", args.train_n)) if value is not None]
    if given:
        raise UserError(f"{', '.join(given)} go with --set celeba64-official or celeba128-official, not {name} "
                        f"(the development sample of --shared)")
    return held_out(args.shared, pset)


def synchronize(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def training_rate(cfg, device):
    """Real images per second of a plain fp32 iteration of cfg's networks here: d_steps updates of D on a real and
    a fake batch, then G through D, forward and backward. train.py adds EMA and the like, and on a GPU may pick
    faster settings, so this is a guide, not a promise."""
    G, D = models_from_config(cfg, device)
    batch = cfg["batch_size"]
    real = torch.zeros(batch, 3, cfg["res"], cfg["res"], device=device)

    def iteration():
        for _ in range(cfg["d_steps"]):
            fake = G(torch.randn(batch, cfg["nz"], device=device))
            (D(fake.detach()).mean() - D(real).mean()).backward()
        D(G(torch.randn(batch, cfg["nz"], device=device))).mean().backward()

    iteration()
    synchronize(device)
    started = time.perf_counter()
    for _ in range(TIMED_STEPS):
        iteration()
    synchronize(device)
    return TIMED_STEPS * batch * cfg["d_steps"] / (time.perf_counter() - started)


def features_rate(inception, res, device):
    """Images per second through the FID Inception network here (it resizes every face to 299 px first)."""
    faces = np.zeros((TIMED_FACES, res, res, 3), np.uint8)
    features_of_images(inception, [faces[:2]], device, progress=False)
    synchronize(device)
    started = time.perf_counter()
    features_of_images(inception, [faces], device, progress=False)
    synchronize(device)
    return TIMED_FACES / (time.perf_counter() - started)


def duration(seconds):
    """3 h 05 min, 52 min, 40 s."""
    if seconds >= 3600:
        return f"{int(seconds // 3600)} h {int(seconds % 3600 // 60):02d} min"
    return f"{round(seconds / 60)} min" if seconds >= 60 else f"{max(1, round(seconds))} s"


def estimate(plans, args, held, inception, device):
    """Print how long the runs will take here, from the rates measured now; returns the seconds."""
    rates, train_s, left = {}, 0.0, []
    for plan in plans:
        if plan["config"] not in rates:
            rates[plan["config"]] = training_rate(plan["cfg"], device)
        done = images_seen(run_config(plan["name"]), read_run(plan["name"]))
        left.append(max(0, args.images - done))
        train_s += left[-1] / rates[plan["config"]]
    per_s = features_rate(inception, held.pset.res, device)
    faces = args.fid_n * (len(plans) + 1)
    features_s = faces / per_s
    speeds = ", ".join(f"{rate:,.0f}" for rate in rates.values())
    print(f"estimate on {device}: training {len(plans)} run(s), {sum(left):,} images to go at ~{speeds} images/s "
          f"= {duration(train_s)}; FID features of {args.fid_n:,} held-out faces and {args.fid_n:,} samples per run "
          f"at ~{per_s:,.1f} images/s = {duration(features_s)}; about {duration(train_s + features_s)} in all "
          "(timed here just now; add packing the split the first time)", flush=True)
    return train_s + features_s


def train_and_measure(plan, held, real, n, inception, device_name):
    """Train one planned run to its budget, check its data again, measure its final G_eval."""
    budget = ["--max-steps", str(plan["steps"]), "--max-minutes", "0"]
    code = train_one(plan["config"], plan["name"], device_name, budget, plan["flags"])
    cfg, rows = run_config(plan["name"]), read_run(plan["name"])
    scores = {"fid": None, "kid": None, "precision_recall": None, "repeated_faces": None}
    if code == 0:
        check_trained_apart(f"run {plan['name']}", cfg.get("data"), held)
        ckpt = checkpoint_dir(plan["name"]) / "latest.pt"
        scores = scores_against(ckpt, real, n, inception, resolve_device(device_name))
        pr = scores["precision_recall"]
        print(f"{plan['name']}: FID {scores['fid']:.2f}, KID {scores['kid']['mean']:.4f}, precision "
              f"{pr['precision']:.3f}, recall {pr['recall']:.3f}, repeated faces "
              f"{scores['repeated_faces']['repeated']:.1%} ({n} samples against held-out {held.pset.name})")
    return {**plan, **scores, "code": code, "rows": rows,
            "iterations": int(rows[-1]["step"]) if rows else 0, "images_seen": images_seen(cfg, rows),
            "train_seconds": float(rows[-1]["elapsed_s"]) if rows else 0.0}


def mean_sd(values, digits):
    """'mean ± sd' over seeds (sample standard deviation), the mean alone for one value, '-' for none."""
    if not values:
        return "-"
    if len(values) == 1:
        return f"{values[0]:.{digits}f}"
    return f"{np.mean(values):.{digits}f} ± {np.std(values, ddof=1):.{digits}f}"


def summary(config, runs):
    """The table's line and the JSON's summary of one config's runs."""
    done = [r for r in runs if r["fid"] is not None]
    fids, kids = [r["fid"] for r in done], [r["kid"]["mean"] for r in done]
    precisions, recalls = ([r["precision_recall"][key] for r in done] for key in ("precision", "recall"))
    repeats = [100 * r["repeated_faces"]["repeated"] for r in done]
    failed = [f"seed {r['seed']} {outcome(r['code'])}" for r in runs if r["code"] != 0]
    row = [Path(config).stem, ",".join(str(r["seed"]) for r in runs), max(r["iterations"] for r in runs),
           max(r["images_seen"] for r in runs), f"{np.mean([r['train_seconds'] for r in runs]) / 60:.1f}",
           mean_sd(fids, 2), " / ".join(f"{f:.2f}" for f in fids) + ("; " if fids and failed else "")
           + "; ".join(failed), mean_sd(kids, 4), mean_sd(precisions, 3), mean_sd(recalls, 3), mean_sd(repeats, 1)]
    return row, {"config": config, "seeds": [r["seed"] for r in runs],
                 "fid_mean": float(np.mean(fids)) if fids else None,
                 "fid_sd": float(np.std(fids, ddof=1)) if len(fids) > 1 else None, "fids": fids, "kids": kids,
                 "precisions": precisions, "recalls": recalls, "repeated_percents": repeats}


def write_outputs(out, args, held, split, results):
    """table.md (returned), protocol.json, samples.png and losses.png."""
    header = ["config", "seeds", "iterations", "images seen", "train min / run", f"FID ({args.fid_n} vs held-out)",
              "FID per seed", "KID", "precision", "recall", "repeated %"]
    lines, summaries = [], []
    for config in args.configs:
        row, summed = summary(config, [r for r in results if r["config"] == config])
        lines.append(row)
        summaries.append(summed)
    text = markdown_table(header, lines)
    write_text(out / "table.md", text + "\n")
    write_json(out / "protocol.json", {
        "set": held.pset.name, "images": args.images, "fid_n": args.fid_n, "seeds": args.seeds,
        "train": {"data": str(split), "photos": len(held.train_names), "source": str(held.source)},
        "held_out": held.held_out_from, "configs": summaries,
        "runs": [{k: r[k] for k in ("config", "seed", "name", "code", "iterations", "images_seen", "train_seconds",
                                    "fid", "kid", "precision_recall", "repeated_faces")} for r in results]})
    firsts = {r["config"]: r["name"] for r in reversed(results)}
    sample_sheet([(Path(c).stem, firsts[c]) for c in args.configs], out / "samples.png",
                 columns=min(6, len(args.configs)))
    plot([r for r in results if r["rows"]], out / "losses.png")
    return text


def main(argv=None):
    args, extra = parse_with_extra(build_parser(), argv)
    for config in args.configs:
        if not Path(config).is_file():
            raise UserError(f"config {config} not found")
    out = Path(args.out or f"outputs/protocol-{set_name(args)}")
    # outputs/protocol-SET is the protocol's own: its table is rewritten as the runs resume; a folder the user
    # named keeps its files unless --force
    check_out_folder(out, WRITTEN, force=args.force if args.out else None)
    held = pick_set(args)
    args.fid_n = args.fid_n or len(held.references)  # all of them: 4200 for celeba64, 2100 for anime64
    if args.fid_n > len(held.references):
        raise UserError(f"--fid-n {args.fid_n}: the held-out set holds {len(held.references)} faces")
    plans = plan_runs(args, held, split_dir(held.pset), extra)  # refusals first, before any work
    print(f"{held.pset.name}: training on {len(held.train_names):,} photos of {held.source}, measured against "
          f"{args.fid_n:,} faces of {', '.join(held.held_out_from)}", flush=True)
    device = resolve_device(args.device)
    inception = load_inception(device)
    estimate(plans, args, held, inception, device)
    split = ensure_split(held)
    real = reference_stats(held, args.fid_n, inception, device)
    signal.signal(signal.SIGTERM, stop_on_sigterm)
    results = [train_and_measure(plan, held, real, args.fid_n, inception, args.device) for plan in plans]
    print(write_outputs(out, args, held, split, results))
    print(f"wrote {out / 'table.md'}, {out / 'protocol.json'}, {out / 'samples.png'} and {out / 'losses.png'}")
    exit_if_failed(results)


if __name__ == "__main__":
    run(main)
