"""Edit faces by moving their latent codes: SeFa directions, attribute vectors and edit strips.

    python latent.py sefa --ckpt checkpoints/<run>/latest.pt --k 8           # top-8 directions + a figure
    python latent.py attribute --ckpt ... --labels smile.csv --name smile    # `seed,label` rows, label 1/0
    python latent.py attribute --ckpt ... --from-probe glasses --features pixels   # toy faces, by a probe
    python latent.py attribute --ckpt ... --from-probe Eyeglasses --real data/celeba64 \\
        --attr-file list_attr_celeba.txt                                    # CelebA's 40 attributes
    python latent.py edit --ckpt ... --seed 7 --vector smile --strength 2    # strip: -2x ... 0 ... +2x

SeFa directions are the unit directions of z that move the generator's first feature map the most; an
attribute vector is the mean code of faces with an attribute minus the mean of faces without, and adding it
to any code adds the attribute (latent_directions.py). Seeds mean what they mean in generate.py.
--from-probe labels generated faces with a logistic regression trained on labelled real images
(attribute_probe.py): on the FID network's features by default; for toy faces use --features pixels, which
transfers to rough 32 px samples where an Inception probe does not (measured on the demo model; see docs/editing.md).
Files go to outputs/<run>/latent/ (--out-dir to change): sefa.pt, sefa.json, sefa.png, vectors/<name>.pt
and .json, edit_<name>_seed<S>.png.
"""
import csv
import re
from pathlib import Path

import numpy as np
import torch

from fakefacegen.checkpoint import load_generator
from fakefacegen.cli import (
    SEED,
    ArgumentParser,
    UserError,
    check_seeds,
    integer,
    number,
    resolve_device,
    run,
    seed_list,
)
from fakefacegen.editing.attribute_probe import (
    PROBE_HOLDOUT,
    fit_probe,
    generated_features,
    image_features,
    labelled_real_images,
    make_featurizer,
    probe_probability,
)
from fakefacegen.editing.latent_directions import (
    attribute_vector,
    check_name,
    check_seed,
    default_latent_dir,
    first_layer_weight,
    load_vector,
    save_sefa,
    save_vector,
    sefa,
)
from fakefacegen.files import save_png
from fakefacegen.grids import grid_image
from fakefacegen.runs import training_data
from fakefacegen.sampling import render, sample_noise

SEFA_SEEDS = "0,1,2"
MIN_PROBE_PER_CLASS = 5  # generated faces needed on each side of the probe's 0.5 threshold
SCALE = number(above=0, high=100)  # --alpha, --strength: far past where faces stay faces, short of overflow
STEPS = integer(2, 101)  # frames of a figure or strip
FIGURE_MAX_FACES = 20_000  # the SeFa figure's faces, rendered at once (0.25 GB at 64 px)


# ---------------------------------------------------------------------------------------------- figures

def sefa_figure(G, directions, seeds, alpha, steps, device):
    """One row per direction; for each seed, `steps` columns from -alpha to +alpha (the middle one is the
    face itself), seeds separated by a blank tile."""
    z = sample_noise(seeds, G.nz)
    ts = torch.linspace(-alpha, alpha, steps)
    codes = z[None, :, None] + ts[None, None, :, None] * directions[:, None, None]  # (k, seeds, steps, nz)
    images = render(G, codes.reshape(-1, G.nz), device).reshape(len(directions), len(seeds), steps, G.res, G.res, 3)
    blank = np.full((len(directions), len(seeds), 1, G.res, G.res, 3), 255, np.uint8)
    tiles = np.concatenate([images, blank], 2).reshape(len(directions), -1, G.res, G.res, 3)[:, :-1]
    return grid_image(tiles.reshape(-1, G.res, G.res, 3), ncols=tiles.shape[1])


def edit_strip(G, z, vector, strength, steps, device):
    """The face of z with strength * t * vector added, t from -1 to +1 in `steps` frames (middle: no edit)."""
    ts = torch.linspace(-strength, strength, steps)
    return render(G, z[None] + ts[:, None] * vector[None], device)


# ---------------------------------------------------------------------------------------------- command line

