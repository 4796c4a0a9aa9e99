"""The paper's models: ODE-Net and baselines on MNIST, latent ODEs, continuous normalizing flows.

One module per family; models never import the training loop."""
