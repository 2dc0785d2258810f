"""collapse.py: the samples' spread against the data's, D winning outright, and train.py's warnings."""
import numpy as np
from conftest import REPO, TINY, run_script

from fakefacegen.data.dataloader import ToyFaces
from fakefacegen.metrics.collapse import SEPARATED_ITERATIONS, SPREAD_AFTER_IMAGES, CollapseWatch, data_spread, spread


def log_rows(pairs, every=10):
    """metrics.csv log lines with these (D(x), D(G(z))), one every `every` iterations."""
    return [{"step": str(every * (i + 1)), "loss_d": "1", "d_real": str(real), "d_fake": str(fake)}
            for i, (real, fake) in enumerate(pairs)]


def test_spread_is_zero_for_one_face_repeated_and_large_for_the_data():
    faces = ToyFaces(64, 32, 0)[np.arange(64)][0].numpy()
    assert spread(np.repeat(faces[:1], 64, axis=0)) == 0.0
    assert spread(faces) > 30 and abs(data_spread(ToyFaces(1000, 32, 0), 0) - spread(faces)) < 10
    noise = np.random.default_rng(0).integers(0, 256, faces.shape, dtype=np.uint8)
    assert spread(noise) < spread(faces) / 2  # per-pixel noise averages out in each cell: it is no variety of faces


def test_warnings_need_the_sign_and_long_enough_training():
    faces = ToyFaces(64, 32, 0)[np.arange(64)][0].numpy()
    watch = CollapseWatch(spread(faces), "bce")
    one_face = np.repeat(faces[:1], 64, axis=0)
    assert list(watch.warnings(one_face, [], SPREAD_AFTER_IMAGES)) == ["mode collapse"]
    assert watch.warnings(one_face, [], SPREAD_AFTER_IMAGES - 1) == {}  # a new G's samples all look alike
    assert watch.warnings(faces, [], 10**9) == {}
    streak = SEPARATED_ITERATIONS // 10
    won = log_rows([(0.6, 0.4)] * 3 + [(0.99, 0.01)] * streak)
    assert list(watch.warnings(faces, won, 10**9)) == ["D wins outright"]
    assert watch.warnings(faces, won[:-1], 10**9) == {}  # one log line short of the streak
    assert watch.warnings(faces, won + log_rows([(0.9, 0.01)])[-1:], 10**9) == {}  # the last line is contested
    assert CollapseWatch(spread(faces), "wgan").warnings(faces, won, 10**9) == {}  # raw critic scores: no scale


def test_a_run_that_collapses_says_so_and_a_healthy_one_does_not(tmp_path):
    """The saturating G loss against a fast D: D wins at once and G draws one blur for every noise (on the toy
    faces at 32 px, within 800 iterations). The demo's recipe on the same faces for as long warns of nothing."""
    budget = ["--toy-size", "1280", "--batch-size", "64", "--epochs", "40", "--log-every", "20", "--ckpt-every", "0"]
    bad = run_script("train.py", *TINY, *budget, "--g-loss", "saturating", "--lr-d", "0.001", "--run", "bad",
                     cwd=tmp_path, timeout=900)  # about 20 s alone; the margin is for a busy machine
    assert "warning: D wins outright" in bad.stdout and "warning: mode collapse" in bad.stdout
    assert bad.stdout.count("warning: mode collapse") == 1  # said when it appears, not at every save
    report = (tmp_path / "outputs" / "bad" / "report.html").read_text()
    assert "Warning: mode collapse" in report and "--ada-target" in report
    good = run_script("train.py", "--config", REPO / "configs" / "demo.toml", *budget, "--device", "cpu",
                      "--run", "good", cwd=tmp_path, timeout=900)
    assert "warning" not in good.stdout
    assert "Warning" not in (tmp_path / "outputs" / "good" / "report.html").read_text()
