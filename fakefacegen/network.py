"""DCGAN generator and discriminator (Radford et al., 2015) for square images of 32 to 256 px."""
import math

import torch
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm
from torch.nn.utils.parametrize import is_parametrized

RESOLUTIONS = (32, 64, 96, 128, 256)
D_NORMS = ("batch", "none", "spectral")
G_ARCHITECTURE_KEYS = ("res", "nz", "ngf", "g_act")  # the settings a generator's weights depend on
D_ARCHITECTURE_KEYS = ("ndf", "d_norm", "mbstd")
MAX_WIDTH_MULT = 16  # caps the widest layer at 16*ngf so 256 px stays a reasonable size


def _start_size(res):
    """The side of the first feature map: 3 for 96 px (3*2^5), 4 for the powers of two."""
    if res not in RESOLUTIONS:
        raise ValueError(f"resolution {res} is not one of {RESOLUTIONS}")
    return 3 if res == 96 else 4


def _num_doublings(res):
    return round(math.log2(res // _start_size(res)))


def _widths(res, base):
    """Channel counts from the smallest feature map to the largest, e.g. 64 px, base 64: 512, 256, 128, 64."""
    n = _num_doublings(res)
    return [base * min(2 ** (n - 1 - i), MAX_WIDTH_MULT) for i in range(n)]


class Generator(nn.Module):
    """z (nz) -> a start map of 4x4 (3x3 at 96 px) -> doubled by transposed convolutions -> RGB in [-1, 1]."""

    def __init__(self, res=64, nz=100, ngf=64, act="relu"):
        super().__init__()
        if act not in ("relu", "leaky"):
            raise ValueError(f"generator activation must be relu or leaky, not {act!r}")
        self.res, self.nz = res, nz
        widths = _widths(res, ngf)

        def activation():
            return nn.ReLU(inplace=True) if act == "relu" else nn.LeakyReLU(0.2, inplace=True)

        k = _start_size(res)
        layers = [nn.ConvTranspose2d(nz, widths[0], k, 1, 0, bias=False), nn.BatchNorm2d(widths[0]), activation()]
        for c_in, c_out in zip(widths, widths[1:]):
            layers += [nn.ConvTranspose2d(c_in, c_out, 4, 2, 1, bias=False), nn.BatchNorm2d(c_out), activation()]
        layers += [nn.ConvTranspose2d(widths[-1], 3, 4, 2, 1, bias=False), nn.Tanh()]
        self.main = nn.Sequential(*layers)

    def forward(self, z):
        return self.main(z.reshape(z.shape[0], self.nz, 1, 1))


class Discriminator(nn.Module):
    """RGB -> halved by strided convolutions down to 4x4 (3x3 at 96 px) -> one logit per image.

    norm: "batch" (DCGAN), "none" (WGAN-GP's penalty is per sample, which BatchNorm would mix), or
    "spectral" (every layer's weight divided by its largest singular value: a 1-Lipschitz D without
    batch statistics). No BatchNorm on the first layer, as in DCGAN. mbstd: the group size of a minibatch
    standard deviation feature before the last layer (ProGAN), 0 for none.
    """

    def __init__(self, res=64, ndf=64, norm="batch", mbstd=0):
        super().__init__()
        if norm not in D_NORMS:
            raise ValueError(f"discriminator norm must be one of {D_NORMS}, not {norm!r}")
        self.res = res
        widths = _widths(res, ndf)[::-1]
        layers = [nn.Conv2d(3, widths[0], 4, 2, 1, bias=norm != "batch"), nn.LeakyReLU(0.2, inplace=True)]
        for c_in, c_out in zip(widths, widths[1:]):
            layers += [nn.Conv2d(c_in, c_out, 4, 2, 1, bias=norm != "batch")]
            if norm == "batch":
                layers += [nn.BatchNorm2d(c_out)]
            layers += [nn.LeakyReLU(0.2, inplace=True)]
        if mbstd:  # one more feature map before the last layer: how much the images of a group differ
            layers += [MinibatchStdDev(mbstd)]
        layers += [nn.Conv2d(widths[-1] + (1 if mbstd else 0), 1, _start_size(res), 1, 0)]
        if norm == "spectral":
            layers = [spectral_norm(m) if isinstance(m, nn.Conv2d) else m for m in layers]
        self.main = nn.Sequential(*layers)

    def forward(self, x):
        return self.main(x).reshape(-1)


class MinibatchStdDev(nn.Module):
    """ProGAN's minibatch standard deviation: one feature map holding the average standard deviation of the
    features across a group of images. A batch of near-identical fakes then looks unlike a batch of real
    faces, so D can penalise mode collapse. Groups are taken as in StyleGAN: image i is in group i % (N / g),
    with g the largest size up to `group` that divides the batch."""

    def __init__(self, group=4):
        super().__init__()
        self.group = group

    def forward(self, x):
        n, c, h, w = x.shape
        g = max(size for size in range(1, min(self.group, n) + 1) if n % size == 0)
        y = x.float().reshape(g, -1, c, h, w)
        std = (y - y.mean(0)).square().mean(0).add(1e-8).sqrt().mean((1, 2, 3))  # one value per group
        return torch.cat([x, std.to(x.dtype).reshape(-1, 1, 1, 1).repeat(g, 1, h, w)], 1)


def init_dcgan(model):
    """DCGAN's init: conv weights ~ N(0, 0.02), BatchNorm weights ~ N(1, 0.02), every bias 0."""
    for module in model.modules():
        if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d)):
            # Under spectral norm the stored weight is `original`; `weight` is computed from it.
            weight = module.parametrizations.weight.original if is_parametrized(module, "weight") else module.weight
            nn.init.normal_(weight, 0.0, 0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.BatchNorm2d):
            nn.init.normal_(module.weight, 1.0, 0.02)
            nn.init.zeros_(module.bias)
    return model


def generator_from_config(cfg):
    return Generator(cfg["res"], cfg["nz"], cfg["ngf"], cfg["g_act"])


def discriminator_from_config(cfg):
    return Discriminator(cfg["res"], cfg["ndf"], cfg["d_norm"], cfg["mbstd"])


def models_from_config(cfg, device):
    """G and D as cfg describes them, initialised from cfg["seed"]: the initial weights are part of what a
    seed reproduces."""
    torch.manual_seed(cfg["seed"])
    G = generator_from_config(cfg)
    D = discriminator_from_config(cfg)
    if cfg["init"] == "dcgan":
        init_dcgan(G)
        init_dcgan(D)
    return G.to(device), D.to(device)
