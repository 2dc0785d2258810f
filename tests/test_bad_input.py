"""Each bad input gets one `error:` line, exit status 2, and leaves existing files untouched."""
import hashlib

import pytest
import torch
from conftest import TINY, assert_one_line_error, run_script

import compare
import evaluate_fid
import generate
import latent
import preprocess
from benchmarks import bench
from fakefacegen import settings
from fakefacegen.checkpoint import load_generator, load_training_checkpoint
from fakefacegen.cli import UserError, resolve_device
from fakefacegen.network import Generator


def digest(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def train(cwd, *args):
    return run_script("train.py", *TINY, "--max-steps", "1", *args, cwd=cwd, check=False)


def test_missing_empty_and_undecodable_data(tmp_path):
    assert_one_line_error(train(tmp_path, "--data", "no/such/folder"), "does not exist")
    (tmp_path / "empty").mkdir()
    assert_one_line_error(train(tmp_path, "--data", "empty"), "no images")
    (tmp_path / "junk").mkdir()
    for i in range(3):
        (tmp_path / "junk" / f"{i}.jpg").write_bytes(b"not a jpeg at all" * i)
    assert_one_line_error(train(tmp_path, "--data", "junk"), "could be decoded")


def test_bad_config_files(tmp_path):
    (tmp_path / "typo.toml").write_text("bach_size = 32\n")
    assert_one_line_error(train(tmp_path, "--config", "typo.toml"), "bach_size")
    (tmp_path / "wrong.toml").write_text('lr_g = "fast"\n')
    assert_one_line_error(train(tmp_path, "--config", "wrong.toml"), "lr_g")
    (tmp_path / "nan.toml").write_text("lr_g = nan\n")  # valid TOML, and no learning rate
    assert_one_line_error(train(tmp_path, "--config", "nan.toml"), "lr_g in nan.toml", "above 0", "not nan")
    (tmp_path / "broken.toml").write_text("res = \n")
    assert_one_line_error(train(tmp_path, "--config", "broken.toml"), "TOML")
    assert_one_line_error(train(tmp_path, "--config", "missing.toml"), "not found")


def test_bad_checkpoints_leave_the_run_untouched(tiny_run, tmp_path):
    cwd, ckpt = tiny_run
    before = digest(ckpt)
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(ckpt.read_bytes()[:5000])
    foreign = tmp_path / "foreign.pt"
    torch.save({"weights": torch.zeros(3)}, foreign)
    code = tmp_path / "code.pt"
    torch.save(torch.nn.Linear(2, 2), code)  # a pickled module: code, refused by weights_only

    assert_one_line_error(train(cwd, "--resume", truncated), "not a readable checkpoint")
    assert_one_line_error(train(cwd, "--resume", foreign), "not a FakeFaceGen checkpoint")
    assert_one_line_error(train(cwd, "--resume", code), "not a readable checkpoint")
    assert_one_line_error(run_script("train.py", *TINY, "--resume", ckpt, "--res", "64", cwd=cwd, check=False),
                          "res=32")
    assert_one_line_error(run_script("train.py", *TINY, "--resume", ckpt, "--ngf", "16", cwd=cwd, check=False),
                          "ngf=8")
    assert_one_line_error(train(cwd, "--run", "tiny"), "already exists")
    assert_one_line_error(train(tmp_path, "--resume", "auto", "--run", "nothing"), "found no checkpoint")
    for bad in (truncated, foreign):
        assert_one_line_error(run_script("generate.py", "--ckpt", bad, cwd=cwd, check=False), str(bad.name))
    assert digest(ckpt) == before


def test_bad_flags(tmp_path):
    assert_one_line_error(train(tmp_path, "--batch-size", "0"), "--batch-size")
    assert_one_line_error(train(tmp_path, "--device", "tpu"), "--device")
    assert_one_line_error(train(tmp_path, "--toy-size", "8"), "fewer images")
    assert_one_line_error(train(tmp_path, "--res", "48"), "--res")  # argparse's own errors are one line too


# ---------------------------------------------------------------------------------------------- numbers

PARSERS = {
    "train.py": lambda argv: settings.build_parser("").parse_args(argv),
    "generate.py": lambda argv: generate.build_parser().parse_args(["--ckpt", "x.pt", *argv]),
    "evaluate_fid.py": lambda argv: evaluate_fid.build_parser().parse_args(["toyfaces", "toyfaces", *argv]),
    "latent.py": lambda argv: latent.build_parser().parse_args([*argv[:1], "--ckpt", "x.pt", *argv[1:]]),
    "preprocess.py": lambda argv: preprocess.parse_args(["--out", "x", *argv]),
    "compare.py": lambda argv: compare.build_parser().parse_args(["a.toml", *argv]),
    "benchmarks.bench": lambda argv: bench.build_parser().parse_args(argv),
}
EDIT = ["edit", "--seed", "1", "--vector", "v"]
# (script, arguments ending in the bad flag and its value, the range the message states): nan, inf,
# negative, out of range and huge values.
NUMBERS = [
    ("train.py", ["--lr-g", "nan"], "above 0 and at most 1"),
    ("train.py", ["--lr-d", "inf"], "above 0 and at most 1"),
    ("train.py", ["--beta1", "2"], "at least 0 and below 1"),
    ("train.py", ["--beta2", "nan"], "at least 0 and below 1"),
    ("train.py", ["--ema", "1"], "below 1"),
    ("train.py", ["--seed", "-1"], "from 0 to 2147483647"),
    ("train.py", ["--seed", "99999999999"], "from 0 to 2147483647"),
    ("train.py", ["--toy-size", "1e12"], "from 1 to 10000000"),
    ("train.py", ["--toy-size", "2.5"], "whole number"),
    ("train.py", ["--ckpt-minutes", "nan"], "above 0"),
    ("train.py", ["--max-minutes", "nan"], "at least 0"),
    ("train.py", ["--clip", "-0.01"], "above 0"),
    ("train.py", ["--gp-weight", "inf"], "at least 0"),
    ("train.py", ["--ngf", "100000"], "from 1 to 256"),
    ("train.py", ["--fid-n", "1"], "from 2 to 100000"),
    ("generate.py", ["--n", "100000000"], "from 1 to 1000000"),
    ("generate.py", ["--n", "0"], "from 1 to 1000000"),
    ("generate.py", ["--seed", "-5"], "from 0 to 2147483647"),
    ("generate.py", ["--interp", "1"], "from 2 to 100"),
    ("evaluate_fid.py", ["--seed", "-1"], "from 0 to 2147483647"),
    ("evaluate_fid.py", ["--n", "1"], "from 2 to 100000"),
    ("evaluate_fid.py", ["--n", "1e9"], "from 2 to 100000"),
    ("evaluate_fid.py", ["--kid-subset-size", "1e6"], "from 2 to 5000"),
    ("evaluate_fid.py", ["--batch-size", "0"], "from 1 to 512"),
    ("latent.py", [*EDIT, "--strength", "nan"], "above 0 and at most 100"),
    ("latent.py", [*EDIT, "--strength", "inf"], "above 0 and at most 100"),
    ("latent.py", [*EDIT[:1], *EDIT[3:], "--seed", "-1"], "from 0 to 2147483647"),
    ("latent.py", ["sefa", "--alpha", "nan"], "above 0 and at most 100"),
    ("latent.py", ["sefa", "--steps", "1"], "from 2 to 101"),
    ("preprocess.py", ["--synthetic", "1e13"], "from 1 to 10000000"),
    ("preprocess.py", ["--src", "x", "--limit", "0"], "at least 1"),
    ("preprocess.py", ["--src", "x", "--seed", "-2"], "from 0 to 2147483647"),
    ("compare.py", ["--minutes", "nan"], "at least 0"),
    ("compare.py", ["--steps", "-3"], "at least 0"),
    ("benchmarks.bench", ["--batch", "0"], "from 1 to 8192"),
    ("benchmarks.bench", ["--warmup", "inf"], "from 0 to 10000"),
]


@pytest.mark.parametrize("script, args, bounds", NUMBERS, ids=[f"{s} {' '.join(a)}" for s, a, _ in NUMBERS])
def test_numbers_out_of_range_are_one_line(script, args, bounds, capsys):
    flag = args[-2]
    with pytest.raises(SystemExit) as exit_info:
        PARSERS[script](args)
    lines = capsys.readouterr().err.splitlines()
    assert exit_info.value.code == 2 and len(lines) == 1, lines
    assert lines[0].startswith(f"error: argument {flag}: must be ") and bounds in lines[0], lines[0]


@pytest.mark.parametrize("script, args, words", [
    ("train.py", ["--beta1", "2"], ["--beta1", "below 1"]),
    ("generate.py", ["--ckpt", "x.pt", "--n", "100000000"], ["--n", "1000000"]),
    ("evaluate_fid.py", ["toyfaces", "toyfaces", "--seed", "-1"], ["--seed", "from 0"]),
    ("latent.py", ["edit", "--ckpt", "x.pt", *EDIT[1:], "--strength", "nan"], ["--strength", "not nan"]),
    ("preprocess.py", ["--synthetic", "10000000000000", "--out", "x"], ["--synthetic", "10000000"]),
    ("compare.py", ["a.toml", "--minutes", "inf"], ["--minutes", "not inf"]),
    ("benchmarks.bench", ["--repeats", "-1"], ["--repeats", "from 1"]),
])
def test_each_script_refuses_a_bad_number_in_one_line(script, args, words, tmp_path):
    """As a user sees it, once per script (the table above checks the parsers in-process)."""
    assert_one_line_error(run_script(script, *args, cwd=tmp_path, check=False), *words)


def test_config_values_follow_the_flags_rules(tmp_path):
    for text, words in {"lr_g = nan": "lr_g in", "beta2 = inf": "below 1", "seed = -4": "from 0 to",
                        "toy_size = 100000000000": "from 1 to 10000000", "toy_size = 2.5": "whole number",
                        "ema = true": "should be a number", "ckpt_minutes = nan": "above 0"}.items():
        (tmp_path / "bad.toml").write_text(text + "\n")
        with pytest.raises(UserError, match=words):
            settings.parse_settings(["--config", str(tmp_path / "bad.toml")], "")


# ---------------------------------------------------------------------------------------------- checkpoints

CONFIG = {"res": 32, "nz": 8, "ngf": 4, "g_act": "relu", "ndf": 4, "d_norm": "batch"}


@pytest.mark.parametrize("config, words", [
    ([1, 2], "not a FakeFaceGen checkpoint"),
    ("res=32", "not a FakeFaceGen checkpoint"),
    ({}, "lacks res, nz, ngf, g_act"),
    ({k: v for k, v in CONFIG.items() if k != "nz"}, "lacks nz"),
    ({**CONFIG, "res": 48}, "res = 48"),
    ({**CONFIG, "nz": 10**12}, "nz in"),
    ({**CONFIG, "nz": "8"}, "should be a whole number"),
    ({**CONFIG, "g_act": None}, "g_act"),
], ids=["list", "string", "empty", "no-nz", "bad-res", "huge-nz", "text-nz", "no-act"])
def test_checkpoint_configs_that_cannot_make_a_generator(config, words, tmp_path):
    G = Generator(res=32, nz=8, ngf=4)
    torch.save({"G_eval": G.state_dict(), "config": config}, tmp_path / "odd.pt")
    with pytest.raises(UserError, match=words):
        load_generator(tmp_path / "odd.pt")


def test_resuming_needs_the_discriminators_settings_too(tmp_path):
    config = {k: v for k, v in CONFIG.items() if k != "d_norm"}
    torch.save({"G_eval": {}, "opt_d": {}, "config": config}, tmp_path / "no_d.pt")
    with pytest.raises(UserError, match="lacks d_norm"):
        load_training_checkpoint(tmp_path / "no_d.pt")


# ---------------------------------------------------------------------------------------------- devices, hosts

@pytest.mark.skipif(torch.backends.mps.is_available(), reason="this machine has an Apple GPU")
def test_mps_where_there_is_none_is_one_line(tmp_path):
    assert_one_line_error(train(tmp_path, "--device", "mps"), "--device mps", "use --device cpu")
    assert_one_line_error(run_script("generate.py", "--ckpt", "x.pt", "--device", "mps:0", cwd=tmp_path,
                                     check=False), "--device mps:0")
    assert not list(tmp_path.iterdir())


def test_mps_resolves_where_torch_has_it_and_auto_never_picks_it(monkeypatch):
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: True)
    assert resolve_device("mps") == torch.device("mps") and resolve_device("mps:0").type == "mps"
    with pytest.raises(UserError, match="one GPU"):
        resolve_device("mps:1")
    assert resolve_device("auto").type in ("cuda", "cpu")


def test_explorer_refuses_a_wildcard_or_unknown_host_before_loading(tmp_path):
    for host, words in (("0.0.0.0", "every interface"), ("::", "every interface"),
                        ("no-such-host.invalid", "no such address")):
        result = run_script("explore.py", "--ckpt", "missing.pt", "--host", host, cwd=tmp_path, check=False)
        assert_one_line_error(result, "--host", words)


def test_missing_data_names_the_command_that_makes_it(tmp_path):
    assert_one_line_error(train(tmp_path, "--data", "data/celeba64"), "--data data/celeba64 does not exist",
                          "python preprocess.py --src img_align_celeba.zip --out data/celeba64 --res 32 --crop celeba")
    assert_one_line_error(train(tmp_path, "--data", "data/anime96"), "--out data/anime96 --res 32 --crop none")
