"""Edit faces by moving their latent codes: SeFa directions, attribute vectors and edit strips.

    python latent.py sefa --ckpt checkpoints/<run>/latest.pt --k 8           # top-8 directions + a figure
    python latent.py attribute --ckpt ... --labels smile.csv --name smile    # `seed,label` rows, label 1/0
    python latent.py attribute --ckpt ... --from-probe glasses --features pixels   # toy faces, by a probe
    python latent.py attribute --ckpt ... --from-probe Eyeglasses --real data/celeba64 \\
        --attr-file list_attr_celeba.txt                                    # CelebA's 40 attributes
    python latent.py edit --ckpt ... --seed 7 --vector smile --strength 2    # strip: -2x ... 0 ... +2x
    python latent.py project --ckpt ... --image me.jpg                       # your photo -> projected/me.npy, an edit
    python latent.py edit --ckpt ... --code outputs/<run>/latent/projected/me.npy --sefa 0   # ... edited

SeFa directions are the unit directions of z that move the generator's first feature map the most; an
attribute vector is the mean code of faces with an attribute minus the mean of faces without, and adding it
to any code adds the attribute (latent_directions.py). Seeds mean what they mean in generate.py. `project` finds
the code whose sample is closest to a photo, cut as the checkpoint's training data was (projection.py); `edit`
takes that code wherever it takes a seed.
--from-probe labels generated faces with a logistic regression trained on labelled real images
(attribute_probe.py): on the FID network's features by default; for toy faces use --features pixels, which
transfers to rough 32 px samples where an Inception probe does not (measured on the demo model; see docs/editing.md).
Files go to outputs/<run>/latent/ (--out-dir to change): sefa.pt, sefa.json, sefa.png, vectors/<name>.pt
and .json, projected/<photo>.npy, .png and .json, edit_<vector or sefaK>_pm<strength>_<N>steps_<seedS or
photo>.png (project draws edit_sefa0_pm3_7steps_<photo>.png too). Each name carries the settings that made the
file, so one command rewrites only its own result; a file named by `edit --out` that exists needs --force.
"""
import fakefacegen  # noqa: F401  (first: an older Python stops there with one line)

# isort: split
import csv
import re
from pathlib import Path

import numpy as np
import torch

from fakefacegen.checkpoint import discriminator_from_state, generator_from_state, load_checkpoint
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
from fakefacegen.data.image_files import BadImage, crop_label, parse_crop
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
    edit_strip,
    first_layer_weight,
    load_sefa,
    load_vector,
    save_sefa,
    save_vector,
    sefa,
)
from fakefacegen.editing.projection import (
    MAX_STARTS,
    MAX_STEPS,
    STARTS,
    STEPS,
    code_name,
    code_path,
    load_code,
    photo_face,
    project,
    save_projection,
    training_crop,
)
from fakefacegen.files import check_output, save_png
from fakefacegen.grids import grid_image, labelled_grid
from fakefacegen.runs import training_data
from fakefacegen.sampling import render, sample_noise

SEFA_SEEDS = "0,1,2"
MIN_PROBE_PER_CLASS = 5  # generated faces needed on each side of the probe's 0.5 threshold
SCALE = number(above=0, high=100)  # --alpha, --strength: far past where faces stay faces, short of overflow
FRAMES = integer(2, 101)  # frames of a figure or strip
PROJECT_EDIT_STRENGTH = 3.0  # the strip `project` draws along SeFa direction 0, in standard deviations of z
PROJECT_EDIT_STEPS = 7
FIGURE_MAX_FACES = 20_000  # the SeFa figure's faces, rendered at once (0.25 GB at 64 px)


# ---------------------------------------------------------------------------------------------- figures

def step_label(t):
    """-3, -1.5, 0, +1.5, +3: a step along a direction, in standard deviations of z."""
    return "0" if abs(t) < 1e-9 else f"{t:+.3g}"


