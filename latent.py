"""Edit faces by moving their latent codes: SeFa directions, attribute vectors and edit strips.

    python latent.py sefa --ckpt checkpoints/<run>/latest.pt --k 8           # top-8 directions + a figure
    python latent.py attribute --ckpt ... --labels smile.csv --name smile    # `seed,label` rows, label 1/0
    python latent.py attribute --ckpt ... --from-probe glasses --features pixels   # toy faces, by a probe
    python latent.py attribute --ckpt ... --from-probe Eyeglasses --real data/celeba64 \\
        --attr-file list_attr_celeba.txt                                    # CelebA's 40 attributes
    python latent.py edit --ckpt ... --seed 7 --vector smile --strength 2    # strip: -2x ... 0 ... +2x

SeFa (Shen & Zhou, 2021): the generator's first layer maps z linearly to its first feature map, A z; the
unit directions d that change that map the most (largest |A d|) are the top eigenvectors of A^T A.
An attribute vector is the mean latent code of faces that have an attribute minus the mean of faces that
lack it; adding it to any code adds the attribute. Seeds mean what they mean in generate.py.
--from-probe labels generated faces with a logistic regression trained on labelled real images: on the FID
network's features by default; for toy faces use --features pixels, which transfers to rough 32 px samples
where an Inception probe does not (measured on the demo model; see README).
Files go to outputs/<run>/latent/ (--out-dir to change): sefa.pt, sefa.json, sefa.png, vectors/<name>.pt
and .json, edit_<name>_seed<S>.png.
"""
import csv
import json
import re
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from cli import ArgumentParser, UserError, atomic_path, resolve_device, run
from generate import grid_image, load_generator, render, sample_noise, save_png

NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,39}")  # also a safe file name: no dots, no slashes
SEED_MAX = 2**31 - 1
SEFA_SEEDS = "0,1,2"
BATCH_SIZE = 50
PIXEL_RES = 32  # the cheap "pixels" probe features: images shrunk to 32x32
PROBE_L2 = 1e-2  # ridge penalty on the standardised features; 2048 features, a few hundred images
PROBE_HOLDOUT = 5  # every 5th real image is held out to report the probe's accuracy
MIN_PROBE_PER_CLASS = 5  # generated faces needed on each side of the probe's 0.5 threshold
TOY_PROBE_SEED = 7  # the toy faces a probe learns from: any seed draws from the same distribution
TOY_POOL_FACTOR = 6  # faces scanned per image wanted: blond, the rarest toy attribute, is 1 face in 5


# ---------------------------------------------------------------------------------------------- SeFa

def first_layer_weight(G):
    """The weight (nz, C, k, k) of G's first layer, the ConvTranspose2d that turns z into a k x k map."""
    layer = G.main[0]
    if not isinstance(layer, nn.ConvTranspose2d) or layer.weight.shape[0] != G.nz:
        raise UserError("this generator does not start with a ConvTranspose2d from z: SeFa needs network.py's")
    return layer.weight.detach()


def sefa(weight, k):
    """Top-k SeFa directions (k, nz), unit rows, and their eigenvalues (k,), largest first.

    A = weight.reshape(nz, -1).T maps z to the flattened first feature map; eigenvectors of A^T A are the
    directions d with the largest |A d|. eigh's signs are arbitrary: each direction is flipped so its
    largest component is positive, which makes the files reproducible.
    """
    nz = weight.shape[0]
    A = weight.reshape(nz, -1).T.double().cpu()
    eigenvalues, vectors = torch.linalg.eigh(A.T @ A)  # ascending
    order = eigenvalues.argsort(descending=True)[:k]
    directions = vectors[:, order].T
    peak = directions.gather(1, directions.abs().argmax(1, keepdim=True))
    return (directions * peak.sign()).float(), eigenvalues[order].float()


# ---------------------------------------------------------------------------------------------- files

def default_latent_dir(ckpt_path):
    """outputs/<run>/latent/, <run> being the checkpoint's folder name, as generate.py names its outputs."""
    return Path("outputs") / Path(ckpt_path).resolve().parent.name / "latent"


def check_name(name):
    if not isinstance(name, str) or not NAME_PATTERN.fullmatch(name):
        raise UserError(f"vector name {str(name)[:60]!r} is not allowed: use 1-40 letters, digits, _ or -, "
                        "starting with a letter or digit")
    return name


