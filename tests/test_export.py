"""generate.py --export: the shared file samples the checkpoint's faces exactly (through generate.py and through
evaluate_fid's loader), holds the settings and a summary in its metadata, comes with a model card, never
overwrites without --force, and every way it cannot stand in for a training checkpoint is one line."""
import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest
import torch
from conftest import REPO, TINY, assert_one_line_error, run_script
from PIL import Image
from safetensors import safe_open
from safetensors.torch import save_file

from fakefacegen import export
from fakefacegen.checkpoint import load_checkpoint, load_generator
from fakefacegen.cli import UserError
from fakefacegen.export import code_commit, data_licence, model_card
from fakefacegen.metrics.fid_sources import open_source


@pytest.fixture(scope="module")
def exported(tiny_run):
    """(working dir, checkpoint, exported file) of the tiny run."""
    cwd, ckpt = tiny_run
    result = run_script("generate.py", "--ckpt", ckpt, "--export", "shared/g.safetensors", "--device", "cpu", cwd=cwd)
    assert "wrote shared/g.safetensors" in result.stdout and "shared/g.md" in result.stdout
    return cwd, ckpt, cwd / "shared" / "g.safetensors"


def pngs(folder):
    return {p.name: np.asarray(Image.open(p)) for p in sorted(folder.iterdir())}


def test_the_exported_file_draws_the_same_faces(exported):
    cwd, ckpt, path = exported
    for name, source in (("from_ckpt", ckpt), ("from_export", path)):
        run_script("generate.py", "--ckpt", source, "--n", "5", "--seed", "40", "--individual", "--out", name,
                   "--device", "cpu", cwd=cwd)
    from_ckpt, from_export = pngs(cwd / "from_ckpt"), pngs(cwd / "from_export")
    assert list(from_ckpt) == [f"{seed:06d}.png" for seed in range(40, 45)]
    assert all(np.array_equal(from_ckpt[name], from_export[name]) for name in from_ckpt)
    # evaluate_fid's reading of a source: a .safetensors is a checkpoint there too, with the same samples
    sides = [open_source(str(source), 6, 64, 3, torch.device("cpu")) for source in (ckpt, path)]
    assert [side.kind for side, _ in sides] == ["checkpoint", "checkpoint"]
    assert sides[0][1] == sides[1][1]  # the same config: the real side defaults to the same data
    batches = [np.concatenate(list(side.batches(4))) for side, _ in sides]
    assert batches[0].shape == (6, 32, 32, 3) and np.array_equal(batches[0], batches[1])


def test_metadata_and_model_card(exported):
    _, ckpt, path = exported
    saved = torch.load(ckpt, weights_only=True)
    with safe_open(str(path), framework="pt") as f:
        meta, keys = f.metadata(), set(f.keys())
    assert keys == set(saved["G_eval"])  # G_eval alone: no D, no optimisers
    assert json.loads(meta["config"]) == saved["config"] and meta["format"] == "fakefacegen-generator"
    assert json.loads(meta["architecture"]) == {"res": 32, "nz": 100, "ngf": 8, "g_act": "relu"}
    assert (meta["res"], meta["step"], meta["data"]) == ("32", "6", "toyfaces") and "best_fid" not in meta
    loaded = load_checkpoint(path)
    assert loaded["config"] == saved["config"] and loaded["step"] == 6
    assert all(torch.equal(loaded["G_eval"][k], saved["G_eval"][k]) for k in keys)
    card = path.with_suffix(".md").read_text()
    assert "**Data:** toyfaces" in card and "32 px" in card and "6 iterations" in card
    assert "not measured" in card and "synthetic" in card


def test_the_card_states_fid_and_the_data_licence():
    ckpt = {"G_eval": {}, "step": 12345, "epoch": 25, "best_fid": 23.456,
            "config": {"res": 64, "nz": 100, "data": "data/celeba64", "fid_n": 5000, "fid_real": ""}}
    card = model_card(ckpt, "celeba.safetensors")
    assert "12,345 iterations, 25 epochs" in card and "23.46" in card and "5000 samples against data/celeba64" in card
    one = model_card({**ckpt, "step": 1, "epoch": 1}, "celeba.safetensors")
    assert "- **Training:** 1 iteration, 1 epoch," in one
    assert "non-commercial research only" in card
    assert "synthetic" in data_licence(None) and "synthetic" in data_licence("toyfaces")
    assert "artists" in data_licence("data/anime96") and "unknown" in data_licence("data/faces")


