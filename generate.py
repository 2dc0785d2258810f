"""Sample faces from a trained generator: a grid, one PNG per face, or an interpolation strip and GIF.

    python generate.py --ckpt checkpoints/<run>/latest.pt               # 8x8 grid of seeds 0..63
    python generate.py --ckpt ... --seed 100 --n 16 --individual        # 16 PNGs, seeds 100..115
    python generate.py --ckpt ... --interp 5                            # a loop through 5 seeds
    python generate.py --ckpt ... --truncation 0.7                      # calmer faces, less variety
    python generate.py --ckpt ... --export g.safetensors                # G_eval alone, to share, + g.md

--ckpt takes a training checkpoint or a generator exported with --export (its seeds give the same faces).
"""
import fakefacegen  # noqa: F401  (first: an older Python stops there with one line)

# isort: split
import math
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm

from fakefacegen.checkpoint import generator_from_state, load_checkpoint
from fakefacegen.cli import SEED, ArgumentParser, UserError, check_seeds, integer, number, resolve_device, run
from fakefacegen.export import check_export_target, write_export
from fakefacegen.files import atomic_path, check_output, path_kind, refuse_overwriting, save_png
from fakefacegen.grids import grid_image
from fakefacegen.runs import output_dir, run_of_checkpoint
from fakefacegen.sampling import interpolation_latents, render, sample_noise, truncate

INTERP_FRAMES = 12  # frames between two seeds
N_MAX = 1_000_000  # faces per call; --individual writes them a batch at a time, so memory stays flat
BATCH = 256  # faces rendered and written at a time
GRID_MAX_PIXELS = 100_000_000  # one grid PNG (0.3 GB as RGB): about 22,800 faces at 64 px, 1,400 at 256 px


def build_parser():
    p = ArgumentParser(description=__doc__)
    p.add_argument("--ckpt", required=True,
                   help="checkpoint written by train.py (latest.pt, epoch_NNN.pt) or a generator from --export")
    p.add_argument("--n", type=integer(1, N_MAX), default=64, help="how many faces (default 64, an 8x8 grid)")
    p.add_argument("--seed", type=SEED, default=0, help="first seed; face i uses seed+i (default 0)")
    p.add_argument("--out", help="output .png (or folder with --individual); default outputs/<run>/generated/, "
                   "where a name carries its settings and is rewritten")
    p.add_argument("--individual", action="store_true", help="one PNG per face instead of a grid")
    p.add_argument("--fixed", action="store_true", help="the run's fixed noise: the grid training drew")
    p.add_argument("--interp", type=integer(2, 100), metavar="K",
                   help="interpolate through K seeds: a strip PNG and a GIF")
    p.add_argument("--truncation", type=number(0, 1), default=1.0, metavar="PSI",
                   help="the truncation trick: every code moved toward the mean face by PSI, from 0 (the mean face "
                        "alone) to 1 (off, the default); lower trades variety for typical, cleaner faces")
    p.add_argument("--export", metavar="PATH.safetensors",
                   help="write the sampling generator alone (safetensors, settings in its metadata) and a model "
                        "card PATH.md beside it, then stop")
    p.add_argument("--force", action="store_true", help="replace existing files named by --out or --export")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N | mps")
    return p


def check_request(args):
    """Before any work: the seeds are in range, and --out is a file name (a folder with --individual)."""
    if args.export:
        check_export_request(args)
        return
    check_seeds(args.seed, args.interp or (0 if args.fixed else args.n))
    if args.out is None:
        if args.force:
            raise UserError("--force replaces files named by --out or --export; the default files under "
                            "outputs/<run>/generated/ are always rewritten")
        return
    out = Path(args.out)
    if args.individual:
        if out.exists() and not out.is_dir():
            raise UserError(f"--out {out} is a file: with --individual give a folder for the PNGs")
        check_output(out, "--out", args.force, inputs=[args.ckpt], kind="folder")  # the names: write_individual
        return
    if out.is_dir():
        raise UserError(f"--out {out} is a folder: give a file name such as {out / 'faces.png'}, or add "
                        "--individual to write one PNG per face into it")
    check_output(out, "--out", args.force, suffixes=(".png",), inputs=[args.ckpt])
    if args.interp and path_kind(out) != "stream":
        check_output(out.with_suffix(".gif"), "--out", args.force, suffixes=(".gif",), inputs=[args.ckpt])


def check_export_request(args):
    """--export writes the generator and its card only: no sampling flag goes with it."""
    for flag, given in (("--out", args.out), ("--individual", args.individual), ("--fixed", args.fixed),
                        ("--interp", args.interp), ("--truncation", args.truncation != 1)):
        if given:
            raise UserError(f"--export writes only the generator and its card: drop {flag}, or run generate.py "
                            "again without --export")
    refuse_overwriting(args.export, [args.ckpt], "--export")
    check_export_target(args.export, args.force)


