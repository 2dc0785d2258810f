"""Editing faces in latent space: SeFa and attribute directions, the attribute probe, the explorer's page."""
