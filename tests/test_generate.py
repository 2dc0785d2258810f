import numpy as np
from PIL import Image

from conftest import run_script


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
    result = run_script("generate.py", "--ckpt", ckpt, cwd=cwd)
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
