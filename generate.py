"""Sample faces from a trained generator: a grid, one PNG per face, or an interpolation strip and GIF.

    python generate.py --ckpt checkpoints/<run>/latest.pt               # 8x8 grid of seeds 0..63
    python generate.py --ckpt ... --seed 100 --n 16 --individual        # 16 PNGs, seeds 100..115
    python generate.py --ckpt ... --interp 5                            # a loop through 5 seeds
"""
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from cli import ArgumentParser, UserError, atomic_path, resolve_device, run
from network import Generator

INTERP_FRAMES = 12  # frames between two seeds
ARCHITECTURE_KEYS = ("res", "nz", "ngf", "g_act")


def load_checkpoint(path, device="cpu"):
    """A training checkpoint as a dict of tensors and plain values; a bad file is a UserError."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"checkpoint {path} not found: pass a file from checkpoints/<run>/")
    try:
        ckpt = torch.load(path, map_location=device, weights_only=True)
    except Exception as err:  # truncated zip, pickle of code, random bytes: all mean "not a checkpoint"
        reason = str(err).strip().splitlines()[0][:120] if str(err).strip() else type(err).__name__
        raise UserError(f"{path} is not a readable checkpoint ({reason}): use another file from the run, "
                        "e.g. latest.pt or an epoch_NNN.pt") from None
    if not isinstance(ckpt, dict) or not {"G_eval", "config"} <= set(ckpt):
        raise UserError(f"{path} is not a FakeFaceGen checkpoint (no generator inside): pass one written "
                        "by train.py")
    return ckpt


def generator_from_config(config):
    return Generator(config["res"], config["nz"], config["ngf"], config["g_act"])


def load_generator(path, device="cpu"):
    """The checkpoint's sampling generator (eval mode, BatchNorm statistics recalibrated) and its config."""
    ckpt = load_checkpoint(path, device)
    config = ckpt["config"]
    G = generator_from_config(config).to(device)
    try:
        G.load_state_dict(ckpt["G_eval"])
    except RuntimeError:
        raise UserError(f"{path}: the weights do not fit the architecture in its config") from None
    return G.eval(), config


def sample_noise(seeds, nz):
    """One latent vector per seed, each from its own generator: seed s gives the same face whatever --n is."""
    return torch.stack([torch.randn(nz, generator=torch.Generator().manual_seed(int(s))) for s in seeds])


@torch.no_grad()
def render(G, z, device, batch_size=256):
    """Latents -> uint8 images (N, H, W, 3), in batches; eval mode makes each image independent of the rest."""
    images = []
    for chunk in z.split(batch_size):
        x = G(chunk.to(device)).float()
        images.append(x.add(1).mul(127.5).round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).cpu())
    return torch.cat(images).numpy()


def grid_image(images, ncols=None, pad=2):
    """uint8 (N, H, W, 3) -> one PIL image of a near-square grid (or `ncols` wide) with white gaps."""
    n, h, w, _ = images.shape
    ncols = ncols or int(np.ceil(np.sqrt(n)))
    nrows = int(np.ceil(n / ncols))
    canvas = np.full((nrows * (h + pad) + pad, ncols * (w + pad) + pad, 3), 255, np.uint8)
    for i, image in enumerate(images):
        r, c = divmod(i, ncols)
        canvas[pad + r * (h + pad):pad + r * (h + pad) + h, pad + c * (w + pad):pad + c * (w + pad) + w] = image
    return Image.fromarray(canvas)


def save_png(image, path):
    with atomic_path(path) as tmp:
        image.save(tmp, format="PNG")


def slerp(a, b, t):
    """Spherical interpolation: keeps the norm that Gaussian latents concentrate around."""
    cos = torch.dot(a / a.norm(), b / b.norm()).clamp(-1, 1)
    omega = torch.arccos(cos)
    if omega.abs() < 1e-4:
        return (1 - t) * a + t * b
    return (torch.sin((1 - t) * omega) * a + torch.sin(t * omega) * b) / torch.sin(omega)


def interpolation_latents(z, frames):
    """Frames along slerp paths z0 -> z1 -> ... -> z0, so the GIF loops without a jump."""
    path = []
    for a, b in zip(z, torch.roll(z, -1, 0)):
        path += [slerp(a, b, t) for t in torch.arange(frames) / frames]
    return torch.stack(path)


def default_output(ckpt_path, name):
    run_name = Path(ckpt_path).resolve().parent.name
    return Path("outputs") / run_name / "generated" / name


def build_parser():
    p = ArgumentParser(description=__doc__)
    p.add_argument("--ckpt", required=True, help="checkpoint written by train.py (latest.pt, epoch_NNN.pt)")
    p.add_argument("--n", type=int, default=64, help="how many faces (default 64, an 8x8 grid)")
    p.add_argument("--seed", type=int, default=0, help="first seed; face i uses seed+i (default 0)")
    p.add_argument("--out", help="output PNG (or folder with --individual); default outputs/<run>/generated/")
    p.add_argument("--individual", action="store_true", help="one PNG per face instead of a grid")
    p.add_argument("--fixed", action="store_true", help="the run's fixed noise: the grid training drew")
    p.add_argument("--interp", type=int, metavar="K", help="interpolate through K seeds: a strip PNG and a GIF")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    return p


def main(argv=None):
    args = build_parser().parse_args(argv)
    if args.n < 1 or (args.interp is not None and args.interp < 2):
        raise UserError("--n must be at least 1 and --interp at least 2")
    device = resolve_device(args.device)
    G, config = load_generator(args.ckpt, device)
    if args.interp:
        z = interpolation_latents(sample_noise(range(args.seed, args.seed + args.interp), config["nz"]),
                                  INTERP_FRAMES)
        frames = render(G, z, device)
        out = Path(args.out or default_output(args.ckpt, f"interp_seed{args.seed}_k{args.interp}.png"))
        save_png(grid_image(frames, ncols=INTERP_FRAMES), out)
        gif = out.with_suffix(".gif")
        with atomic_path(gif) as tmp:
            pictures = [Image.fromarray(f) for f in frames]
            pictures[0].save(tmp, format="GIF", save_all=True, append_images=pictures[1:], duration=80, loop=0)
        print(f"wrote {out} ({args.interp} seeds, {len(frames)} frames) and {gif}")
        return
    if args.fixed:
        z = load_checkpoint(args.ckpt)["fixed_noise"]
        name = "fixed.png"
    else:
        z = sample_noise(range(args.seed, args.seed + args.n), config["nz"])
        name = f"seed{args.seed}_n{args.n}.png"
    images = render(G, z, device)
    if args.individual:
        folder = Path(args.out or default_output(args.ckpt, f"seed{args.seed}_n{args.n}"))
        first = 0 if args.fixed else args.seed
        for i, image in enumerate(images):
            save_png(Image.fromarray(image), folder / f"{first + i:06d}.png")
        print(f"wrote {len(images)} PNGs to {folder}/")
    else:
        out = Path(args.out or default_output(args.ckpt, name))
        save_png(grid_image(images), out)
        print(f"wrote {out} ({len(images)} faces at {config['res']} px)")


if __name__ == "__main__":
    run(main)