def vector_path(folder, name):
    return Path(folder) / "vectors" / f"{check_name(name)}.pt"


def list_vectors(folder):
    """Names of the attribute vectors saved under folder/vectors/, sorted."""
    root = Path(folder) / "vectors"
    return sorted(p.stem for p in root.glob("*.pt") if NAME_PATTERN.fullmatch(p.stem)) if root.is_dir() else []


def write_json(path, data):
    with atomic_path(path) as tmp:
        Path(tmp).write_text(json.dumps(data, indent=1) + "\n")


def save_vector(folder, name, vector, meta):
    """folder/vectors/<name>.pt ({"vector": (nz,), **meta}, plain values only) and a readable .json twin."""
    path = vector_path(folder, name)
    vector = vector.detach().float().cpu()
    meta = {"name": name, "nz": len(vector), "norm": round(vector.norm().item(), 6),
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"), **meta}
    with atomic_path(path) as tmp:
        torch.save({"vector": vector, **meta}, tmp)
    write_json(path.with_suffix(".json"), {**meta, "vector": [round(v, 6) for v in vector.tolist()]})
    return path


def load_vector(folder, name, nz):
    """The saved attribute vector `name` as a (nz,) tensor; an unknown name or a foreign file is a UserError."""
    path = vector_path(folder, name)
    if not path.is_file():
        known = ", ".join(list_vectors(folder)) or "none yet"
        raise UserError(f"no attribute vector named {name!r} in {path.parent} (saved: {known}): make it with "
                        "latent.py attribute")
    try:
        saved = torch.load(path, map_location="cpu", weights_only=True)
        vector = saved["vector"]
        ok = isinstance(vector, torch.Tensor) and vector.shape == (nz,) and torch.isfinite(vector).all()
    except Exception:
        ok = False
    if not ok:
        raise UserError(f"{path} is not an attribute vector for this generator (nz={nz}): make it again with "
                        "latent.py attribute")
    return vector.float()


def save_sefa(folder, directions, eigenvalues, ckpt):
    meta = {"layer": "main.0", "ckpt": str(ckpt), "k": len(directions)}
    with atomic_path(Path(folder) / "sefa.pt") as tmp:
        torch.save({"directions": directions.cpu(), "eigenvalues": eigenvalues.cpu(), **meta}, tmp)
    write_json(Path(folder) / "sefa.json", {**meta, "eigenvalues": [round(v, 6) for v in eigenvalues.tolist()],
                                            "directions": [[round(v, 6) for v in d] for d in directions.tolist()]})


def load_sefa(folder, nz):
    """(directions, eigenvalues) from folder/sefa.pt, or None when absent or made for another nz."""
    try:
        saved = torch.load(Path(folder) / "sefa.pt", map_location="cpu", weights_only=True)
        directions, eigenvalues = saved["directions"].float(), saved["eigenvalues"].float()
    except Exception:
        return None
    return (directions, eigenvalues) if directions.ndim == 2 and directions.shape[1] == nz else None


# ---------------------------------------------------------------------------------------------- labels

def check_seed(seed, what="seed"):
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= SEED_MAX:
        raise UserError(f"{what} must be a whole number from 0 to {SEED_MAX}, not {str(seed)[:30]}")
    return seed


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


def attribute_vector(z, labels):
    """mean(z of faces with the attribute) - mean(z of faces without); labels: 0/1 per row of z."""
    labels = torch.as_tensor(labels).bool()
    n_pos, n_neg = int(labels.sum()), int((~labels).sum())
    if n_pos == 0 or n_neg == 0:
        raise UserError(f"an attribute vector needs faces with and without the attribute ({n_pos} with, "
                        f"{n_neg} without): label some of each")
    return z[labels].mean(0) - z[~labels].mean(0)


# ---------------------------------------------------------------------------------------------- probes

def make_featurizer(kind, device):
    """uint8 (B, H, W, 3) -> float32 (B, D) features: "inception" (the FID network's pool3, 2048) or
    "pixels" (the image shrunk to 32x32, 3072: no weights needed, good enough for toy faces)."""
    if kind == "pixels":
        def pixels(images):
            x = torch.as_tensor(images).permute(0, 3, 1, 2).float().div(255)
            return F.interpolate(x, size=(PIXEL_RES, PIXEL_RES), mode="area").flatten(1).numpy()
        return pixels
    from evaluate_fid import features_of_images, load_inception  # only this path needs the weights

    model = load_inception(device)
    return lambda images: features_of_images(model, [images], device, progress=False)


def features_in_batches(featurize, batches, total, desc):
    out = []
    with tqdm(total=total, desc=desc, unit="img", leave=False) as bar:
        for batch in batches:
            out.append(featurize(batch))
            bar.update(len(batch))
    return np.concatenate(out)


def generated_features(G, z, device, featurize, desc="generated faces"):
    """Features of the faces of latent codes z, rendered as generate.py saves them (uint8)."""
    return features_in_batches(featurize, (render(G, chunk, device) for chunk in z.split(BATCH_SIZE)),
                               len(z), desc)


def train_probe(features, labels, l2=PROBE_L2, steps=200):
    """L2-regularised logistic regression on standardised features, fitted with L-BFGS; returns a dict of
    tensors (weight, bias, mean, std) for probe_probability."""
    x = torch.as_tensor(np.asarray(features), dtype=torch.float64)
    y = torch.as_tensor(np.asarray(labels), dtype=torch.float64)
    mean, std = x.mean(0), x.std(0).clamp_min(1e-6)
    x = (x - mean) / std
    weight = torch.zeros(x.shape[1], dtype=torch.float64, requires_grad=True)
    bias = torch.zeros((), dtype=torch.float64, requires_grad=True)
    optimizer = torch.optim.LBFGS([weight, bias], max_iter=steps, line_search_fn="strong_wolfe")

    def closure():
        optimizer.zero_grad()
        loss = F.binary_cross_entropy_with_logits(x @ weight + bias, y) + l2 * weight.square().sum()
        loss.backward()
        return loss

    optimizer.step(closure)
    return {"weight": weight.detach().float(), "bias": bias.detach().float(), "mean": mean.float(),
            "std": std.float()}


def probe_probability(probe, features):
    x = (torch.as_tensor(np.asarray(features), dtype=torch.float32) - probe["mean"]) / probe["std"]
    return torch.sigmoid(x @ probe["weight"] + probe["bias"])


def fit_probe(features, labels):
    """A probe trained on 4/5 of the rows, and its accuracy on the other 1/5 (the rows are in no order)."""
    labels = np.asarray(labels)
    held_out = np.arange(len(labels)) % PROBE_HOLDOUT == PROBE_HOLDOUT - 1
    probe = train_probe(features[~held_out], labels[~held_out])
    predicted = probe_probability(probe, features[held_out]).numpy() > 0.5
    return probe, float((predicted == labels[held_out].astype(bool)).mean())


def balanced_indices(labels, n):
    """Up to n/2 rows with the attribute and as many without, in order, interleaved."""
    labels = np.asarray(labels).astype(bool)
    pos, neg = np.flatnonzero(labels), np.flatnonzero(~labels)
    m = min(len(pos), len(neg), n // 2)
    if m < 2 * PROBE_HOLDOUT:
        raise UserError(f"only {len(pos)} labelled images with the attribute and {len(neg)} without: a probe "
                        f"needs at least {2 * PROBE_HOLDOUT} of each (use more images or another attribute)")
    return np.stack([pos[:m], neg[:m]], 1).reshape(-1)


def toy_labelled_images(attr, n, res, first=0):
    """n built-in toy faces at res px, half with `attr` and half without, and their 0/1 labels."""
    from dataloader import TOY_ATTRIBUTES, toyfaces

    if attr not in TOY_ATTRIBUTES:
        raise UserError(f"the toy faces know {', '.join(TOY_ATTRIBUTES)}, not {attr!r}: pass one of those")
    # Labels do not depend on the size: find them on tiny renders, then draw only the faces kept.
    pool = np.arange(first, first + n * TOY_POOL_FACTOR)
    labels = toyfaces(pool, 8, TOY_PROBE_SEED)[1][attr]
    keep = pool[balanced_indices(labels, n)]
    images, attrs = toyfaces(keep, res, TOY_PROBE_SEED)
    return images, attrs[attr]


def read_attribute_column(path, attr):
    """CelebA's list_attr_celeba.txt (a count line, a line of 40 names, then `file v1 .. v40` with 1/-1)
    -> {file name: 0/1} for one attribute."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"--attr-file {path} not found: pass CelebA's list_attr_celeba.txt")
    try:
        lines = path.read_text().splitlines()
    except UnicodeDecodeError:
        raise UserError(f"--attr-file {path} is not a text file: pass CelebA's list_attr_celeba.txt") from None
    start = 1 if lines and lines[0].strip().isdigit() else 0
    names = lines[start].split() if len(lines) > start else []
    if attr not in names:
        shown = ", ".join(names[:8]) + (", ..." if len(names) > 8 else "")
        raise UserError(f"{path} has no attribute {attr!r} (it has {shown or 'no header'}): names are "
                        "case-sensitive, e.g. Smiling, Eyeglasses, Blond_Hair")
    column, labels = names.index(attr) + 1, {}
    for lineno, line in enumerate(lines[start + 1:], start + 2):
        parts = line.split()
        if not parts:
            continue
        if len(parts) != len(names) + 1 or parts[column] not in ("1", "-1", "0"):
            raise UserError(f"{path} line {lineno}: expected a file name and {len(names)} values of 1 or -1")
        labels[parts[0]] = int(parts[column] == "1")
    return labels


def packed_labelled_images(root, attr, n, attr_file):
    """Images of a packed dataset joined by file name with an attribute file, half with `attr`, half without."""
    from dataloader import PackedImages

    root = Path(root)
    if not (root / "images.npy").is_file() or not (root / "dataset.json").is_file():
        raise UserError(f"--real {root} is not a packed dataset: pack it with preprocess.py, or use toyfaces")
    if attr_file is None:
        raise UserError(f"--real {root} needs --attr-file (e.g. CelebA's list_attr_celeba.txt) for its labels")
    column = read_attribute_column(attr_file, attr)
    try:
        data = PackedImages(root, np.load(root / "images.npy", mmap_mode="r").shape[1])
    except (OSError, ValueError, IndexError):
        raise UserError(f"{root}/images.npy is not readable: run preprocess.py again with --force") from None
    files = data.meta.get("files") or []
    # preprocess.py keeps each image's source name, perhaps with a folder (zip members): join on the base name.
    rows = [(i, column[Path(f).name]) for i, f in enumerate(files[:len(data)]) if Path(f).name in column]
    if not rows:
        raise UserError(f"no file of {root}/dataset.json appears in {attr_file}: is it the attribute file of "
                        "this dataset?")
    index, labels = map(np.array, zip(*rows))
    keep = np.sort(index[balanced_indices(labels, n)])  # the memory map reads faster in order
    lookup = dict(rows)
    return np.ascontiguousarray(data.images[keep]), np.array([lookup[i] for i in keep])


def labelled_real_images(real, attr, n, res, attr_file):
    """(uint8 images, 0/1 labels, description) of real faces carrying the attribute's labels."""
    if real in (None, "", "toyfaces"):
        images, labels = toy_labelled_images(attr, n, res)
        return images, labels, f"{len(labels)} toy faces"
    images, labels = packed_labelled_images(real, attr, n, attr_file)
    return images, labels, f"{len(labels)} images of {real}"


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

def parse_seeds(text):
    try:
        seeds = [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise UserError(f"--seeds {text!r} should be whole numbers separated by commas, e.g. 0,1,2") from None
    if not seeds:
        raise UserError("--seeds needs at least one seed, e.g. 0,1,2")
    return [check_seed(s, "--seeds") for s in seeds]


def build_parser():
    p = ArgumentParser(description=__doc__)
    sub = p.add_subparsers(dest="command", required=True, metavar="{sefa,attribute,edit}")

    def common(name, help):
        s = sub.add_parser(name, help=help, description=help)
        s.error = p.error  # the one-line errors of cli.ArgumentParser
        s.add_argument("--ckpt", required=True, help="checkpoint written by train.py")
        s.add_argument("--out-dir", help="where vectors and figures go (default outputs/<run>/latent/)")
        s.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
        return s

    s = common("sefa", "the top-k SeFa directions, their eigenvalues and a figure")
    s.add_argument("--k", type=int, default=8, help="how many directions (default 8)")
    s.add_argument("--alpha", type=float, default=3.0, help="figure: steps from -alpha to +alpha (default 3)")
    s.add_argument("--steps", type=int, default=7, help="figure: columns per seed, odd (default 7)")
    s.add_argument("--seeds", default=SEFA_SEEDS, help=f"figure: seeds to edit (default {SEFA_SEEDS})")

    s = common("attribute", "an attribute vector from labelled seeds or from a probe")
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
    s.add_argument("--probe-n", type=int, default=400, help="real images the probe learns from (default 400)")
    s.add_argument("--n", type=int, default=1000, help="generated faces the probe labels (default 1000)")
    s.add_argument("--seed", type=int, default=0, help="first seed of those faces (default 0)")

    s = common("edit", "a strip of one face as a vector is applied, from -strength to +strength")
    s.add_argument("--seed", type=int, required=True, help="the face to edit (a seed, as in generate.py)")
    s.add_argument("--vector", required=True, help="name of a saved attribute vector")
    s.add_argument("--strength", type=float, default=2.0, help="largest multiple of the vector (default 2)")
    s.add_argument("--steps", type=int, default=7, help="frames, odd so the middle one is unedited (default 7)")
    s.add_argument("--out", help="output PNG (default <out-dir>/edit_<vector>_seed<S>.png)")
    return p


def cmd_sefa(args, G, folder, device):
    if not 1 <= args.k <= G.nz:
        raise UserError(f"--k must be from 1 to nz={G.nz}, not {args.k}")
    if args.steps < 2 or args.alpha <= 0:
        raise UserError("--steps must be at least 2 and --alpha positive")
    directions, eigenvalues = sefa(first_layer_weight(G), args.k)
    save_sefa(folder, directions, eigenvalues, args.ckpt)
    seeds = parse_seeds(args.seeds)
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
    if args.labels:
        labels = read_labels(args.labels)
        seeds = sorted(labels)
        z = sample_noise(seeds, G.nz)
        vector = attribute_vector(z, [labels[s] for s in seeds])
        n_pos = sum(labels.values())
        meta = {"source": f"labels {args.labels}", "n_with": n_pos, "n_without": len(seeds) - n_pos}
    else:
        if args.probe_n < 4 * PROBE_HOLDOUT or args.n < 2 * MIN_PROBE_PER_CLASS:
            raise UserError(f"--probe-n must be at least {4 * PROBE_HOLDOUT} and --n at least "
                            f"{2 * MIN_PROBE_PER_CLASS}")
        check_seed(args.seed, "--seed")
        real = args.real if args.real is not None else str(config.get("data", "toyfaces"))
        images, labels, description = labelled_real_images(real, args.from_probe, args.probe_n, config["res"],
                                                           args.attr_file)
        featurize = make_featurizer(args.features, device)
        real_features = features_in_batches(featurize, np.array_split(images, max(1, len(images) // BATCH_SIZE)),
                                            len(images), "real faces")
        probe, accuracy = fit_probe(real_features, labels)
        print(f"probe for {args.from_probe} ({args.features} features) trained on {description}: "
              f"{100 * accuracy:.1f}% right on the held-out fifth")
        z = sample_noise(range(args.seed, args.seed + args.n), G.nz)
        p = probe_probability(probe, generated_features(G, z, device, featurize))
        vector_labels = p > 0.5
        n_pos = int(vector_labels.sum())
        if min(n_pos, args.n - n_pos) < MIN_PROBE_PER_CLASS:
            raise UserError(f"the probe finds {n_pos} of {args.n} generated faces with {args.from_probe}: too few "
                            "on one side for a vector; use a larger --n, or the generator has not learned it")
        vector = attribute_vector(z, vector_labels)
        meta = {"source": f"probe {args.from_probe} ({args.features}) on {description}",
                "probe_accuracy": round(accuracy, 4), "n_with": n_pos, "n_without": args.n - n_pos,
                "seeds": f"{args.seed}..{args.seed + args.n - 1}"}
    path = save_vector(folder, name, vector, {**meta, "ckpt": str(args.ckpt)})
    print(f"wrote {path}: {meta['n_with']} faces with, {meta['n_without']} without, norm "
          f"{vector.norm():.3f}; try: latent.py edit --ckpt {args.ckpt} --seed 0 --vector {name}")


def cmd_edit(args, G, folder, device):
    check_seed(args.seed, "--seed")
    if args.steps < 2 or args.strength <= 0:
        raise UserError("--steps must be at least 2 and --strength positive")
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
