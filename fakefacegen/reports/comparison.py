"""Several training runs for one budget, side by side: train.py as a child process that never outlives its
parent, a run's metrics and settings, the loss figure, the sample sheet and markdown tables. compare.py and
protocol.py both train and show runs this way."""
import ctypes
import json
import signal
import subprocess
import sys
from pathlib import Path

from PIL import Image, ImageDraw

from fakefacegen.cli import UserError, check_run_name
from fakefacegen.files import check_output, save_png
from fakefacegen.reports.plots import save_figure, smooth, subplots
from fakefacegen.runs import loss_rows, output_dir, read_metrics, run_checkpoints
from fakefacegen.settings import parse_settings

PR_SET_PDEATHSIG = 1  # from Linux's <sys/prctl.h>
TRAIN_SCRIPT = Path(__file__).resolve().parents[2] / "train.py"
EPOCHS_WITHOUT_END = 100_000  # what a compared run is given: its budget in iterations or minutes ends it first
# train.py's exit statuses after it saved a run that a signal stopped: the run resumes, it did not fail.
STOPPED = {128 + signal.SIGINT: "Ctrl-C", 128 + signal.SIGTERM: "SIGTERM"}


def run_names(configs, prefix, tag="", suffixes=("",)):
    """<prefix>-<config name><suffix>[-tag] per config and suffix (config-major); two configs of one file
    name would share a run, so that is refused."""
    if tag:
        check_run_name(tag, "--tag")
    stems = [Path(config).stem for config in configs]
    for stem in set(stems):
        same = [config for config, other in zip(configs, stems) if other == stem]
        if len(same) > 1:
            name = f"{prefix}-{stem}" + (f"-{tag}" if tag else "")
            raise UserError(f"{' and '.join(same)} have the same file name, so their runs would share {name}: "
                            "rename one, or compare them in two runs with different --tag")
    names = [f"{prefix}-{stem}{suffix}" + (f"-{tag}" if tag else "") for stem in stems for suffix in suffixes]
    for name in names:
        check_run_name(name, "the run name")
    return names


def check_out_folder(out, written, force):
    """--out must be a folder; where it holds `written` files of an earlier run, replacing them needs --force
    (force None: they are rewritten anyway, e.g. the protocol's table of the same runs)."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out} is a file: give a folder for {', '.join(written)}")
    check_output(out, "--out", ours=True, kind="folder")  # the earlier files: below, in words of a comparison
    earlier = [name for name in written if (out / name).exists()]
    if earlier and force is False:
        raise UserError(f"--out {out} holds an earlier comparison ({', '.join(earlier)}): add --force to replace "
                        "it, or give another --out")


def check_configs(configs, names, flags):
    """Every config with the flags its run gets, checked as train.py will check them, before any trains."""
    for config, name in zip(configs, names):
        if not Path(config).is_file():
            raise UserError(f"config {config} not found")
        try:
            parse_settings(["--config", config, "--run", name, "--epochs", str(EPOCHS_WITHOUT_END), *flags], "")
        except UserError as err:
            raise UserError(f"{config}: {err}") from None


def parse_with_extra(parser, argv=None):
    """(args, the flags after `--`, which go to every train.py run)."""
    argv = sys.argv[1:] if argv is None else list(argv)
    cut = argv.index("--") if "--" in argv else len(argv)
    return parser.parse_args(argv[:cut]), argv[cut + 1:]


def die_with_parent():
    """In the child, before train.py starts: Linux sends it SIGTERM (train.py saves and stops) if the parent
    dies, even by SIGKILL, so no training outlives the comparison. Elsewhere it is a no-op."""
    libc = ctypes.CDLL(None)
    if hasattr(libc, "prctl"):
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def train_one(config, name, device, budget, extra=()):
    """Run train.py for `budget` (its flags, e.g. ["--max-steps", "100"]) in its own process, so that a crash
    or NaN in one run does not stop the others; a run that exists is resumed. If the parent is interrupted,
    the child is stopped (it saves latest.pt) before the parent exits. Returns the child's exit status."""
    resume = ["--resume", "auto"] if run_checkpoints(name) else []
    cmd = [sys.executable, str(TRAIN_SCRIPT), "--config", config, "--run", name,
           "--device", device, "--epochs", str(EPOCHS_WITHOUT_END), *budget, *resume, *extra]
    print(f"== {name}: {' '.join(cmd[1:])}", flush=True)
    child = subprocess.Popen(cmd, preexec_fn=die_with_parent if sys.platform == "linux" else None)
    try:
        return child.wait()
    except KeyboardInterrupt as stop:
        # The child is stopped with the other signal than the one that reached us: a terminal's Ctrl-C reaches it
        # too, as pkill's or systemd's SIGTERM does, and it takes another signal as the same request and finishes
        # its save, where the same signal twice would stop it at once.
        child.send_signal(signal.SIGINT if isinstance(stop, Terminated) else signal.SIGTERM)
        child.wait()
        raise
    finally:
        if child.poll() is None:
            child.terminate()
            child.wait()