def test_export_never_overwrites_without_force(exported):
    cwd, ckpt, path = exported
    card = path.with_suffix(".md")
    before = path.read_bytes(), card.read_text()
    (cwd / "notes.md").write_text("mine")  # a card's name taken by another file is refused too
    for target in (path, cwd / "notes.safetensors"):
        result = run_script("generate.py", "--ckpt", ckpt, "--export", target, "--device", "cpu", cwd=cwd,
                            check=False)
        assert_one_line_error(result, "already exists", "--force")
    assert (path.read_bytes(), card.read_text()) == before and (cwd / "notes.md").read_text() == "mine"
    assert not (cwd / "notes.safetensors").exists()
    path.write_bytes(b"stale")
    run_script("generate.py", "--ckpt", ckpt, "--export", path, "--force", "--device", "cpu", cwd=cwd)
    assert path.read_bytes() == before[0] and card.read_text() == before[1]


def test_bad_export_requests_are_one_line(exported, tmp_path):
    cwd, ckpt, path = exported
    for args, words in ((["--export", "g.pt"], ["must end in .safetensors"]),
                        (["--export", "x.safetensors", "--individual"], ["drop --individual"]),
                        (["--export", "x.safetensors", "--out", "y.png"], ["drop --out"]),
                        (["--force"], ["--force replaces files named by --out or --export"])):
        assert_one_line_error(run_script("generate.py", "--ckpt", ckpt, *args, cwd=tmp_path, check=False), *words)
    assert not list(tmp_path.iterdir())


def test_what_an_exported_file_cannot_do_is_one_line(exported, tmp_path):
    cwd, _, path = exported
    assert_one_line_error(run_script("generate.py", "--ckpt", path, "--fixed", cwd=cwd, check=False),
                          "no fixed noise")
    assert_one_line_error(run_script("train.py", *TINY, "--resume", path, "--run", "again", cwd=cwd, check=False),
                          "no optimiser state")
    foreign = tmp_path / "foreign.safetensors"
    save_file({"weight": torch.zeros(3)}, str(foreign))
    truncated = tmp_path / "truncated.safetensors"
    truncated.write_bytes(path.read_bytes()[:3000])
    for bad, words in ((foreign, "not a FakeFaceGen checkpoint"), (truncated, "not a readable generator file")):
        assert_one_line_error(run_script("generate.py", "--ckpt", bad, cwd=tmp_path, check=False), bad.name, words)
        with pytest.raises(UserError, match=words):
            open_source(str(bad), 4, 32, 0, torch.device("cpu"))


def front_matter(card):
    """The YAML block a model hub reads at the top of a card, as {key: value or [items]}."""
    assert card.startswith("---\n"), card[:40]
    block, found, key = card.split("---\n")[1], {}, None
    for line in block.splitlines():
        if line.startswith("- "):
            found[key].append(line[2:])
        else:
            key, value = line.split(": ", 1) if ": " in line else (line.rstrip(":"), None)
            found[key] = value if value is not None else []
    return found


def test_the_card_has_hub_metadata_the_commit_and_a_loading_snippet_that_works(exported):
    cwd, ckpt, path = exported
    card = path.with_suffix(".md").read_text()
    toy = front_matter(card)
    assert toy["library_name"] == "pytorch" and "dcgan" in toy["tags"] and toy["license"] == "unknown"
    assert "datasets" not in toy  # the toy faces are no hub data set
    celeba = front_matter(model_card({"G_eval": {}, "config": {"res": 64, "nz": 100, "data": "data/celeba64"}},
                                     "c.safetensors"))
    assert celeba["license"] == "other" and celeba["datasets"] == ["celeba"] and "CelebA" in celeba["license_link"]
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True).stdout.strip()
    assert f"commit {head or 'unknown'}" in card
    snippet = re.search(r"```python\n(.*?)```", card, re.S).group(1)
    probe = "\nwith torch.no_grad():\n    print(G(torch.ones(1, config['nz'])).sum().item())\n"
    result = subprocess.run([sys.executable, "-c", snippet + probe], cwd=path.parent, capture_output=True, text=True,
                            env={**os.environ, "PYTHONPATH": str(REPO)}, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    G, config = load_generator(ckpt)
    with torch.no_grad():
        expected = G(torch.ones(1, config["nz"])).sum().item()
    assert float(result.stdout.split()[-1]) == pytest.approx(expected, rel=1e-5)


def test_the_commit_is_unknown_outside_a_git_checkout(tmp_path, monkeypatch):
    monkeypatch.setattr(export, "REPOSITORY", tmp_path)
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path.parent))  # git must not find a repository above
    assert code_commit() == "unknown"
