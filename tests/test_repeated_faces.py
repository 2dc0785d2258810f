"""Repeated faces: a case worked by hand, manifolds whose answer is known, both sides cut to the same size, and
evaluate_fid.py --pr printing it and writing it into --json."""
import json

import numpy as np
import pytest

import evaluate_fid
from fakefacegen.cli import UserError
from fakefacegen.metrics.repeated_faces import REPEAT_QUANTILE, repeated_faces


def test_a_case_worked_by_hand():
    """1-D points. Real 0, 1, 3, 7, 15: nearest other real at 1, 1, 2, 4, 8, so quantile 0 puts the threshold at 1.
    Fakes 0, 0.5, 4, 10, 20: nearest other fake at 0.5, 0.5, 3.5, 6, 10; two are nearer than 1: 40% repeated.
    Medians 3.5 against 2."""
    real, fake = np.array([[0.0], [1], [3], [7], [15]]), np.array([[0.0], [0.5], [4], [10], [20]])
    found = repeated_faces(real, fake, quantile=0.0)
    assert found == {"repeated": 0.4, "threshold": 1.0, "nearest_ratio": 1.75, "n": 5, "quantile": 0.0}
    assert repeated_faces(real, fake, quantile=0.5)["threshold"] == 2.0  # the median of 1, 1, 2, 4, 8


@pytest.fixture(scope="module")
def faces():
    """Stand-ins for Inception features: 200 identities in 256-D, centres about 22 apart, each seen under changes
    of its own in every direction (std 0.5 / 16 per dimension, as a photo's pose, light and expression change it).
    draw(..., colours=c) adds changes of std c along 3 fixed directions only: one face under changing colours."""
    rng = np.random.default_rng(0)
    centres, colour_basis = rng.standard_normal((200, 256)), np.linalg.qr(rng.standard_normal((256, 256)))[0][:3]

    def draw(n, identities=200, change=0.5, colours=0.0):
        return (centres[rng.integers(0, identities, n)] + change * rng.standard_normal((n, 256)) / 16
                + colours * rng.standard_normal((n, 3)) @ colour_basis)

    return draw


def test_a_generator_like_the_data_repeats_about_the_quantile(faces):
    found = repeated_faces(faces(2000), faces(2000))
    assert found["repeated"] < 3 * REPEAT_QUANTILE and 0.8 < found["nearest_ratio"] < 1.25


def test_a_few_faces_under_changing_colours_repeat(faces):
    """Five identities whose samples change only in colour, though by more than a real face changes: most
    samples have a twin."""
    found = repeated_faces(faces(2000), faces(2000, identities=5, change=0.0, colours=1.0))
    assert found["repeated"] > 0.9 and found["nearest_ratio"] < 0.7


def test_varied_but_unrealistic_faces_are_not_repeats(faces):
    """Far from the data (FID's and precision's concern) but as varied: no more repeats than the data."""
    found = repeated_faces(faces(2000), faces(2000) * 3 + 10)
    assert found["repeated"] < 3 * REPEAT_QUANTILE


def test_both_sides_are_cut_to_the_smaller(faces):
    real, fake = faces(2000), faces(300)
    assert repeated_faces(real, fake) == repeated_faces(real[:300], fake)
    assert repeated_faces(fake, real)["n"] == 300
    with pytest.raises(UserError, match="2 or more images per side"):
        repeated_faces(real, fake[:1])


def test_evaluate_fid_prints_it_and_writes_it(faces, capsys):
    real, fake = faces(500), faces(500, identities=3, change=0.0, colours=1.0)
    sides = [{"mu": x.mean(0), "sigma": np.cov(x, rowvar=False), "features": x, "n": len(x)} for x in (fake, real)]
    found = evaluate_fid.neighbour_measures(*sides, "cpu", timings := {})
    assert found["repeated_faces"] == repeated_faces(real, fake) and "repeated_faces" in timings
    assert f"repeated faces {found['repeated_faces']['repeated']:.2%} of 500" in capsys.readouterr().out


def test_a_statistics_file_has_no_repeats_to_count(tmp_path, capsys):
    for name in "ab":
        np.savez(tmp_path / f"{name}.npz", mu=np.zeros(2048), sigma=np.eye(2048))
    evaluate_fid.main([str(tmp_path / "a.npz"), str(tmp_path / "b.npz"), "--pr", "--device", "cpu",
                       "--json", str(tmp_path / "r.json")])
    assert "repeated faces n/a" in capsys.readouterr().out
    assert json.loads((tmp_path / "r.json").read_text())["repeated_faces"] is None
