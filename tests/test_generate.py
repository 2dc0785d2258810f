import numpy as np
import pytest
import torch
from conftest import assert_one_line_error, run_script
from PIL import Image

import generate
from fakefacegen.checkpoint import load_generator
from fakefacegen.cli import UserError
from fakefacegen.network import Generator
from fakefacegen.sampling import render, sample_noise


def test_the_same_seed_gives_the_same_face_whatever_n(tiny_run):
    cwd, ckpt = tiny_run
    run_script("generate.py", "--ckpt", ckpt, "--n", "3", "--seed", "10", "--individual", "--out", "few", cwd=cwd)
    run_script("generate.py", "--ckpt", ckpt, "--n", "9", "--seed", "8", "--individual", "--out", "many", cwd=cwd)
    for seed in (10, 11, 12):
        few = np.asarray(Image.open(cwd / "few" / f"{seed:06d}.png"))
        many = np.asarray(Image.open(cwd / "many" / f"{seed:06d}.png"))
        assert few.shape == (32, 32, 3) and np.array_equal(few, many)
    assert not np.array_equal(np.asarray(Image.open(cwd / "few" / "000010.png")),
                              np.asarray(Image.open(cwd / "few" / "000011.png")))


def test_grid_fixed_noise_and_interpolation(tiny_run):
    cwd, ckpt = tiny_run
    result = run_script("generate.py", "--ckpt", ckpt, cwd=cwd, separate=True)
    grid = cwd / "outputs" / "tiny" / "generated" / "seed0_n64.png"
    assert str(grid) in result.stdout or "seed0_n64.png" in result.stdout
    assert Image.open(grid).size == (8 * 34 + 2, 8 * 34 + 2)  # 8x8 faces of 32 px with 2 px gaps

    run_script("generate.py", "--ckpt", ckpt, "--fixed", "--out", "fixed.png", cwd=cwd)
    training_grid = np.asarray(Image.open(cwd / "outputs" / "tiny" / "samples" / "step_000006.png"))
    assert np.array_equal(np.asarray(Image.open(cwd / "fixed.png")), training_grid)

    run_script("generate.py", "--ckpt", ckpt, "--interp", "3", "--out", "walk.png", cwd=cwd)
    gif = Image.open(cwd / "walk.gif")
    assert gif.n_frames == 3 * 12
    assert Image.open(cwd / "walk.png").size == (12 * 34 + 2, 3 * 34 + 2)


@pytest.fixture
def small_ckpt(tmp_path):
    """An untrained 32 px generator saved as a sampler-only checkpoint: enough for generate.py's checks."""
    torch.manual_seed(0)
    G = Generator(res=32, nz=8, ngf=4).eval()
    path = tmp_path / "small.pt"
    torch.save({"G_eval": G.state_dict(), "config": {"res": 32, "nz": 8, "ngf": 4, "g_act": "relu"}}, path)
    return path, G


def test_individual_faces_stream_in_batches(small_ckpt, tmp_path, monkeypatch):
    path, G = small_ckpt
    monkeypatch.setattr(generate, "BATCH", 3)  # 7 faces: batches of 3, 3 and 1
    generate.main(["--ckpt", str(path), "--n", "7", "--seed", "5", "--individual", "--out", str(tmp_path / "f"),
                   "--device", "cpu"])
    written = sorted(p.name for p in (tmp_path / "f").iterdir())
    assert written == [f"{seed:06d}.png" for seed in range(5, 12)]
    expected = render(G, sample_noise(range(5, 12), 8), "cpu")
    assert all(np.array_equal(np.asarray(Image.open(tmp_path / "f" / name)), face)
               for name, face in zip(written, expected))


def test_requests_that_cannot_be_met_are_refused_before_any_work(small_ckpt, tmp_path):
    path, _ = small_ckpt
    (tmp_path / "afile").write_text("x")
    cases = {("--out", str(tmp_path)): "is a folder",  # a grid needs a file name
             ("--out", str(tmp_path / "afile"), "--individual"): "is a file",
             ("--out", str(tmp_path / "afile" / "grid.png")): "is a file, not a folder",
             ("--n", "200000"): "at most 86436 fit in one grid",
             ("--seed", "2147483600", "--n", "64"): "go past 2147483647",
             ("--fixed",): "no fixed noise"}
    for args, words in cases.items():
        with pytest.raises(UserError, match=words):
            generate.main(["--ckpt", str(path), *args, "--device", "cpu"])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["afile", "small.pt"]
    result = run_script("generate.py", "--ckpt", path, "--out", tmp_path, "--device", "cpu", cwd=tmp_path,
                        check=False)
    assert_one_line_error(result, "--out", "is a folder", "--individual")


def test_truncation_one_changes_nothing_and_lower_moves_every_face_toward_the_mean(tiny_run, tmp_path):
    _, path = tiny_run
    G, config = load_generator(path)
    nz = config["nz"]
    common = ["--ckpt", str(path), "--n", "6", "--seed", "3", "--device", "cpu"]
    generate.main([*common, "--out", str(tmp_path / "plain.png")])
    generate.main([*common, "--truncation", "1", "--out", str(tmp_path / "one.png")])
    assert (tmp_path / "plain.png").read_bytes() == (tmp_path / "one.png").read_bytes()
    generate.main([*common, "--truncation", "0.5", "--individual", "--out", str(tmp_path / "half")])
    z = sample_noise(range(3, 9), nz)
    assert all(np.array_equal(np.asarray(Image.open(tmp_path / "half" / f"{seed:06d}.png")), face)
               for seed, face in zip(range(3, 9), render(G, 0.5 * z, "cpu")))  # shrunk toward the mean, 0
    mean_face = render(G, torch.zeros(1, nz), "cpu")[0].astype(float)
    distances = [np.abs(render(G, psi * z, "cpu").astype(float) - mean_face).mean((1, 2, 3))
                 for psi in (1, 0.6, 0.3, 0)]
    assert np.all(np.diff(distances, axis=0) < 0) and np.all(distances[-1] == 0)
    args = generate.build_parser().parse_args(["--ckpt", str(path), "--truncation", "0.7"])
    assert generate.output_path(args, "seed0_n64.png").name == "seed0_n64_psi0.7.png"  # never over the plain grid
    for value in ("-0.1", "1.5", "nan"):
        result = run_script("generate.py", "--ckpt", path, "--truncation", value, cwd=tmp_path, check=False)
        assert_one_line_error(result, "--truncation", "at least 0 and at most 1")
