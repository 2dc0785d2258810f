"""FakeFaceGen's libraries, beneath the commands at the top of the repository (train.py, generate.py, ...).

Here: the command-line machinery (cli), atomic files (files), image grids (grids), where a run's files live
(runs), every training setting (settings), the networks (network), sampling (sampling), the checkpoint layout
(checkpoint), exported generators (export) and the collapse checks (collapse). Beneath: data/, training/,
metrics/, editing/, reports/.
"""