def check_grid(count, res):
    """A grid of `count` faces must fit in GRID_MAX_PIXELS."""
    side = math.ceil(math.sqrt(count)) * (res + 2) + 2
    if side * side > GRID_MAX_PIXELS:
        most = ((math.isqrt(GRID_MAX_PIXELS) - 2) // (res + 2)) ** 2
        raise UserError(f"--n {count}: a grid of {count} faces at {res} px would be {side}x{side} px; at most "
                        f"{most} fit in one grid of {GRID_MAX_PIXELS // 10**6} megapixels: lower --n, or add "
                        "--individual for one PNG per face")


def output_path(args, name):
    """--out, else outputs/<run of the checkpoint>/generated/<name>, with _psi<PSI> before its suffix under
    --truncation, so truncated faces never replace the plain ones."""
    if args.truncation != 1:
        name = Path(name).stem + f"_psi{args.truncation:g}" + Path(name).suffix
    return Path(args.out or output_dir(run_of_checkpoint(args.ckpt)) / "generated" / name)


def write_interpolation(args, G, nz, device):
    """A strip of every frame (one row per pair of seeds) and a looping GIF beside it."""
    z = interpolation_latents(sample_noise(range(args.seed, args.seed + args.interp), nz), INTERP_FRAMES)
    z = truncate(z, args.truncation)
    frames = render(G, z, device)
    out = output_path(args, f"interp_seed{args.seed}_k{args.interp}.png")
    save_png(grid_image(frames, ncols=INTERP_FRAMES), out)
    if path_kind(out) == "stream":  # /dev/null, a pipe: there is no "beside it" for the GIF
        print(f"wrote {out} ({args.interp} seeds, {len(frames)} frames)")
        return
    gif = out.with_suffix(".gif")
    with atomic_path(gif) as tmp:
        pictures = [Image.fromarray(f) for f in frames]
        pictures[0].save(tmp, format="GIF", save_all=True, append_images=pictures[1:], duration=80, loop=0)
    print(f"wrote {out} ({args.interp} seeds, {len(frames)} frames) and {gif}")


def noise_batches(args, ckpt, nz):
    """(the first face's number: its seed, or its index in the fixed noise; the latents), BATCH at a time,
    truncated by --truncation."""
    if args.fixed:
        if "fixed_noise" not in ckpt:
            raise UserError(f"{args.ckpt} holds no fixed noise (a sampler-only file): drop --fixed")
        z = ckpt["fixed_noise"].cpu()
        yield from ((start, truncate(z[start:start + BATCH], args.truncation)) for start in range(0, len(z), BATCH))
        return
    stop = args.seed + args.n
    for start in range(args.seed, stop, BATCH):
        yield start, truncate(sample_noise(range(start, min(start + BATCH, stop)), nz), args.truncation)


def write_individual(args, G, batches, count, device):
    """One PNG per face, named by its seed, rendered and written a batch at a time."""
    folder = output_path(args, f"seed{args.seed}_n{args.n}")
    first = 0 if args.fixed else args.seed
    check_output(folder, "--out", args.force, ours=args.out is None, kind="folder",
                 names=[f"{i:06d}.png" for i in range(first, first + count)])
    with tqdm(total=count, unit="face", leave=False, disable=count <= BATCH) as bar:
        for first, z in batches:
            for i, image in enumerate(render(G, z, device), first):
                save_png(Image.fromarray(image), folder / f"{i:06d}.png")
            bar.update(len(z))
    print(f"wrote {count} PNGs to {folder}/")


def write_grid(args, G, batches, res, device):
    images = np.concatenate([render(G, z, device) for _, z in batches])
    out = output_path(args, "fixed.png" if args.fixed else f"seed{args.seed}_n{args.n}.png")
    save_png(grid_image(images), out)
    print(f"wrote {out} ({len(images)} faces at {res} px)")


def main(argv=None):
    args = build_parser().parse_args(argv)
    check_request(args)
    device = resolve_device(args.device)
    ckpt = load_checkpoint(args.ckpt, device)
    if args.export:
        card = write_export(ckpt, args.export, args.force)
        print(f"wrote {args.export} (the sampling generator, {len(ckpt['G_eval'])} tensors) and {card}")
        return
    G, config = generator_from_state(ckpt, args.ckpt, device), ckpt["config"]
    if args.interp:
        write_interpolation(args, G, config["nz"], device)
        return
    batches = noise_batches(args, ckpt, config["nz"])
    count = len(ckpt["fixed_noise"]) if args.fixed and "fixed_noise" in ckpt else args.n
    if args.individual:
        write_individual(args, G, batches, count, device)
    else:
        check_grid(count, config["res"])
        write_grid(args, G, batches, config["res"], device)


if __name__ == "__main__":
    run(main)