def read_labels(path):
    """A `seed,label` CSV (label 1 = has the attribute, 0 = lacks it; a header line is allowed) -> {seed: 0/1}."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"labels file {path} not found: write `seed,label` lines, label 1 or 0")
    try:
        rows = list(csv.reader(path.read_text().splitlines()))
    except (UnicodeDecodeError, csv.Error) as err:
        raise UserError(f"{path} is not a CSV text file ({err}): write `seed,label` lines") from None
    labels = {}
    for lineno, row in enumerate(rows, 1):
        cells = [cell.strip() for cell in row]
        if not any(cells) or cells[0].startswith("#"):
            continue
        if lineno == 1 and not re.fullmatch(r"-?\d+", cells[0]):
            continue  # a header such as `seed,label`
        if len(cells) != 2 or not all(re.fullmatch(r"-?\d+", c) for c in cells):
            raise UserError(f"{path} line {lineno}: expected `seed,label` with whole numbers, "
                            f"got {','.join(row)[:60]!r}")
        seed, label = int(cells[0]), int(cells[1])
        check_seed(seed, f"{path} line {lineno}: seed")
        if label not in (0, 1):
            raise UserError(f"{path} line {lineno}: label {label} should be 1 (has it) or 0 (lacks it)")
        if labels.get(seed, label) != label:
            raise UserError(f"{path} line {lineno}: seed {seed} is labelled both 1 and 0")
        labels[seed] = label
    return labels


def build_parser():
    p = ArgumentParser(description=__doc__)
    sub = p.add_subparsers(dest="command", required=True, metavar="{sefa,attribute,edit}")

    def command(name, help):
        s = sub.add_parser(name, help=help, description=help)
        s.error = p.error  # the one-line errors of cli.ArgumentParser
        s.add_argument("--ckpt", required=True, help="checkpoint written by train.py")
        s.add_argument("--out-dir", help="where vectors and figures go (default outputs/<run>/latent/)")
        s.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N | mps")
        return s

    add_sefa_options(command("sefa", "the top-k SeFa directions, their eigenvalues and a figure"))
    add_attribute_options(command("attribute", "an attribute vector from labelled seeds or from a probe"))
    add_edit_options(command("edit", "a strip of one face as a vector is applied, from -strength to +strength"))
    return p


def add_sefa_options(s):
    s.add_argument("--k", type=integer(1), default=8, help="how many directions, at most nz (default 8)")
    s.add_argument("--alpha", type=SCALE, default=3.0, help="figure: steps from -alpha to +alpha (default 3)")
    s.add_argument("--steps", type=STEPS, default=7, help="figure: columns per seed, odd (default 7)")
    s.add_argument("--seeds", type=seed_list, default=SEFA_SEEDS, help=f"figure: seeds to edit (default {SEFA_SEEDS})")


def add_attribute_options(s):
    source = s.add_mutually_exclusive_group(required=True)
    source.add_argument("--labels", help="CSV of `seed,label` lines, label 1 (has it) or 0 (lacks it)")
    source.add_argument("--from-probe", metavar="ATTR", help="label generated faces with a linear probe for "
                        "ATTR (toy faces: smile, glasses, blond; CelebA: a column of --attr-file)")
    s.add_argument("--name", help="name to save it under (default: ATTR with --from-probe)")
    s.add_argument("--real", help="labelled real images for the probe: toyfaces or a packed dataset (default: "
                   "the checkpoint's training data)")
    s.add_argument("--attr-file", help="attribute labels of a packed CelebA dataset: list_attr_celeba.txt")
    s.add_argument("--features", choices=("inception", "pixels"), default="inception",
                   help="probe features: the FID network's pool3 (default) or 32x32 pixels (fast, toy faces)")
    s.add_argument("--probe-n", type=integer(4 * PROBE_HOLDOUT, 100_000), default=400,
                   help="real images the probe learns from (default 400)")
    s.add_argument("--n", type=integer(2 * MIN_PROBE_PER_CLASS, 100_000), default=1000,
                   help="generated faces the probe labels (default 1000)")
    s.add_argument("--seed", type=SEED, default=0, help="first seed of those faces (default 0)")


def add_edit_options(s):
    s.add_argument("--seed", type=SEED, required=True, help="the face to edit (a seed, as in generate.py)")
    s.add_argument("--vector", required=True, help="name of a saved attribute vector")
    s.add_argument("--strength", type=SCALE, default=2.0, help="largest multiple of the vector (default 2)")
    s.add_argument("--steps", type=STEPS, default=7, help="frames, odd so the middle one is unedited (default 7)")
    s.add_argument("--out", help="output PNG (default <out-dir>/edit_<vector>_seed<S>.png)")


def cmd_sefa(args, G, folder, device):
    if args.k > G.nz:
        raise UserError(f"--k must be from 1 to nz={G.nz}, not {args.k}")
    seeds = args.seeds
    if args.k * len(seeds) * args.steps > FIGURE_MAX_FACES:
        raise UserError(f"--k {args.k} x {len(seeds)} seeds x --steps {args.steps} is over the figure's "
                        f"{FIGURE_MAX_FACES} faces: lower one of them")
    directions, eigenvalues = sefa(first_layer_weight(G), args.k)
    save_sefa(folder, directions, eigenvalues, args.ckpt)
    save_png(sefa_figure(G, directions, seeds, args.alpha, args.steps, device), folder / "sefa.png")
    share = eigenvalues / first_layer_weight(G).double().square().sum().item()  # trace(A^T A): all eigenvalues
    for i, (value, fraction) in enumerate(zip(eigenvalues.tolist(), share.tolist())):
        print(f"direction {i}: eigenvalue {value:.4g} ({100 * fraction:.1f}% of the first layer's energy)")
    print(f"wrote {folder}/sefa.pt, sefa.json and sefa.png (rows: directions; columns: -{args.alpha:g} to "
          f"+{args.alpha:g} on seeds {args.seeds})")


def cmd_attribute(args, G, config, folder, device):
    if args.labels and not args.name:
        raise UserError("--labels needs --name: the name to save the vector under, e.g. --name smile")
    name = check_name(args.name or args.from_probe)
    vector, meta = vector_from_labels(args, G) if args.labels else vector_from_probe(args, G, config, device)
    path = save_vector(folder, name, vector, {**meta, "ckpt": str(args.ckpt)})
    print(f"wrote {path}: {meta['n_with']} faces with, {meta['n_without']} without, norm "
          f"{vector.norm():.3f}; try: latent.py edit --ckpt {args.ckpt} --seed 0 --vector {name}")


def vector_from_labels(args, G):
    """The attribute vector of the seeds of --labels, and what to record about it."""
    labels = read_labels(args.labels)
    seeds = sorted(labels)
    vector = attribute_vector(sample_noise(seeds, G.nz), [labels[s] for s in seeds])
    n_pos = sum(labels.values())
    return vector, {"source": f"labels {args.labels}", "n_with": n_pos, "n_without": len(seeds) - n_pos}


def vector_from_probe(args, G, config, device):
    """The attribute vector of --n generated faces labelled by a probe, and what to record about it."""
    check_seeds(args.seed, args.n)
    probe, featurize, accuracy, description = probe_of_real_images(args, config, device)
    z = sample_noise(range(args.seed, args.seed + args.n), G.nz)
    has_it = probe_probability(probe, generated_features(G, z, device, featurize)) > 0.5
    n_pos = int(has_it.sum())
    if min(n_pos, args.n - n_pos) < MIN_PROBE_PER_CLASS:
        raise UserError(f"the probe finds {n_pos} of {args.n} generated faces with {args.from_probe}: too few "
                        "on one side for a vector; use a larger --n, or the generator has not learned it")
    meta = {"source": f"probe {args.from_probe} ({args.features}) on {description}",
            "probe_accuracy": round(accuracy, 4), "n_with": n_pos, "n_without": args.n - n_pos,
            "seeds": f"{args.seed}..{args.seed + args.n - 1}"}
    return attribute_vector(z, has_it), meta


def probe_of_real_images(args, config, device):
    """A probe for --from-probe trained on real images (by default the checkpoint's training data): the
    probe, its featurizer, its held-out accuracy and a description of the images."""
    real = args.real if args.real is not None else str(training_data(config))
    images, labels, description = labelled_real_images(real, args.from_probe, args.probe_n, config["res"],
                                                       args.attr_file)
    featurize = make_featurizer(args.features, device)
    probe, accuracy = fit_probe(image_features(featurize, images), labels)
    print(f"probe for {args.from_probe} ({args.features} features) trained on {description}: "
          f"{100 * accuracy:.1f}% right on the held-out fifth")
    return probe, featurize, accuracy, description


def cmd_edit(args, G, folder, device):
    vector = load_vector(folder, args.vector, G.nz)
    frames = edit_strip(G, sample_noise([args.seed], G.nz)[0], vector, args.strength, args.steps, device)
    out = Path(args.out or folder / f"edit_{args.vector}_seed{args.seed}.png")
    save_png(grid_image(frames, ncols=len(frames)), out)
    print(f"wrote {out}: seed {args.seed}, {args.vector} from -{args.strength:g} to +{args.strength:g} "
          f"(middle frame unedited)")


def main(argv=None):
    args = build_parser().parse_args(argv)
    device = resolve_device(args.device)
    G, config = load_generator(args.ckpt, device)
    folder = Path(args.out_dir) if args.out_dir else default_latent_dir(args.ckpt)
    if args.command == "sefa":
        cmd_sefa(args, G, folder, device)
    elif args.command == "attribute":
        cmd_attribute(args, G, config, folder, device)
    else:
        cmd_edit(args, G, folder, device)


if __name__ == "__main__":
    run(main)
