"""Linear probes that tell whether a face has an attribute, and the labelled real images they learn from.

A probe is an L2-regularised logistic regression on image features: the FID network's pool3 ("inception")
or the image shrunk to 32x32 ("pixels"). Trained on labelled real faces (the built-in toy faces, or a packed
dataset joined with CelebA's attribute file), it labels the generated faces that latent.py attribute
--from-probe builds an attribute vector from.
"""
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from fakefacegen.cli import UserError
from fakefacegen.data.packed import PackedImages, is_packed
from fakefacegen.data.toyfaces import TOY_ATTRIBUTES, TOYFACES, toyfaces
from fakefacegen.metrics.inception import features_of_images, load_inception
from fakefacegen.sampling import render

BATCH_SIZE = 50
PIXEL_RES = 32  # the cheap "pixels" probe features: images shrunk to 32x32
PROBE_L2 = 1e-2  # ridge penalty on the standardised features; 2048 features, a few hundred images
PROBE_HOLDOUT = 5  # every 5th real image is held out to report the probe's accuracy
TOY_PROBE_SEED = 7  # the toy faces a probe learns from: any seed draws from the same distribution
TOY_POOL_FACTOR = 6  # faces scanned per image wanted: blond, the rarest toy attribute, is 1 face in 5


# ---------------------------------------------------------------------------------------------- features

def make_featurizer(kind, device):
    """uint8 (B, H, W, 3) -> float32 (B, D) features: "inception" (the FID network's pool3, 2048) or
    "pixels" (the image shrunk to 32x32, 3072: no weights needed, good enough for toy faces)."""
    if kind == "pixels":
        def pixels(images):
            x = torch.as_tensor(images).permute(0, 3, 1, 2).float().div(255)
            return F.interpolate(x, size=(PIXEL_RES, PIXEL_RES), mode="area").flatten(1).numpy()
        return pixels
    model = load_inception(device)
    return lambda images: features_of_images(model, [images], device, progress=False)


def features_in_batches(featurize, batches, total, desc):
    out = []
    with tqdm(total=total, desc=desc, unit="img", leave=False) as bar:
        for batch in batches:
            out.append(featurize(batch))
            bar.update(len(batch))
    return np.concatenate(out)


def image_features(featurize, images, desc="real faces"):
    """Features of uint8 images (N, H, W, 3), a batch at a time."""
    return features_in_batches(featurize, np.array_split(images, max(1, len(images) // BATCH_SIZE)),
                               len(images), desc)


def generated_features(G, z, device, featurize, desc="generated faces"):
    """Features of the faces of latent codes z, rendered as generate.py saves them (uint8)."""
    return features_in_batches(featurize, (render(G, chunk, device) for chunk in z.split(BATCH_SIZE)),
                               len(z), desc)


# ---------------------------------------------------------------------------------------------- probes

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


# ---------------------------------------------------------------------------------------------- labelled images

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
    root = Path(root)
    if not is_packed(root) or not (root / "dataset.json").is_file():
        raise UserError(f"--real {root} is not a packed dataset: pack it with preprocess.py, or use toyfaces")
    if attr_file is None:
        raise UserError(f"--real {root} needs --attr-file (e.g. CelebA's list_attr_celeba.txt) for its labels")
    column = read_attribute_column(attr_file, attr)
    data = PackedImages(root)
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
    if real in (None, "", TOYFACES):
        images, labels = toy_labelled_images(attr, n, res)
        return images, labels, f"{len(labels)} toy faces"
    images, labels = packed_labelled_images(real, attr, n, attr_file)
    return images, labels, f"{len(labels)} images of {real}"
