"""Benchmarks and studies, run from the repository's root as modules:

    python -m benchmarks.bench              # training speed against the textbook loop
    python -m benchmarks.bench_fid          # FID's feature speed and agreement with pytorch-fid
    python -m benchmarks.bench_preprocess   # packing photos against a naive loop
    python -m benchmarks.toy2d              # the objectives on 2-D toy distributions
"""
import fakefacegen  # noqa: F401  (first, before any module of this package: an older Python stops with one line)
