import json

import numpy as np
import torch
from conftest import assert_one_line_error, run_script
from PIL import Image

from fakefacegen.data.dataloader import epoch_batches, open_dataset, to_model_input
from fakefacegen.data.toyfaces import TOY_ATTRIBUTES, toyfaces


def test_toyfaces_depend_only_on_seed_and_index():
    batch, attrs = toyfaces([5, 6, 7], 64, seed=3)
    alone, _ = toyfaces([6], 64, seed=3)
    assert batch.dtype == np.uint8 and batch.shape == (3, 64, 64, 3)
    assert np.array_equal(batch[1], alone[0])
    assert not np.array_equal(toyfaces([6], 64, seed=4)[0], alone)
    assert set(attrs) == set(TOY_ATTRIBUTES)


def test_toyfaces_vary_and_attributes_show():
    images, attrs = toyfaces(range(400), 64)
    assert images.std(axis=0).mean() > 20  # faces differ from each other
    for name, values in attrs.items():
        assert 0.15 < values.mean() < 0.7, name  # every attribute occurs, and not everywhere
    # Smiling faces show teeth: more near-white pixels in the mouth region than the others.
    mouth = images[:, 40:52, 20:44].astype(float)
    white = (mouth.min(axis=3) > 225).mean(axis=(1, 2))
    assert white[attrs["smile"] == 1].mean() > 3 * white[attrs["smile"] == 0].mean()
    # Blond faces are brighter at the top of the head than dark-haired ones on average.
    hair_rows = images[:, 4:14, 24:40].mean(axis=(1, 2, 3))
    assert hair_rows[attrs["blond"] == 1].mean() > hair_rows[attrs["blond"] == 0].mean() + 20


def test_packed_dataset_round_trip(tmp_path):
    images = np.random.default_rng(0).integers(0, 256, (10, 32, 32, 3), dtype=np.uint8)
    np.save(tmp_path / "images.npy", images)
    (tmp_path / "dataset.json").write_text(json.dumps({"format": "fakefacegen-packed", "count": 10, "res": 32}))
    dataset = open_dataset(str(tmp_path), 32)
    batch, skipped = dataset[[7, 2]]
    assert skipped == 0 and torch.equal(batch, torch.from_numpy(images[[7, 2]]))  # in the order asked


def test_epoch_batches_cover_the_data_once_and_repeat_per_seed():
    batches = epoch_batches(100, 16, seed=1, epoch=0)
    assert batches.shape == (6, 16) and len(set(batches.flatten().tolist())) == 96  # the last partial is dropped
    assert torch.equal(batches, epoch_batches(100, 16, seed=1, epoch=0))
    assert not torch.equal(batches, epoch_batches(100, 16, seed=1, epoch=1))


def test_model_input_scaling_and_flip():
    batch = torch.from_numpy(toyfaces([0, 1], 32)[0])
    x = to_model_input(batch, "cpu")
    assert x.shape == (2, 3, 32, 32) and x.min() >= -1 and x.max() <= 1
    assert torch.allclose(x[0, :, 0, 0], batch[0, 0, 0].float() / 127.5 - 1)
    flipped = to_model_input(batch, "cpu", torch.tensor([True, False]))
    assert torch.equal(flipped[0], x[0].flip(2)) and torch.equal(flipped[1], x[1])


def test_dataloader_command_shows_the_first_batch_as_d_sees_it(tmp_path):
    result = run_script("dataloader.py", "--res", "32", "--toy-size", "200", "--batch-size", "16", "--flip",
                        "--diffaug", "cutout", "--batches", "3", "--device", "cpu", "--out", "b.png", cwd=tmp_path,
                        separate=True)
    assert "200 images, batches of 16" in result.stdout and "over 3 batches" in result.stdout
    grid = np.asarray(Image.open(tmp_path / "b.png"))
    assert grid.shape == (4 * 34 + 2, 4 * 34 + 2, 3)  # 16 faces of 32 px, 4 x 4 with 2 px gaps
    assert (grid == 128).all(axis=2).sum() > 16 * 100  # cutout's grey squares (0 in [-1, 1])
    assert_one_line_error(run_script("dataloader.py", "--batches", "0", cwd=tmp_path, check=False), "--batches")
