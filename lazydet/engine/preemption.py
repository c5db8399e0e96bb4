"""Preemption handling for SLURM (placeholder until the SLURM work lands)."""


def build_preemption_hooks(cfg, args=None):
    """Hooks that checkpoint and requeue on SIGUSR1/SIGTERM; none yet."""
    return []