def sefa_figure(G, directions, seeds, alpha, steps, device):
    """One row per direction, labelled with its index; for each seed, `steps` columns from -alpha to +alpha
    labelled with the step (the middle one is the face itself), seeds separated by a blank tile."""
    z = sample_noise(seeds, G.nz)
    ts = torch.linspace(-alpha, alpha, steps)
    codes = z[None, :, None] + ts[None, None, :, None] * directions[:, None, None]  # (k, seeds, steps, nz)
    images = render(G, codes.reshape(-1, G.nz), device).reshape(len(directions), len(seeds), steps, G.res, G.res, 3)
    blank = np.full((len(directions), len(seeds), 1, G.res, G.res, 3), 255, np.uint8)
    tiles = np.concatenate([images, blank], 2).reshape(len(directions), -1, G.res, G.res, 3)[:, :-1]
    columns = ([step_label(t) for t in ts.tolist()] + [""]) * len(seeds)
    return labelled_grid(tiles.reshape(-1, G.res, G.res, 3), tiles.shape[1], columns[:-1],
                         [f"direction {k}" for k in range(len(directions))],
                         f"SeFa: each row moves seeds {', '.join(map(str, seeds))} (left to right) along one direction "
                         "of z, by the steps above (standard deviations)")


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
    if not labels:
        raise UserError(f"{path} holds no `seed,label` lines: label some faces 1 (has it) and some 0 (lacks it)")
    return labels


def build_parser():
    p = ArgumentParser(description=__doc__)
    sub = p.add_subparsers(dest="command", required=True, metavar="{sefa,attribute,edit,project}")

    def command(name, help):
        s = sub.add_parser(name, help=help, description=help)
        s.error = p.error  # the one-line errors of cli.ArgumentParser
        s.add_argument("--ckpt", required=True, help="checkpoint written by train.py")
        s.add_argument("--out-dir", help="where vectors and figures go (default outputs/<run>/latent/)")
        s.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N | mps")
        return s

    add_sefa_options(command("sefa", "the top-k SeFa directions, their eigenvalues and a figure"))
    add_attribute_options(command("attribute", "an attribute vector from labelled seeds or from a probe"))
    add_edit_options(command("edit", "a strip of one face as a vector or SeFa direction is applied, from "
                             "-strength to +strength"))
    add_project_options(command("project", "the latent code whose face is closest to a photo, and a strip"))
    return p


def add_sefa_options(s):
    s.add_argument("--k", type=integer(1), default=8, help="how many directions, at most nz (default 8)")
    s.add_argument("--alpha", type=SCALE, default=3.0, help="figure: steps from -alpha to +alpha (default 3)")
    s.add_argument("--steps", type=FRAMES, default=7, help="figure: columns per seed, odd (default 7)")
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
    face = s.add_mutually_exclusive_group(required=True)
    face.add_argument("--seed", type=SEED, help="the face to edit (a seed, as in generate.py)")
    face.add_argument("--code", help="the face to edit: a code from latent.py project (.npy)")
    along = s.add_mutually_exclusive_group(required=True)
    along.add_argument("--vector", help="name of a saved attribute vector")
    along.add_argument("--sefa", type=integer(0), metavar="K", help="SeFa direction K (0: the strongest), from "
                       "sefa.pt when latent.py sefa made one")
    s.add_argument("--strength", type=SCALE, default=2.0, help="largest multiple of the vector, or of z's standard "
                   "deviation along a SeFa direction (default 2)")
    s.add_argument("--steps", type=FRAMES, default=7, help="frames, odd so the middle one is unedited (default 7)")
    s.add_argument("--out", help="output .png (default <out-dir>/edit_<vector or sefaK>_pm<strength>_<N>steps_<seedS "
                   "or code>.png)")
    s.add_argument("--force", action="store_true", help="replace an existing file named by --out")


def add_project_options(s):
    s.add_argument("--image", required=True, help="the photo: jpg, png, webp or bmp, of one face")
    s.add_argument("--crop", help="how to cut the face out: celeba, center, none or a box L,T,R,B (default: as "
                   "the checkpoint's training data was cut, else center)")
    s.add_argument("--starts", type=integer(1, MAX_STARTS), default=STARTS,
                   help=f"random codes optimised side by side, the best kept (default {STARTS})")
    s.add_argument("--steps", type=integer(1, MAX_STEPS), default=STEPS, help=f"optimisation steps (default {STEPS})")
    s.add_argument("--seed", type=SEED, default=0, help="seed of the random starts (default 0)")
    s.add_argument("--name", help="name of the files under <out-dir>/projected/ (default: the photo's)")


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


def strip_name(along, strength, steps, face):
    """An edit strip's file name, which carries every setting that drew it: one strip never replaces another."""
    return f"edit_{along}_pm{strength:g}_{steps}steps_{face}.png"


