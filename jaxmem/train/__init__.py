"""Training: the one optax loop (state, EMA, checkpoints) and the vmapped GMM grid trainer."""
