"""Steps that can run for minutes on a CPU show a progress bar once they have run PROGRESS_DELAY_S seconds, and
none when they end sooner: BatchNorm re-estimation, Inception features, projecting a photo."""
import numpy as np
import pytest
import torch

from fakefacegen import cli
from fakefacegen.editing.projection import project
from fakefacegen.metrics.inception import features_of_images
from fakefacegen.network import Generator
from fakefacegen.sampling import recalibrated_copy


def pool3_stand_in(x):
    return torch.zeros(len(x), 2048)


STEPS = {
    "BatchNorm re-estimation": lambda G: recalibrated_copy(G, 64, G.nz, "cpu", batch_size=16),
    "fake features": lambda G: features_of_images(pool3_stand_in, [np.zeros((4, 32, 32, 3), np.uint8)] * 2, "cpu",
                                                  total=8, desc="fake features"),
    "projecting": lambda G: project(G, np.zeros((32, 32, 3), np.uint8), starts=2, steps=3),
}


@pytest.mark.parametrize("desc", STEPS)
def test_a_slow_step_shows_a_bar_and_a_quick_one_none(desc, capsys, monkeypatch):
    torch.manual_seed(0)
    G = Generator(32, 16, 8, "relu")
    STEPS[desc](G)  # well under the delay: silent
    assert desc not in capsys.readouterr().err
    monkeypatch.setattr(cli, "PROGRESS_DELAY_S", 0)  # as if it had run that long already
    STEPS[desc](G)
    assert desc in capsys.readouterr().err
