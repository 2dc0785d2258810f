"""Precision and recall (Kynkäänniemi et al. 2019): a case worked by hand, a plain reference, manifolds whose answer
is known, the block-wise computation, and evaluate_fid.py --pr (n/a for a .npz, in its --json)."""
import json
from types import SimpleNamespace

import numpy as np
import pytest

import evaluate_fid
from fakefacegen.cli import UserError
from fakefacegen.metrics import precision_recall
from fakefacegen.metrics.precision_recall import knn_radii
from fakefacegen.metrics.precision_recall import precision_recall as pr


def test_a_case_worked_by_hand():
    """1-D points. k = 1: the real radii are 1, 1, 2, 4 (0, 1, 3, 7) and the fake ones 0.1, 0.1, 4.9, 6.5.
    Fakes 0.5 and 0.6 fall in the ball of 0, 5.5 in that of 7 (1.5 <= 4), 12 in none (5 > 4): precision 3/4.
    Real 0 is 0.5 from the nearest fake, over its radius 0.1, and 5.5 from 5.5 (> 4.9): uncovered; 1 lies 4.5
    from 5.5 (<= 4.9), 3 and 7 closer still: recall 3/4. k = 2: real radii 3, 2, 3, 6, and 12 lies 5 from 7:
    precision 1."""
    real = np.array([[0.0], [1.0], [3.0], [7.0]])
    fake = np.array([[0.5], [0.6], [5.5], [12.0]])
    assert knn_radii(precision_recall._as_tensor(real, "cpu"), 1).tolist() == [1, 1, 2, 4]
    assert pr(real, fake, k=1) == {"precision": 0.75, "recall": 0.75, "k": 1, "n_real": 4, "n_fake": 4}
    assert knn_radii(precision_recall._as_tensor(real, "cpu"), 2).tolist() == [3, 2, 3, 6]
    assert pr(real, fake, k=2)["precision"] == 1.0


def reference(real, fake, k):
    """The definition, with the whole distance matrices at once."""
    def radii(x):
        return np.sort(np.linalg.norm(x[:, None] - x[None], axis=2), axis=1)[:, k]
    cross = np.linalg.norm(fake[:, None] - real[None], axis=2)  # fakes by rows
    return (cross <= radii(real)[None]).any(1).mean(), (cross <= radii(fake)[:, None]).any(0).mean()


def test_equals_the_definition_whatever_the_blocks(monkeypatch):
    rng = np.random.default_rng(3)
    real, fake = rng.standard_normal((70, 5)), rng.standard_normal((50, 5)) * 1.5 + 0.3
    expected = reference(real, fake, 3)
    whole = pr(real, fake)
    assert (whole["precision"], whole["recall"]) == pytest.approx(expected, abs=1e-12)
    for values in (1, 7, 70):  # one row, a few rows, exactly one row of the 70 real per block
        monkeypatch.setattr(precision_recall, "BLOCK_VALUES", values)
        assert pr(real, fake) == whole


@pytest.fixture(scope="module")
def clusters():
    """Ten clusters, each a 2-D Gaussian patch (std 1) embedded in 64-D, centres about 80 apart: a manifold
    whose parts are known. draw(n, which, scale) samples the clusters `which`, spread by `scale`."""
    rng = np.random.default_rng(0)
    basis = np.linalg.qr(rng.standard_normal((64, 64)))[0][:2]
    centres = rng.standard_normal((10, 64)) * 10

    def draw(n, which=range(10), scale=1.0):
        return (centres[rng.choice(list(which), n)] + scale * rng.standard_normal((n, 2)) @ basis).astype(np.float32)

    return SimpleNamespace(real=draw(2000), draw=draw)


def test_known_manifolds(clusters):
    real, draw = clusters.real, clusters.draw
    same = pr(real, draw(2000))  # the same distribution: both near 1 (k-NN balls miss a few edge points)
    assert same["precision"] > 0.95 and same["recall"] > 0.95
    collapsed = pr(real, draw(2000, which=[0]))  # one mode of ten: realistic, a tenth of the variety
    assert collapsed["precision"] > 0.95 and 0.07 < collapsed["recall"] < 0.13
    sharp = pr(real, draw(2000, scale=0.3))  # every mode, each shrunk to its core: realistic, less varied
    assert sharp["precision"] > 0.95 and sharp["recall"] < 0.6
    blurry = pr(real, draw(2000, scale=3.0))  # every mode, spread wide: varied, often unrealistic
    assert blurry["precision"] < 0.6 and blurry["recall"] > 0.95
    far = pr(real, draw(2000) + 100)  # nowhere near the data
    assert far["precision"] == 0 and far["recall"] == 0


def test_too_few_points_is_a_user_error():
    with pytest.raises(UserError, match="more than k = 3"):
        pr(np.zeros((3, 4)), np.zeros((10, 4)))


def stats_of(features):
    return {"mu": features.mean(0), "sigma": np.cov(features, rowvar=False), "features": features,
            "n": len(features)}


def test_evaluate_fid_reports_precision_and_recall(clusters, capsys):
    real, fake = stats_of(clusters.real), stats_of(clusters.draw(500, which=[0, 1]))
    entry = evaluate_fid.neighbour_measures(fake, real, "cpu", timings := {})["precision_recall"]
    assert entry["precision"] > 0.95 and entry["recall"] < 0.3 and "precision_recall" in timings
    assert f"precision {entry['precision']:.4f}, recall {entry['recall']:.4f}" in capsys.readouterr().out
    assert evaluate_fid.neighbour_measures({**fake, "features": None}, real, "cpu", {})["precision_recall"] is None
    assert "precision/recall and repeated faces n/a" in capsys.readouterr().out


def test_pr_with_statistics_files_is_na_in_the_json(tmp_path, capsys):
    for name, shift in (("a", 0.0), ("b", 0.1)):
        np.savez(tmp_path / f"{name}.npz", mu=np.full(2048, shift), sigma=np.eye(2048))
    evaluate_fid.main([str(tmp_path / "a.npz"), str(tmp_path / "b.npz"), "--pr", "--device", "cpu",
                       "--json", str(tmp_path / "r.json")])
    assert "precision/recall and repeated faces n/a" in capsys.readouterr().out
    written = json.loads((tmp_path / "r.json").read_text())
    assert written["precision_recall"] is None and written["kid"] is None and written["fid"] > 0
    with pytest.raises(UserError, match="drop --pr"):
        evaluate_fid.main([str(tmp_path / "a.npz"), "--save-stats", str(tmp_path / "c.npz"), "--pr"])
