"""The networks a run trains: DCGAN's generator and discriminator (fakefacegen/network.py), layer by layer with
each layer's output shape and parameters, for the settings of a config or of train.py's flags. Imported, it
gives the networks themselves, as in any training-script repo: `from network import Generator, Discriminator`.

    python network.py                                   # 64 px, ngf = ndf = 64: what train.py builds by default
    python network.py --config configs/celeba128.toml   # a config's networks
    python network.py --res 96 --ngf 32 --d-norm spectral --mbstd 4
"""
import fakefacegen  # noqa: F401  (first: an older Python stops there with one line)

# isort: split
import torch

from fakefacegen.cli import run
from fakefacegen.network import Discriminator, Generator, generator_from_config, models_from_config
from fakefacegen.settings import parse_settings

__all__ = ["Discriminator", "Generator", "generator_from_config", "models_from_config"]


def layer_rows(model, x):
    """[(layer, output shape, parameters)] of each layer of model.main on the input x."""
    rows = []

    def record(module, inputs, output):
        rows.append((type(module).__name__ + describe(module), " x ".join(map(str, output.shape[1:])),
                     sum(p.numel() for p in module.parameters())))

    hooks = [layer.register_forward_hook(record) for layer in model.main]
    with torch.no_grad():
        model.eval()(x)
    for hook in hooks:
        hook.remove()
    return rows


def describe(module):
    """A convolution's channels, kernel and stride; nothing for other layers."""
    if isinstance(module, (torch.nn.Conv2d, torch.nn.ConvTranspose2d)):
        return f"({module.in_channels} -> {module.out_channels}, {module.kernel_size[0]}x{module.kernel_size[1]}, " \
               f"stride {module.stride[0]})"
    return ""


def print_table(title, rows):
    total = sum(count for _, _, count in rows)
    print(f"{title}: {total:,} parameters")
    print(f"  {'layer':<48} {'output':<16} parameters")
    for name, shape, count in rows:
        print(f"  {name:<48} {shape:<16} {count:,}")


def main(argv=None):
    cfg, _ = parse_settings(argv, __doc__)
    G, D = models_from_config(cfg, "cpu")
    z = torch.randn(4, cfg["nz"])
    print_table(f"G ({cfg['res']} px, nz {cfg['nz']}, ngf {cfg['ngf']}, {cfg['g_act']})", layer_rows(G, z))
    print()
    images = torch.zeros(4, 3, cfg["res"], cfg["res"])
    print_table(f"D ({cfg['res']} px, ndf {cfg['ndf']}, {cfg['d_norm']} norm, mbstd {cfg['mbstd']})",
                layer_rows(D, images))


if __name__ == "__main__":
    run(main)
