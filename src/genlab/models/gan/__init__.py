"""Generative adversarial networks: MLP and DCGAN generators/discriminators, five losses, conditional GANs."""
