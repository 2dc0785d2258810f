"""Measuring generators: the Inception network and its features, FID and KID, precision and recall, what is
compared (folders, datasets, checkpoints, cached statistics) and the held-out quality protocol's data."""
