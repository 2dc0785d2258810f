"""report.html from a run folder: the grids in training order with the latest shown, the config escaped, speed
and environment; the page in headless Chromium (the latest grid loads, the slider switches it). TensorBoard
events written and read back (skipped without the tensorboard package), and the one-line error without it."""
import csv
import html
import json
import sys

import pytest
import torch
from PIL import Image

from fakefacegen.cli import UserError
from fakefacegen.reports import report, tensorboard_log
from fakefacegen.runs import MetricsLog

NASTY = '<script>alert("x")</script> & co'  # a config value that must arrive as text, not as markup
# (file name, width): each grid has its own width, so the page shows which one it loaded.
# In training order: a stop at iteration 250 (mid-epoch 2) saved step_000250.png between epochs 1 and 2.
GRIDS = [("epoch_001.png", 40), ("step_000250.png", 42), ("epoch_002.png", 44), ("epoch_003.png", 46)]


def metrics_rows():
    """Three epochs of 200 iterations, resumed after a stop at 250 (mid-epoch 2), then one FID line."""
    rows = []
    for step, epoch in ((100, 1), (200, 1), (250, 2), (400, 2), (600, 3)):
        rows.append({"step": step, "epoch": epoch, "loss_d": 1.2, "loss_g": 0.8, "d_real": 0.6, "d_fake": 0.4,
                     "images_per_s": f"{100 + step / 100:.1f}", "elapsed_s": f"{step * 6.5:.2f}", "fid": ""})
    rows.append({"step": 600, "epoch": 3, "fid": "87.1234"})
    return rows