class Terminated(KeyboardInterrupt):
    """SIGTERM, unwound like Ctrl-C."""


def stop_on_sigterm(signum, frame):
    """SIGTERM like Ctrl-C: unwind, so that train_one stops its child before the parent exits."""
    raise Terminated


def outcome(code):
    """A child's exit status as the tables say it: a run stopped by a signal was saved and resumes when the
    same command runs again, which a failure does not promise."""
    if code in STOPPED:
        return f"stopped by {STOPPED[code]} (exit {code}; run the command again to resume it)"
    return f"failed (exit {code})"


def exit_if_failed(results):
    """After the tables are written: the runs that failed (their `name` and exit `code`), one line on stderr,
    exit status 1; else the runs a signal stopped before their budget, one line and the stop's own status (130,
    143), as train.py's: not finished, not crashed."""
    failed = [f"{r['name']} (exit {r['code']})" for r in results if r["code"] not in (0, *STOPPED)]
    stopped = [r for r in results if r["code"] in STOPPED]
    if failed:
        print(f"error: {len(failed)} of {len(results)} runs failed: {', '.join(failed)}", file=sys.stderr)
        sys.exit(1)
    if stopped:
        print(f"stopped: {len(stopped)} of {len(results)} runs were stopped before their budget "
              f"({', '.join(r['name'] for r in stopped)}); they are saved: run the same command again to resume "
              "them", file=sys.stderr)
        sys.exit(stopped[0]["code"])


def read_run(name):
    """The loss lines of a run's metrics.csv (FID lines left out)."""
    return loss_rows(read_metrics(output_dir(name) / "metrics.csv"))


def run_config(name):
    """The effective settings a run was trained with (its outputs/<run>/config.json), or {} if it has none."""
    path = output_dir(name) / "config.json"
    return json.loads(path.read_text()) if path.exists() else {}


def images_seen(config, rows):
    """Real images D has seen by a run's last log line: batch_size x d_steps per iteration."""
    return int(config["batch_size"] * config["d_steps"] * int(rows[-1]["step"])) if rows else 0


def plot(results, path):
    """Each run's smoothed D and G losses against training time and, where measured, its final FID."""
    with_fid = [r for r in results if r["fid"] is not None]
    fig, axes = subplots(1, 3 if with_fid else 2, figsize=(15 if with_fid else 10, 4), dpi=100)
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


def last_grids(panels, rows):
    """(label, the top `rows` of 8 rows of the run's last training grid) for each (label, run) that has one."""
    found = []
    for label, name in panels:
        grids = list((output_dir(name) / "samples").glob("*.png"))
        if grids:
            grid = Image.open(max(grids, key=lambda p: p.stat().st_mtime_ns)).convert("RGB")
            found.append((label, grid.crop((0, 0, grid.width, round(grid.height * rows / 8)))))
    return found


def sample_sheet(panels, path, rows=4, columns=4):
    """panels: (label, run name); the top `rows` rows of each run's last grid, labelled, `columns` across.
    Nothing is written when no run has drawn a grid."""
    found = last_grids(panels, rows)
    if not found:
        return
    width, height = max(p.width for _, p in found), max(p.height for _, p in found)
    across = min(columns, len(found))
    sheet = Image.new("RGB", (across * (width + 10) - 10, -(-len(found) // across) * (height + 24)), "white")
    draw = ImageDraw.Draw(sheet)
    for i, (label, panel) in enumerate(found):
        x, y = (i % across) * (width + 10), (i // across) * (height + 24)
        sheet.paste(panel, (x, y + 18))
        draw.text((x + 2, y + 3), label, fill="black")
    save_png(sheet, path)


def markdown_table(header, rows):
    """A markdown table; an empty cell is written `| |`."""
    def line(cells):
        return "|" + "|".join(f" {cell} " if str(cell) else " " for cell in cells) + "|"

    return "\n".join([line(header), "|" + "---|" * len(header)] + [line(row) for row in rows])
