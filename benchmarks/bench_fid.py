"""Speed of evaluate_fid.py beside pytorch-fid, in one run on the same inputs.

    python -m benchmarks.bench_fid                      # CPU; --device cuda on a GPU
    python -m benchmarks.bench_fid --batches 3 --rounds 3

1. Inception feature extraction, images/s: ours, and pytorch-fid's InceptionV3 on the same batch when
   pytorch_fid is importable (given our converted weights, so no download), with the largest difference.
2. The Frechet distance of two 2048-d statistics: ours (one symmetric eigensolve) against pytorch-fid's
   scipy.linalg.sqrtm, and the two values.
Rounds alternate between the contenders, and the best round counts, so that other work on a shared machine
hurts both alike.
"""
import os
import time
from pathlib import Path

import numpy as np
import torch

from fakefacegen.cli import ArgumentParser, UserError, resolve_device, run
from fakefacegen.metrics.fid import frechet_distance
from fakefacegen.metrics.fid_sources import folder_source, toyfaces_source
from fakefacegen.metrics.inception import BATCH_SIZE, FEATURE_DIM, features_of_images, load_inception

REFERENCE = Path(__file__).resolve().parents[2] / "shared" / "fid_reference" / "celeba_a"


def test_batch(batch_size):
    """Real 64 px faces when ../shared is there, else toy faces: uint8 (B, 64, 64, 3)."""
    if REFERENCE.is_dir():
        source = folder_source(REFERENCE, batch_size)
    else:
        source = toyfaces_source(batch_size, 64, 0)
    return next(iter(source.batches(batch_size)))


def pytorch_fid_model(ours, device):
    """pytorch-fid's InceptionV3([pool3]) with our weights handed to it instead of its download."""
    try:
        from pytorch_fid import inception as pf
    except ImportError:
        return None
    state = {k: v.cpu() for k, v in ours.state_dict().items()}
    state.update({"fc.weight": torch.zeros(1008, FEATURE_DIM), "fc.bias": torch.zeros(1008)})  # unused layer
    pf.load_state_dict_from_url = lambda *args, **kwargs: state
    model = pf.InceptionV3([pf.InceptionV3.BLOCK_INDEX_BY_DIM[FEATURE_DIM]]).to(device).eval()
    return lambda x: model(x)[0].flatten(1)


def bench_features(model, device, batch_size, batches, rounds):
    uint8 = test_batch(batch_size)
    # pytorch-fid's input as its DataLoader stacks it: contiguous NCHW floats in [0, 1].
    x = torch.as_tensor(uint8).permute(0, 3, 1, 2).float().div(255).contiguous().to(device)
    theirs = pytorch_fid_model(model, device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)

    def ours_run():
        out = features_of_images(model, [uint8] * batches, device, progress=False)
        sync()
        return out

    def theirs_run():
        with torch.inference_mode():
            out = [theirs(x).cpu().numpy() for _ in range(batches)]
        sync()
        return np.concatenate(out)

    contenders = {"ours": ours_run, **({"pytorch-fid": theirs_run} if theirs else {})}
    for fn in contenders.values():
        fn()  # warm-up: allocations, cuDNN autotuning
    rates, outs = dict.fromkeys(contenders, 0.0), {}
    for _ in range(rounds):
        for name, fn in contenders.items():
            start = time.perf_counter()
            outs[name] = fn()
            rates[name] = max(rates[name], batch_size * batches / (time.perf_counter() - start))
    print(f"Inception features ({batch_size} x 64 px faces per batch, {batches} batch(es), best of {rounds}, "
          f"{device}, {torch.get_num_threads()} CPU threads):")
    print(f"  ours         {rates['ours']:8.1f} images/s")
    if theirs is None:
        print("  pytorch-fid  (not installed: pip install --no-deps pytorch-fid==0.3.0 to compare)")
    else:
        diff = np.abs(outs["ours"] - outs["pytorch-fid"]).max()
        print(f"  pytorch-fid  {rates['pytorch-fid']:8.1f} images/s   ours / theirs = "
              f"{rates['ours'] / rates['pytorch-fid']:.2f}x, max |difference| {diff:.1e}")


def bench_frechet(rounds):
    try:  # the reference only, a test-time package (requirements-dev.txt): fid.py itself does not use scipy
        from scipy import linalg
    except ImportError:
        raise UserError("benchmarks.bench_fid compares against scipy.linalg.sqrtm: "
                        "pip install -r requirements-dev.txt") from None

    rng = np.random.default_rng(0)
    # Features shaped like real ones (N = 4000, correlated), one set shifted and scaled.
    mix = rng.standard_normal((FEATURE_DIM, FEATURE_DIM)) / np.sqrt(FEATURE_DIM)
    a = rng.standard_normal((4000, FEATURE_DIM)) @ mix
    b = (rng.standard_normal((4000, FEATURE_DIM)) @ mix) * 1.1 + 0.02
    mu1, s1, mu2, s2 = a.mean(0), np.cov(a, rowvar=False), b.mean(0), np.cov(b, rowvar=False)

    def sqrtm_fid():  # pytorch-fid 0.3.0's calculate_frechet_distance
        covmean = linalg.sqrtm(s1.dot(s2))
        diff = mu1 - mu2
        return diff.dot(diff) + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean.real)

    times = {"ours": [], "sqrtm": []}
    values = {}
    for _ in range(rounds):
        for name, fn in (("ours", lambda: frechet_distance(mu1, s1, mu2, s2)), ("sqrtm", sqrtm_fid)):
            start = time.perf_counter()
            values[name] = fn()
            times[name].append(time.perf_counter() - start)
    ours, ref = min(times["ours"]), min(times["sqrtm"])
    print(f"Frechet distance, 2048-d (best of {rounds}):")
    print(f"  ours (Cholesky + eigvalsh)  {ours:7.2f} s   FID {values['ours']:.6f}")
    print(f"  scipy.linalg.sqrtm          {ref:7.2f} s   FID {values['sqrtm']:.6f}")
    print(f"  speed-up {ref / ours:.1f}x, relative difference {abs(values['ours'] / values['sqrtm'] - 1):.1e}")


def main():
    p = ArgumentParser(prog="python -m benchmarks.bench_fid", description=__doc__)
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    p.add_argument("--batch-size", type=int, default=BATCH_SIZE)
    p.add_argument("--batches", type=int, default=1, help="batches per timed round")
    p.add_argument("--rounds", type=int, default=2, help="alternating rounds; the best counts")
    args = p.parse_args()
    device = resolve_device(args.device)
    print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPU(s); torch {torch.__version__}")
    bench_features(load_inception(device), device, args.batch_size, args.batches, args.rounds)
    bench_frechet(args.rounds)


if __name__ == "__main__":
    run(main)
