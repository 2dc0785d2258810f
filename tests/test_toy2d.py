import torch

from benchmarks import toy2d


def test_mode_counting_tells_coverage_from_collapse():
    generator = torch.Generator().manual_seed(0)
    for dataset in ("ring", "spiral"):
        real = toy2d.sample_real(dataset, 4000, generator)
        assert toy2d.covered_modes(real, dataset) == 8
        collapsed = real[toy2d.mode_of(real, dataset) == 3]
        assert toy2d.covered_modes(collapsed, dataset) == 1
        assert toy2d.covered_modes(real * 3, dataset) == 0  # points off the data cover nothing


def test_the_study_writes_its_figures(tmp_path):
    toy2d.main(["--steps", "20", "--methods", "gan,wgan-gp", "--out", str(tmp_path)])
    for name in ("gan.png", "wgan-gp.png", "modes.png"):
        assert (tmp_path / name).stat().st_size > 10_000
