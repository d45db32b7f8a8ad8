"""Variational autoencoders (genlab.models.vae.vae): `genlab train vae --arch mlp|conv`."""

from genlab.models.vae import vae  # noqa: F401
