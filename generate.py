"""Sample faces from a trained generator: a grid, one PNG per face, or an interpolation strip and GIF.

    python generate.py --ckpt checkpoints/<run>/latest.pt               # 8x8 grid of seeds 0..63
    python generate.py --ckpt ... --seed 100 --n 16 --individual        # 16 PNGs, seeds 100..115
    python generate.py --ckpt ... --interp 5                            # a loop through 5 seeds
"""
from pathlib import Path

from PIL import Image

from checkpoint import generator_from_state, load_checkpoint
from cli import ArgumentParser, UserError, resolve_device, run
from files import atomic_path, save_png
from runs import output_dir, run_of_checkpoint
from grids import grid_image
from sampling import interpolation_latents, render, sample_noise

INTERP_FRAMES = 12  # frames between two seeds


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


def output_path(args, name):
    """--out, else outputs/<run of the checkpoint>/generated/<name>."""
    return Path(args.out or output_dir(run_of_checkpoint(args.ckpt)) / "generated" / name)


def write_interpolation(args, G, nz, device):
    """A strip of every frame (one row per pair of seeds) and a looping GIF beside it."""
    z = interpolation_latents(sample_noise(range(args.seed, args.seed + args.interp), nz), INTERP_FRAMES)
    frames = render(G, z, device)
    out = output_path(args, f"interp_seed{args.seed}_k{args.interp}.png")
    save_png(grid_image(frames, ncols=INTERP_FRAMES), out)
    gif = out.with_suffix(".gif")
    with atomic_path(gif) as tmp:
        pictures = [Image.fromarray(f) for f in frames]
        pictures[0].save(tmp, format="GIF", save_all=True, append_images=pictures[1:], duration=80, loop=0)
    print(f"wrote {out} ({args.interp} seeds, {len(frames)} frames) and {gif}")


def write_samples(args, images, res):
    """One grid PNG, or one PNG per face named by its seed."""
    if args.individual:
        folder = output_path(args, f"seed{args.seed}_n{args.n}")
        first = 0 if args.fixed else args.seed
        for i, image in enumerate(images):
            save_png(Image.fromarray(image), folder / f"{first + i:06d}.png")
        print(f"wrote {len(images)} PNGs to {folder}/")
    else:
        out = output_path(args, "fixed.png" if args.fixed else f"seed{args.seed}_n{args.n}.png")
        save_png(grid_image(images), out)
        print(f"wrote {out} ({len(images)} faces at {res} px)")


def main(argv=None):
    args = build_parser().parse_args(argv)
    if args.n < 1 or (args.interp is not None and args.interp < 2):
        raise UserError("--n must be at least 1 and --interp at least 2")
    device = resolve_device(args.device)
    ckpt = load_checkpoint(args.ckpt, device)
    G, config = generator_from_state(ckpt, args.ckpt, device), ckpt["config"]
    if args.interp:
        write_interpolation(args, G, config["nz"], device)
        return
    if args.fixed and "fixed_noise" not in ckpt:
        raise UserError(f"{args.ckpt} holds no fixed noise (a sampler-only file): drop --fixed")
    z = ckpt["fixed_noise"].cpu() if args.fixed else sample_noise(range(args.seed, args.seed + args.n), config["nz"])
    write_samples(args, render(G, z, device), config["res"])


if __name__ == "__main__":
    run(main)
