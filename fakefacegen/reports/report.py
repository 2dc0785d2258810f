"""report.html: one page per run to look at instead of reading its files: the fixed-noise grid over training
(a slider), the loss and FID curves, speed and wall time, the environment and the effective config. It sits in
outputs/<run>/ beside what it shows and names those files by relative path, so it works offline, copied with
its folder, with no script or style from the network."""
import html
import json
import os
import platform
import re
import string
from datetime import datetime
from pathlib import Path
from urllib.parse import quote

import torch

from fakefacegen.files import write_text
from fakefacegen.reports.plots import plot_fid, plot_losses
from fakefacegen.runs import loss_rows, read_metrics

GRID_NAME = re.compile(r"(epoch|step)_(\d+)\.png")  # train.py's samples/epoch_NNN.png and step_NNNNNN.png

PAGE = string.Template("""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>$title</title>
<style>
body { font: 15px/1.45 system-ui, sans-serif; margin: 1.5em auto; max-width: 1100px; padding: 0 1em; color: #222; }
h1 { margin-bottom: 0; } h2 { margin-top: 1.6em; border-bottom: 1px solid #ddd; }
.muted { color: #777; }
.warning { background: #fff3cd; border: 1px solid #e0b400; padding: 0.5em 1em; }
img { max-width: 100%; height: auto; }
#grid-slider { width: min(100%, 640px); display: block; margin: 0.6em 0; }
.curves { display: flex; flex-wrap: wrap; gap: 1em; }
.cols { display: flex; flex-wrap: wrap; gap: 3em; }
table { border-collapse: collapse; } td, th { padding: 2px 12px 2px 0; text-align: left; vertical-align: top; }
th { font-weight: 600; } td { font-family: ui-monospace, monospace; }
</style>
</head>
<body>
<h1>$title</h1>
<p class="muted">report written $written; it is rewritten at each save: reload to update.</p>
$warnings
<h2>Samples: the same fixed noise over training</h2>
$grids
<h2>Curves</h2>
<div class="curves">$curves</div>
<div class="cols">
<div><h2>Speed and time</h2>$speed</div>
<div><h2>Environment</h2>$environment</div>
</div>
<h2>Effective config</h2>
$config
<script>
// The slider picks a grid from the list the page carries; nothing is fetched but the images beside the page.
const data = document.getElementById("grid-data");
if (data) {
  const grids = JSON.parse(data.textContent);
  const slider = document.getElementById("grid-slider");
  const image = document.getElementById("grid"), label = document.getElementById("grid-label");
  slider.addEventListener("input", () => {
    const grid = grids[Number(slider.value)];
    image.src = grid.src;
    image.alt = label.textContent = grid.label;
  });
}
</script>
</body>
</html>
""")


def write_report(out_dir, env=None, rows=None, warnings=None):
    """Write out_dir/report.html (atomically) from what the run folder holds now: samples/*.png, loss.png,
    fid.png, metrics.csv, config.json; `env`: the rows of the environment table (see environment()); `rows`:
    metrics.csv's rows, where the caller has them (train.py does, and appends to the file meanwhile);
    `warnings`: what collapse.py found wrong at the last save ({kind: text}), shown at the top."""
    out_dir = Path(out_dir)
    rows = read_metrics(out_dir / "metrics.csv") if rows is None else rows
    config_path = out_dir / "config.json"
    config = json.loads(config_path.read_text()) if config_path.exists() else {}
    page = PAGE.substitute(
        title=html.escape(f"FakeFaceGen run {out_dir.name}"),
        written=html.escape(f"{datetime.now():%Y-%m-%d %H:%M:%S}"),
        warnings="".join(f'<p class="warning"><strong>Warning: {html.escape(kind)}</strong>: {html.escape(text)}</p>\n'
                         for kind, text in (warnings or {}).items()),
        grids=grids_section(grid_files(out_dir / "samples", rows)),
        curves=curves_section(out_dir),
        speed=table(speed_rows(rows)) or '<p class="muted">no log line yet</p>',
        environment=table(env if env is not None else environment()),
        config=table({key: shown(value) for key, value in config.items()})
        or '<p class="muted">no config.json</p>')
    path = out_dir / "report.html"
    write_text(path, page)
    return path


def environment(device=None):
    """torch, Python and the device's name, for the report's environment table; computed once per run is
    enough (the caller may add rows, e.g. the number of processes)."""
    env = {"torch": torch.__version__, "Python": platform.python_version(), "platform": platform.platform()}
    if device is not None:
        device = torch.device(device)
        env["device"] = torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_name()
    return env


