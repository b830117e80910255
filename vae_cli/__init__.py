"""vae-cli: train, evaluate and look at variational autoencoders on MNIST from a terminal."""

__version__ = "0.1.0"
