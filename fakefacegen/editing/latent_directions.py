"""Directions in a generator's latent space and where a run keeps them: SeFa directions, attribute vectors,
the checks on seeds and vector names that the command line and the explorer share, and the files under
outputs/<run>/latent/ (sefa.pt and .json, vectors/<name>.pt and .json).

SeFa (Shen & Zhou, 2021): the generator's first layer maps z linearly to its first feature map, A z; the
unit directions d that change that map the most (largest |A d|) are the top eigenvectors of A^T A.
An attribute vector is the mean latent code of faces that have an attribute minus the mean of faces that
lack it; adding it to any code adds the attribute.
"""
import re
from datetime import UTC, datetime
from pathlib import Path

import torch
from torch import nn

from fakefacegen.checkpoint import read_tensors
from fakefacegen.cli import SEED, UserError, checked
from fakefacegen.files import atomic_path, write_json
from fakefacegen.runs import output_dir, run_of_checkpoint
from fakefacegen.sampling import render

NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,39}")  # also a safe file name: no dots, no slashes


# ---------------------------------------------------------------------------------------------- directions

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


def edit_strip(G, z, direction, strength, steps, device):
    """The face of z with strength * t * direction added, t from -1 to +1 in `steps` frames (middle: no edit)."""
    ts = torch.linspace(-strength, strength, steps)
    return render(G, z[None] + ts[:, None] * direction[None], device)


def attribute_vector(z, labels):
    """mean(z of faces with the attribute) - mean(z of faces without); labels: 0/1 per row of z."""
    labels = torch.as_tensor(labels).bool()
    n_pos, n_neg = int(labels.sum()), int((~labels).sum())
    if n_pos == 0 or n_neg == 0:
        raise UserError(f"an attribute vector needs faces with and without the attribute ({n_pos} with, "
                        f"{n_neg} without): label some of each")
    return z[labels].mean(0) - z[~labels].mean(0)


# ---------------------------------------------------------------------------------------------- checks

def check_seed(seed, what="seed"):
    return checked(SEED, seed, what)


def check_name(name):
    if not isinstance(name, str) or not NAME_PATTERN.fullmatch(name):
        raise UserError(f"vector name {str(name)[:60]!r} is not allowed: use 1-40 letters, digits, _ or -, "
                        "starting with a letter or digit")
    return name


# ---------------------------------------------------------------------------------------------- files

def default_latent_dir(ckpt_path):
    """outputs/<run>/latent/, beside the run's other outputs."""
    return output_dir(run_of_checkpoint(ckpt_path)) / "latent"


def vector_path(folder, name):
    return Path(folder) / "vectors" / f"{check_name(name)}.pt"


def list_vectors(folder):
    """Names of the attribute vectors saved under folder/vectors/, sorted."""
    root = Path(folder) / "vectors"
    return sorted(p.stem for p in root.glob("*.pt") if NAME_PATTERN.fullmatch(p.stem)) if root.is_dir() else []


def save_vector(folder, name, vector, meta):
    """folder/vectors/<name>.pt ({"vector": (nz,), **meta}, plain values only) and a readable .json twin."""
    path = vector_path(folder, name)
    vector = vector.detach().float().cpu()
    meta = {"name": name, "nz": len(vector), "norm": round(vector.norm().item(), 6),
            "created": datetime.now(UTC).isoformat(timespec="seconds"), **meta}
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
        saved = read_tensors(path)
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
        saved = read_tensors(Path(folder) / "sefa.pt")
        directions, eigenvalues = saved["directions"].float(), saved["eigenvalues"].float()
    except Exception:
        return None
    return (directions, eigenvalues) if directions.ndim == 2 and directions.shape[1] == nz else None