@pytest.fixture
def run_dir(tmp_path):
    """outputs/<run>/ as train.py leaves it: samples/, loss.png, fid.png, metrics.csv, config.json."""
    out = tmp_path / "outputs" / "demo-32px"
    (out / "samples").mkdir(parents=True)
    for index, (name, width) in enumerate(GRIDS):
        Image.new("RGB", (width, 40), (60 * index, 100, 200)).save(out / "samples" / name)
    Image.new("RGB", (80, 40), "white").save(out / "loss.png")
    Image.new("RGB", (80, 40), "grey").save(out / "fid.png")
    with (out / "metrics.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, MetricsLog.COLUMNS)
        writer.writeheader()
        writer.writerows(metrics_rows())
    config = {"run": "demo-32px", "res": 32, "lr_g": 0.0002, "ema": False, "resume": None, "data": NASTY}
    (out / "config.json").write_text(json.dumps(config))
    return out


def test_report_shows_the_latest_grid_and_the_escaped_config(run_dir):
    path = report.write_report(run_dir, {"torch": "2.x", "device": "CPU <test>"})
    assert path == run_dir / "report.html"
    page = path.read_text()
    assert '<img id="grid" src="samples/epoch_003.png"' in page
    data = page.split('<script id="grid-data" type="application/json">')[1].split("</script>")[0]
    assert [grid["src"] for grid in json.loads(data)] == [f"samples/{name}" for name, _ in GRIDS]
    assert "epoch 3 (iteration 600)" in page
    assert html.escape(NASTY) in page and NASTY not in page
    for shown in ("<td>32</td>", "<td>0.0002</td>", "<td>false</td>", "<td>null</td>", "<td>demo-32px</td>"):
        assert shown in page
    for shown in ("<td>600</td>", "<td>106.0</td>", "1:05:00 (3900 s)", "87.12", "CPU &lt;test&gt;"):
        assert shown in page
    assert 'src="loss.png"' in page and 'src="fid.png"' in page
    assert "http://" not in page and "https://" not in page  # nothing from the network
    assert not list(run_dir.glob(".report.html.*"))  # the temporary was renamed away


def test_report_of_a_run_that_has_drawn_nothing_yet(tmp_path):
    path = report.write_report(tmp_path, report.environment("cpu"))
    page = path.read_text()
    assert "no grid yet" in page and "no curve yet" in page and "no log line yet" in page
    assert html.escape(report.environment("cpu")["device"]) in page


def test_report_in_a_headless_browser(run_dir, browser_page):
    """Chromium opens report.html from the disk: the latest grid loads, and the slider shows the others."""
    page, errors = browser_page
    page.goto(report.write_report(run_dir).as_uri())
    loaded = "document.getElementById('grid').complete && document.getElementById('grid').naturalWidth"
    assert page.wait_for_function(loaded).json_value() == GRIDS[-1][1]
    assert page.text_content("#grid-label") == "epoch 3 (iteration 600)"
    page.wait_for_function("[...document.images].every(i => i.complete && i.naturalWidth > 0)")  # the curves
    for index, (name, width) in enumerate(GRIDS):
        page.fill("#grid-slider", str(index))  # sets the value and fires `input`, as a drag does
        page.wait_for_function(f"document.getElementById('grid').src.endsWith('samples/{name}')")
        assert page.wait_for_function(loaded).json_value() == width
    assert page.text_content("#grid-label") == "epoch 3 (iteration 600)"
    assert not errors, errors


def test_tensorboard_events_read_back(tmp_path):
    pytest.importorskip("tensorboard", reason="the optional extra: pip install tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    log_dir = tmp_path / "tensorboard"
    with tensorboard_log.TensorBoardLog(log_dir) as log:
        for step in (10, 20, 30):
            log.scalars(step, {"loss_d": 1.0 + step, "loss_g": 0.5, "d_real": 0.7, "d_fake": 0.3,
                               "images_per_s": 123.5})
        log.fid(30, 87.5)
        log.grid(30, Image.new("RGB", (24, 16), (255, 0, 0)))
        with pytest.raises(TypeError, match="Python float"):
            log.scalars(40, {"loss_d": torch.tensor(1.0)})
    # A resume from the checkpoint at iteration 20 drops what the first run logged after it.
    with tensorboard_log.TensorBoardLog(log_dir, resume_step=20) as log:
        log.scalars(30, {"loss_d": -1.0})
    events = EventAccumulator(str(log_dir), size_guidance={"scalars": 0, "images": 0})
    events.Reload()
    tags = events.Tags()
    assert set(tensorboard_log.TAGS.values()) <= set(tags["scalars"])
    assert [(e.step, e.value) for e in events.Scalars("loss/loss_d")] == [(10, 11.0), (20, 21.0), (30, -1.0)]
    assert [e.value for e in events.Scalars("speed/images_per_s")] == [123.5, 123.5]
    assert events.Scalars("eval/fid") == []  # logged at 30, after the checkpoint: purged by the resume
    assert tags["images"] == [tensorboard_log.GRID_TAG]


def test_tensorboard_images_and_fid(tmp_path):
    pytest.importorskip("tensorboard", reason="the optional extra: pip install tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    with tensorboard_log.TensorBoardLog(tmp_path) as log:
        log.fid(600, 87.5)
        log.grid(600, Image.new("RGB", (24, 16), (255, 0, 0)))
    events = EventAccumulator(str(tmp_path), size_guidance={"scalars": 0, "images": 0})
    events.Reload()
    assert [(e.step, e.value) for e in events.Scalars("eval/fid")] == [(600, 87.5)]
    (image,) = events.Images(tensorboard_log.GRID_TAG)
    assert (image.step, image.width, image.height) == (600, 24, 16)


def test_tensorboard_missing_is_one_line(tmp_path, monkeypatch):
    """Without the tensorboard package (made unimportable here), --tensorboard stops in one clear line."""
    monkeypatch.setitem(sys.modules, "tensorboard", None)  # None in sys.modules: `import tensorboard` fails
    for name in [n for n in sys.modules if n.startswith("torch.utils.tensorboard")]:
        monkeypatch.delitem(sys.modules, name)  # so that torch imports it afresh, and fails as it would
    with pytest.raises(UserError) as raised:
        tensorboard_log.TensorBoardLog(tmp_path / "tensorboard")
    assert str(raised.value) == "--tensorboard needs the tensorboard package: pip install tensorboard"
    assert not (tmp_path / "tensorboard").exists()
