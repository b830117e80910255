"""The VAE and its maths: layers, likelihoods and KL, the reparameterization trick,
evaluation. Nothing about files, devices or the command line."""