def cmd_edit(args, G, folder, device):
    which = code_name(Path(args.code).stem) if args.code else f"seed{args.seed}"
    along = args.vector or f"sefa{args.sefa}"
    out = Path(args.out) if args.out else folder / strip_name(along, args.strength, args.steps, which)
    check_output(out, "--out", args.force, ours=args.out is None, suffixes=(".png",), inputs=[args.ckpt, args.code])
    if args.code:
        z, face = load_code(args.code, G.nz), f"code {args.code}"
    else:
        z, face = sample_noise([args.seed], G.nz)[0], f"seed {args.seed}"
    direction, along = edit_direction(args, G, folder)
    frames = edit_strip(G, z, direction, args.strength, args.steps, device)
    save_png(grid_image(frames, ncols=len(frames)), out)
    print(f"wrote {out}: {face}, {along} from -{args.strength:g} to +{args.strength:g} (middle frame unedited)")


def edit_direction(args, G, folder):
    """(the direction to move along, its name): a saved vector, or SeFa direction K (sefa.pt, else computed)."""
    if args.vector:
        return load_vector(folder, args.vector, G.nz), args.vector
    if args.sefa >= G.nz:
        raise UserError(f"--sefa must be from 0 to nz-1={G.nz - 1}, not {args.sefa}")
    return sefa_direction(G, folder, args.sefa), f"sefa{args.sefa}"


def sefa_direction(G, folder, k):
    """SeFa direction k: from the run's sefa.pt where latent.py sefa made one, else computed."""
    saved = load_sefa(folder, G.nz)
    return (saved[0] if saved and len(saved[0]) > k else sefa(first_layer_weight(G), k + 1)[0])[k]


def cmd_project(args, G, config, D, folder, device):
    crop = parse_crop(args.crop) if args.crop else training_crop(config)
    try:
        face = photo_face(Path(args.image), G.res, crop)
    except BadImage as err:
        raise UserError(f"--image {args.image}: {err}; give a photo (jpg, png, webp, bmp) of one face") from None
    name = check_name(args.name) if args.name else code_name(Path(args.image).stem)
    path = code_path(folder, name)
    strip = folder / strip_name("sefa0", PROJECT_EDIT_STRENGTH, PROJECT_EDIT_STEPS, name)
    for out in (path, path.with_suffix(".png"), path.with_suffix(".json"), strip):
        check_output(out, "the output", ours=True, inputs=[args.image, args.ckpt])
    print(f"projecting {args.image} (crop {crop_label(crop)}, {G.res} px): {args.starts} starts x {args.steps} "
          f"steps, {'pixels + discriminator features' if D is not None else 'pixels only (no discriminator)'}")
    result = project(G, face, D, args.starts, args.steps, args.seed)
    meta = {"image": str(args.image), "crop": crop_label(crop), "ckpt": str(args.ckpt), "starts": args.starts,
            "steps": args.steps, "seed": args.seed, "perceptual": "discriminator" if D is not None else "none"}
    save_projection(folder, name, face, result, meta)
    # A first edit, so that one command shows what the code is for: the strongest SeFa direction.
    frames = edit_strip(G, result.code, sefa_direction(G, folder, 0), PROJECT_EDIT_STRENGTH, PROJECT_EDIT_STEPS,
                        device)
    save_png(grid_image(frames, ncols=len(frames)), strip)
    feature = "" if result.feature_distance is None else f", D-feature distance {result.feature_distance:.4f}"
    print(f"wrote {path} (the code), {path.with_suffix('.png')} (photo | projection | the optimisation), "
          f"{path.with_suffix('.json')} and {strip} (SeFa direction 0, -{PROJECT_EDIT_STRENGTH:g} to "
          f"+{PROJECT_EDIT_STRENGTH:g}): pixel RMSE {result.pixel_rmse:.1f} of 255{feature}, |z| = "
          f"{result.norm_ratio:.3f} sqrt(nz); more edits: latent.py edit --ckpt {args.ckpt} --code {path} --sefa K "
          "or --vector NAME")


def main(argv=None):
    args = build_parser().parse_args(argv)
    folder = Path(args.out_dir) if args.out_dir else default_latent_dir(args.ckpt)
    check_output(folder, "--out-dir", ours=True, kind="folder")
    device = resolve_device(args.device)
    ckpt = load_checkpoint(args.ckpt, device)
    G, config = generator_from_state(ckpt, args.ckpt, device), ckpt["config"]
    if args.command == "sefa":
        cmd_sefa(args, G, folder, device)
    elif args.command == "attribute":
        cmd_attribute(args, G, config, folder, device)
    elif args.command == "edit":
        cmd_edit(args, G, folder, device)
    else:
        cmd_project(args, G, config, discriminator_from_state(ckpt, args.ckpt, device), folder, device)


if __name__ == "__main__":
    run(main)
