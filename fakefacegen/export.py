"""A generator to share: G_eval alone as a .safetensors file (tensors and text, never code, read without
unpickling), every training setting and a summary of the run in its metadata, and a short model card beside it.
read_exported turns the file back into what a checkpoint loads as (G_eval, config, step, epoch, best_fid), so
every tool that samples takes either.

The metadata (safetensors allows text only): format, format_version, config (JSON: every setting of the run),
architecture (JSON: the settings the weights depend on), res, data, step, epoch, and best_fid with fid_n and
fid_real when the run measured one.
"""
import json
import math
import subprocess
from pathlib import Path

from safetensors import safe_open
from safetensors.torch import save as safetensors_bytes

from fakefacegen.cli import UserError
from fakefacegen.data.toyfaces import TOYFACES
from fakefacegen.files import atomic_path, check_output
from fakefacegen.network import G_ARCHITECTURE_KEYS
from fakefacegen.runs import fid_real_set, training_data

EXPORT_SUFFIX = ".safetensors"
FORMAT, FORMAT_VERSION = "fakefacegen-generator", "1"
CELEBA_URL = "https://mmlab.ie.cuhk.edu.hk/projects/CelebA.html"
REPOSITORY = Path(__file__).resolve().parents[1]
TAGS = ("gan", "dcgan", "faces", "unconditional-image-generation", "pytorch", "safetensors", "fakefacegen")


def code_commit():
    """The commit of the code that writes the file (git rev-parse HEAD), or "unknown" outside a git checkout."""
    try:
        found = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPOSITORY, capture_output=True, text=True,
                               timeout=10)
    except (OSError, subprocess.SubprocessError):  # no git here
        return "unknown"
    commit = found.stdout.strip()
    return commit if found.returncode == 0 and commit else "unknown"


def counted(number, word):
    """1 epoch, 2 epochs, 12,345 iterations."""
    return f"{number:,} {word}{'' if number == 1 else 's'}"


def check_export_target(path, force):
    """Before any work: the name ends in .safetensors, and neither it nor its card exists unless force."""
    path = Path(path)
    if path.suffix.lower() != EXPORT_SUFFIX:
        raise UserError(f"--export {path}: the name must end in {EXPORT_SUFFIX}, e.g. "
                        f"{path.with_suffix(EXPORT_SUFFIX)}")
    for target in (path, path.with_suffix(".md")):
        check_output(target, "--export", force)


def export_metadata(ckpt):
    """The file's metadata, all strings: the settings as JSON and the run's summary."""
    cfg = ckpt["config"]
    meta = {"format": FORMAT, "format_version": FORMAT_VERSION, "config": json.dumps(cfg, sort_keys=True),
            "architecture": json.dumps({key: cfg.get(key) for key in G_ARCHITECTURE_KEYS}),
            "res": str(cfg.get("res")), "data": str(training_data(cfg))}
    for key in ("step", "epoch"):
        if isinstance(ckpt.get(key), int):
            meta[key] = str(ckpt[key])
    if math.isfinite(ckpt.get("best_fid", math.inf)):
        meta.update(best_fid=repr(float(ckpt["best_fid"])), fid_n=str(cfg.get("fid_n")),
                    fid_real=str(fid_real_set(cfg)))
    return meta


def data_licence(data):
    """What the training images allow, as far as their name tells: a model card must say it."""
    name = Path(str(data or TOYFACES)).name.lower()
    if name == TOYFACES or name.startswith("toy"):
        return ("none needed: the toy faces are synthetic, drawn by FakeFaceGen's own code (toyfaces.py); no "
                "photo or drawing of anyone was used, so the generator and its samples are free to share")
    if "celeba" in name:
        return (f"CelebA ({CELEBA_URL}) may be used for non-commercial research only; treat this generator and "
                "its samples as bound by the same terms (no commercial use)")
    if "anime" in name:
        return ("anime faces are drawings whose copyright stays with their artists: check the terms of the "
                "collection it was trained on before sharing it or using samples commercially")
    return f"unknown: the terms of the images in {data} apply; check them before sharing"


def hub_metadata(data):
    """The card's YAML front matter, as Hugging Face reads a model card's: licence, library, tags, data set."""
    name = Path(str(data or TOYFACES)).name.lower()
    if "celeba" in name:
        licence = ["license: other", "license_name: celeba-non-commercial-research", f"license_link: {CELEBA_URL}"]
    else:  # the terms are the trainer's to choose (toy faces), or those of images only the trainer knows
        licence = ["license: unknown"]
    datasets = ["datasets:", "- celeba"] if "celeba" in name else []
    return ["---", *licence, "library_name: pytorch", "pipeline_tag: unconditional-image-generation", "tags:",
            *(f"- {tag}" for tag in TAGS), *datasets, "---"]


