"""metrics/collapse.py: the samples' spread and crowding against the data's, D winning outright, and train.py's
warnings."""
import numpy as np
import pytest
from conftest import REPO, TINY, run_script

from fakefacegen.data.dataloader import ToyFaces
from fakefacegen.metrics.collapse import (
    CROWDED_RATIO,
    SEPARATED_ITERATIONS,
    SPREAD_AFTER_IMAGES,
    CollapseWatch,
    data_sample,
    judged_from,
    spread,
)
from fakefacegen.settings import DEFAULTS, parse_settings


def log_rows(pairs, every=10):
    """metrics.csv log lines with these (D(x), D(G(z))), one every `every` iterations."""
    return [{"step": str(every * (i + 1)), "loss_d": "1", "d_real": str(real), "d_fake": str(fake)}
            for i, (real, fake) in enumerate(pairs)]


def test_spread_is_zero_for_one_face_repeated_and_large_for_the_data():
    faces = ToyFaces(64, 32, 0)[np.arange(64)][0].numpy()
    assert spread(np.repeat(faces[:1], 64, axis=0)) == 0.0
    assert spread(faces) > 30 and abs(spread(data_sample(ToyFaces(1000, 32, 0), 0)) - spread(faces)) < 10
    noise = np.random.default_rng(0).integers(0, 256, faces.shape, dtype=np.uint8)
    assert spread(noise) < spread(faces) / 2  # per-pixel noise averages out in each cell: it is no variety of faces


def test_warnings_need_the_sign_and_long_enough_training():
    faces = ToyFaces(64, 32, 0)[np.arange(64)][0].numpy()
    watch = CollapseWatch(faces, "bce")
    one_face = np.repeat(faces[:1], 64, axis=0)
    assert list(watch.warnings(one_face, [], SPREAD_AFTER_IMAGES)) == ["mode collapse"]
    assert watch.warnings(one_face, [], SPREAD_AFTER_IMAGES - 1) == {}  # a new G's samples all look alike
    assert watch.warnings(faces, [], 10**9) == {}
    streak = SEPARATED_ITERATIONS // 10
    won = log_rows([(0.6, 0.4)] * 3 + [(0.99, 0.01)] * streak)
    assert list(watch.warnings(faces, won, 10**9)) == ["D wins outright"]
    assert watch.warnings(faces, won[:-1], 10**9) == {}  # one log line short of the streak
    assert watch.warnings(faces, won + log_rows([(0.9, 0.01)])[-1:], 10**9) == {}  # the last line is contested
    assert CollapseWatch(faces, "wgan").warnings(faces, won, 10**9) == {}  # raw critic scores: no scale


def one_face_in_many_colours(faces, blotches=0.0):
    """One face of `faces` under 64 colour casts (each channel scaled by 0.4..1.6) and, with `blotches`, colour
    blotches of that standard deviation on a 4x4 grid: it varies as much as the faces do, pixel cell by pixel
    cell, yet it is one face."""
    rng = np.random.default_rng(0)
    n, size = len(faces), faces.shape[1]
    gains = rng.uniform(0.4, 1.6, (n, 1, 1, 3))
    blotch = np.kron(rng.normal(0, blotches, (n, 4, 4, 3)), np.ones((1, size // 4, size // 4, 1)))
    return np.clip(faces[3:4] * gains + blotch, 0, 255).astype(np.uint8)


def test_one_face_in_many_colours_is_told_from_its_thumbnails():
    faces = ToyFaces(64, 64, 0)[np.arange(64)][0].numpy()
    watch = CollapseWatch(faces, "bce")
    for blotches in (0.0, 30.0):
        tinted = one_face_in_many_colours(faces, blotches)
        assert spread(tinted) > 0.9 * spread(faces)  # the pixel spread is blind to it
        assert watch.warnings(tinted, [], SPREAD_AFTER_IMAGES - 1) == {}  # a new G draws one blur: not judged
        found = watch.warnings(tinted, [], SPREAD_AFTER_IMAGES)
        assert list(found) == ["mode collapse"] and "colour aside" in found["mode collapse"]
        assert watch.crowding(tinted)["nearest_ratio"] < CROWDED_RATIO - 0.2
    others = ToyFaces(64, 64, 1)[np.arange(64)][0].numpy()  # 64 other faces: as varied as the data
    assert watch.warnings(others, [], SPREAD_AFTER_IMAGES) == {} and watch.crowding(others)["nearest_ratio"] > 0.9


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


def test_the_signs_of_saved_checkpoints_are_the_runs_own(tmp_path):
    """benchmarks/collapse_signs.py measures a checkpoint's fixed-noise samples as a save would."""
    run_script("train.py", *TINY, "--epochs", "1", "--run", "r", cwd=tmp_path)
    result = run_script("benchmarks.collapse_signs", "checkpoints/r/latest.pt", "--device", "cpu", cwd=tmp_path)
    header, row = result.stdout.splitlines()
    assert header.split()[:3] == ["checkpoint", "images", "seen"]
    cells = row.split()
    assert cells[:2] == ["r/latest.pt", "128"] and cells[2].endswith("%") and cells[3].endswith("x")
    run_script("generate.py", "--ckpt", "checkpoints/r/latest.pt", "--export", "g.safetensors", cwd=tmp_path)
    for bad, says in (("nothere.pt", "checkpoint nothere.pt not found"), ("g.safetensors", "an exported generator")):
        failed = run_script("benchmarks.collapse_signs", bad, "--device", "cpu", cwd=tmp_path, check=False)
        assert failed.returncode == 2 and says in failed.stderr and "Traceback" not in failed.stderr


def test_samples_are_judged_once_the_ema_has_forgotten_its_start():
    """G_eval is an EMA of G: diffaug.toml's fixed decay of 0.999 still holds 67% of G's first weights after 400
    iterations (51,200 images, when its grid is a grey blur), 5% after 2,994."""
    assert judged_from(DEFAULTS) == SPREAD_AFTER_IMAGES  # a 10k-image half-life: 5% left after 43k images
    assert judged_from({**DEFAULTS, "ema_kimg": 0.0}) == SPREAD_AFTER_IMAGES
    assert judged_from({**DEFAULTS, "ema_kimg": 20.0}) == pytest.approx(86_439, abs=1)
    cfg, _ = parse_settings(["--config", str(REPO / "configs" / "diffaug.toml")], "")
    assert judged_from(cfg) == pytest.approx(2994 * 128, rel=1e-3)
    faces = ToyFaces(64, 32, 0)[np.arange(64)][0].numpy()
    watch = CollapseWatch(faces, "bce", judged_from(cfg))
    one_face = np.repeat(faces[:1], 64, axis=0)
    assert watch.warnings(one_face, [], 51_200) == {}
    assert list(watch.warnings(one_face, [], 400_000)) == ["mode collapse"]
