"""Each bad input gets one `error:` line, exit status 2, and leaves existing files untouched."""
import hashlib

import torch

from conftest import TINY, assert_one_line_error, run_script


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
    assert_one_line_error(train(tmp_path, "--resume", "auto", "--run", "nothing"), "found no checkpoints")
    for bad in (truncated, foreign):
        assert_one_line_error(run_script("generate.py", "--ckpt", bad, cwd=cwd, check=False), str(bad.name))
    assert digest(ckpt) == before


def test_bad_flags(tmp_path):
    assert_one_line_error(train(tmp_path, "--batch-size", "0"), "--batch-size")
    assert_one_line_error(train(tmp_path, "--device", "tpu"), "--device")
    assert_one_line_error(train(tmp_path, "--toy-size", "8"), "fewer images")
    assert_one_line_error(train(tmp_path, "--res", "48"), "--res")  # argparse's own errors are one line too