def cpu_name():
    """The CPU's model (Linux's /proc/cpuinfo, else what platform knows) and its core count."""
    model = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            model = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), model)
    except OSError:  # not Linux: platform's answer stands
        pass
    return f"CPU: {model}, {os.cpu_count()} cores, torch uses {torch.get_num_threads()} threads"


def grid_files(samples, rows):
    """[(file name, label)] of the fixed-noise grids in training order. epoch_NNN.png is placed at the last
    iteration metrics.csv logged for epoch NNN, so a step_NNNNNN.png drawn at a stop mid-epoch falls between
    the epochs around it (file times would not survive a copy of the folder)."""
    epoch_end = {}
    for row in rows:
        step, epoch = str(row.get("step") or ""), str(row.get("epoch") or "")
        if step.isdigit() and epoch.isdigit():
            epoch_end[int(epoch)] = max(epoch_end.get(int(epoch), 0), int(step))
    found = []
    for path in samples.glob("*.png") if samples.is_dir() else ():
        match = GRID_NAME.fullmatch(path.name)
        if not match:
            continue
        kind, number = match.group(1), int(match.group(2))
        if kind == "epoch":
            step = epoch_end.get(number)
            label = f"epoch {number}" + (f" (iteration {step})" if step is not None else "")
            found.append(((step or 0, number, 0), path.name, label))
        else:
            found.append(((number, 0, 1), path.name, f"iteration {number} (saved mid-epoch)"))
    return [(name, label) for _, name, label in sorted(found)]


def grids_section(grids):
    """The latest grid, a slider over all of them and its label; the list goes to the script as JSON."""
    if not grids:
        return '<p class="muted">no grid yet: the first is drawn when epoch 1 ends or the run stops.</p>'
    items = [{"src": "samples/" + quote(name), "label": label} for name, label in grids]
    # "<" escaped inside JSON so that no file name can close the <script> element it sits in.
    data = json.dumps(items).replace("<", "\\u003c")
    latest = items[-1]
    return (f'<figure><img id="grid" src="{html.escape(latest["src"])}" alt="{html.escape(latest["label"])}">'
            f'<figcaption id="grid-label">{html.escape(latest["label"])}</figcaption></figure>\n'
            f'<input type="range" id="grid-slider" min="0" max="{len(items) - 1}" value="{len(items) - 1}" '
            f'aria-label="which grid">\n'
            f'<p class="muted">{len(items)} grids: drag the slider (or focus it and use the arrow keys).</p>\n'
            f'<script id="grid-data" type="application/json">{data}</script>')


def curves_section(out_dir):
    """loss.png and, with --fid-every, fid.png, where they exist."""
    parts = [f'<figure><img src="{name}" alt="{html.escape(what)}"><figcaption>{html.escape(what)}</figcaption>'
             f'</figure>' for name, what in (("loss.png", "D and G loss"), ("fid.png", "FID"))
             if (out_dir / name).exists()]
    return "".join(parts) or '<p class="muted">no curve yet: loss.png is drawn when epoch 1 ends.</p>'


def speed_rows(rows):
    """The speed and time of the last log line of metrics.csv, and the best FID where there is one."""
    logged = loss_rows(rows)
    if not logged:
        return {}
    last = logged[-1]
    elapsed = float(last["elapsed_s"])
    hours, rest = divmod(round(elapsed), 3600)
    speed = {"iterations": last["step"], "epoch": last["epoch"], "images/s (last log line)": last["images_per_s"],
             "training time": f"{hours}:{rest // 60:02d}:{rest % 60:02d} ({elapsed:.0f} s)"}
    fids = [(float(r["fid"]), r["step"]) for r in rows if r.get("fid")]
    if fids:
        best, step = min(fids)
        speed["FID (last)"] = f"{fids[-1][0]:.2f}"
        speed["FID (best)"] = f"{best:.2f} at iteration {step}"
    return speed


def shown(value):
    """A config value as the user would type it: strings bare, the rest as JSON (true, null, numbers)."""
    return value if isinstance(value, str) else json.dumps(value)


def table(pairs):
    """A two-column HTML table of {name: value}, every cell escaped ('' when there is nothing)."""
    if not pairs:
        return ""
    body = "\n".join(f"<tr><th>{html.escape(str(key))}</th><td>{html.escape(str(value))}</td></tr>"
                     for key, value in pairs.items())
    return f"<table>\n{body}\n</table>"


def draw_run_figures(out_dir, env, rows, warnings):
    """loss.png, fid.png (once FID was measured) and report.html of a run, from its metrics.csv rows."""
    plot_losses(rows, Path(out_dir) / "loss.png")
    if any(row["fid"] for row in rows):
        plot_fid(rows, Path(out_dir) / "fid.png")
    write_report(Path(out_dir), env, rows, warnings)