def loading_snippet(name):
    """Python that loads the file with safetensors and FakeFaceGen's network module alone, no checkpoint code."""
    return ["```python", "import json", "", "import torch", "from safetensors import safe_open",
            "from safetensors.torch import load_file", "", "from fakefacegen.network import generator_from_config", "",
            f'with safe_open("{name}", framework="pt") as f:',
            '    config = json.loads(f.metadata()["config"])  # every training setting',
            "G = generator_from_config(config)",
            f'G.load_state_dict(load_file("{name}"))',
            "G.eval()  # BatchNorm's statistics are the recalibrated ones: each face is drawn on its own",
            "with torch.no_grad():",
            '    faces = G(torch.randn(16, config["nz"]))  # (16, 3, res, res), in [-1, 1]',
            "```"]


def model_card(ckpt, path):
    """A short Markdown card: hub metadata, what the file is, what it was trained on, how well, the code that
    wrote it, how to use and load it."""
    cfg, meta = ckpt["config"], export_metadata(ckpt)
    steps = counted(int(meta["step"]), "iteration") if "step" in meta else "iterations unknown"
    epochs = f", {counted(int(meta['epoch']), 'epoch')}" if "epoch" in meta else ""
    fid = (f"{float(meta['best_fid']):.2f}: the lowest FID the run measured up to this checkpoint ({meta['fid_n']}"
           f" samples against {meta['fid_real']}); it is this generator's own when exported from best.pt"
           if "best_fid" in meta else "not measured during training")
    name = Path(path).name
    return "\n".join([
        *hub_metadata(cfg.get("data")), "",
        f"# {name}", "",
        f"A DCGAN face generator trained with FakeFaceGen: {cfg.get('res')} px faces from a {cfg.get('nz')}-d "
        "standard normal latent. It is G_eval, the sampler (with --ema, the average of G) with its BatchNorm "
        "statistics recalibrated for eval mode; the discriminator and optimisers are not included.", "",
        f"- **Data:** {meta['data']}", f"- **Resolution:** {cfg.get('res')} px",
        f"- **Training:** {steps}{epochs}, loss {cfg.get('loss', 'bce')}, batch {cfg.get('batch_size')}",
        f"- **FID:** {fid}", f"- **Licence of the data:** {data_licence(cfg.get('data'))}",
        f"- **Code:** FakeFaceGen, commit {code_commit()} (the code that exported it)", "",
        "The file is safetensors: tensors and text only, so reading it runs no code. Its metadata holds every "
        "training setting (`config`, JSON) and this summary.", "",
        "With FakeFaceGen's commands, from its folder (seed s gives the same face as from the training checkpoint):",
        "", "```bash", f"python generate.py --ckpt {name} --n 16 --seed 0", f"python evaluate_fid.py --ckpt {name} "
        "--real REAL_IMAGES --pr", f"python explore.py --ckpt {name}", "```", "",
        "In your own Python, with safetensors and FakeFaceGen's network module:", "", *loading_snippet(name), "",
        "Samples can resemble faces of the training set, and they carry its biases (who is in it, how they are "
        "framed and lit).", ""])


def sorted_header(data):
    """safetensors writes the metadata in a random order (a Rust HashMap): the same header with its keys sorted,
    so that one checkpoint always exports to the same bytes (a hash worth publishing). The layout: the header's
    length (u64, little-endian), the header (JSON, padded with spaces to 8 bytes), then the tensors' bytes."""
    size = int.from_bytes(data[:8], "little")
    header = json.loads(data[8:8 + size])
    header = {"__metadata__": dict(sorted(header.pop("__metadata__").items())), **header}
    text = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode()
    text += b" " * (-len(text) % 8)
    return len(text).to_bytes(8, "little") + text + data[8 + size:]


def write_export(ckpt, path, force=False):
    """A loaded checkpoint's G_eval as `path` (.safetensors) and its model card as `path`.md, each atomically;
    returns the card's path."""
    path = Path(path)
    check_export_target(path, force)
    tensors = {key: value.detach().cpu().contiguous() for key, value in ckpt["G_eval"].items()}
    data = sorted_header(safetensors_bytes(tensors, metadata=export_metadata(ckpt)))
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    card = path.with_suffix(".md")
    with atomic_path(card) as tmp:
        tmp.write_text(model_card(ckpt, path), encoding="utf-8")
    return card


def read_exported(path, device="cpu"):
    """An exported file as a checkpoint-like dict: G_eval, and config when its metadata is FakeFaceGen's (the
    caller checks); step, epoch, best_fid where recorded. Unreadable bytes raise the reader's own error."""
    with safe_open(str(path), framework="pt", device="cpu") as f:
        meta = f.metadata() or {}
        # safe_open has keys() and no __iter__
        state = {"G_eval": {key: f.get_tensor(key).to(device) for key in f.keys()}}  # noqa: SIM118
    if meta.get("format") != FORMAT:
        return state  # not ours: no config, so load_checkpoint refuses it
    state["config"] = json.loads(meta["config"])
    for key, kind in (("step", int), ("epoch", int), ("best_fid", float)):
        if key in meta:
            state[key] = kind(meta[key])
    return state
