"""Training: the one optax loop (state, EMA, checkpoints) and the vmapped GMM grid trainer."""


class Preempted(Exception):
    """A training run stopped by SIGTERM after saving its checkpoint; the same command resumes it.
    The launchers (jaxmem.cli) answer it with exit status 143 (128 + SIGTERM), which schedulers
    requeue."""
