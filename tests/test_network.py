import pytest
import torch
from conftest import run_script

import network
from fakefacegen.network import (
    RESOLUTIONS,
    Discriminator,
    Generator,
    generator_from_config,
    init_dcgan,
    models_from_config,
)
from fakefacegen.settings import DEFAULTS
from fakefacegen.training.iteration import METRICS, train_iteration
from fakefacegen.training.state import make_optimizer


@pytest.mark.parametrize("res", RESOLUTIONS)
def test_shapes_for_every_resolution(res):
    width = 4 if res == 256 else 8
    G, D = Generator(res, nz=16, ngf=width), Discriminator(res, ndf=width)
    z = torch.randn(3, 16)
    x = G(z)
    assert x.shape == (3, 3, res, res)
    assert x.min() >= -1 and x.max() <= 1  # Tanh output
    assert D(x).shape == (3,)
    assert G(z.reshape(3, 16, 1, 1)).shape == x.shape  # both latent layouts are accepted


def test_96_px_starts_from_a_3x3_map():
    G = Generator(96, nz=8, ngf=4)
    assert G.main[0](torch.randn(1, 8, 1, 1)).shape[-1] == 3
    D = Discriminator(96, ndf=4)
    assert D.main[-1].kernel_size == (3, 3)


def test_leaky_generator_and_unnormalised_discriminator():
    G = Generator(32, nz=8, ngf=8, act="leaky")
    assert any(isinstance(m, torch.nn.LeakyReLU) for m in G.modules())
    assert not any(isinstance(m, torch.nn.ReLU) for m in G.modules())
    D = Discriminator(32, ndf=8, norm="none")
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in D.modules())
    with pytest.raises(ValueError):
        Generator(48)


def test_dcgan_init_statistics():
    torch.manual_seed(0)
    G = init_dcgan(Generator(64, nz=100, ngf=64))
    D = init_dcgan(Discriminator(64, ndf=64))
    convs = [m.weight for net in (G, D) for m in net.modules()
             if isinstance(m, (torch.nn.Conv2d, torch.nn.ConvTranspose2d))]
    weights = torch.cat([w.flatten() for w in convs])
    assert abs(weights.mean().item()) < 1e-3
    assert abs(weights.std().item() - 0.02) < 5e-4
    bn = [m for net in (G, D) for m in net.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    gammas = torch.cat([m.weight.flatten() for m in bn])
    assert abs(gammas.mean().item() - 1) < 3e-3 and abs(gammas.std().item() - 0.02) < 3e-3
    assert all(m.bias.abs().max() == 0 for m in bn)
    assert all(m.bias is None or m.bias.abs().max() == 0 for net in (G, D) for m in net.modules()
               if isinstance(m, (torch.nn.Conv2d, torch.nn.ConvTranspose2d)))


@pytest.mark.parametrize("optim", ["adam", "sgd", "rmsprop"])
def test_one_iteration_changes_both_nets(optim):
    torch.manual_seed(0)
    cfg = {**DEFAULTS, "batch_size": 8, "nz": 16, "optim": optim, "g_steps": 2, "d_steps": 1}
    G, D = init_dcgan(Generator(32, 16, 8)), init_dcgan(Discriminator(32, 8))
    before_g = [p.detach().clone() for p in G.parameters()]
    before_d = [p.detach().clone() for p in D.parameters()]
    opt_g, opt_d = make_optimizer(G.parameters(), cfg, 2e-4), make_optimizer(D.parameters(), cfg, 2e-4)
    real = torch.rand(8, 3, 32, 32) * 2 - 1
    metrics = train_iteration(G, D, opt_g, opt_d, [real], cfg, lambda n: torch.randn(n, 16))
    assert metrics.shape == (len(METRICS),) and torch.isfinite(metrics).all()
    assert 0 < metrics[2] < 1 and 0 < metrics[3] < 1  # D(x) and D(G(z)) are probabilities
    assert all(not torch.equal(a, b) for a, b in zip(before_g, G.parameters()))
    assert all(not torch.equal(a, b) for a, b in zip(before_d, D.parameters()))


def test_network_command_prints_every_layer_and_the_parameter_counts(tmp_path):
    out = run_script("network.py", "--res", "96", "--ngf", "16", "--ndf", "8", "--mbstd", "4", cwd=tmp_path,
                     separate=True).stdout
    G, D = models_from_config({**DEFAULTS, "res": 96, "ngf": 16, "ndf": 8, "mbstd": 4}, "cpu")
    assert f"G (96 px, nz 100, ngf 16, relu): {sum(p.numel() for p in G.parameters()):,} parameters" in out
    assert f"{sum(p.numel() for p in D.parameters()):,} parameters" in out
    assert "16 x 48 x 48" in out and "3 x 96 x 96" in out and "MinibatchStdDev" in out  # last G block, D's mbstd


def test_the_networks_are_importable_from_network_py():
    """As in any classic training-script repo: `from network import Generator, Discriminator`."""
    G = network.Generator(32, nz=16, ngf=8)
    assert G(torch.randn(2, 16)).shape == (2, 3, 32, 32)
    assert network.Discriminator is Discriminator and network.generator_from_config is generator_from_config
