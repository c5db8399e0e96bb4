"""Shared training settings (`train.*`); recipes import `train` and change only what differs.
Lengths in epochs (`max_epochs`, `eval_period_epochs`, `checkpointer.period_epochs`) win over the
iteration values when not None. See docs/engine.md."""
from .doctor import doctor

train = dict(
    output_dir="./output",
    init_checkpoint="",              # local .pth, http(s) URL or "timm://<name>"; loaded with a key report
    max_iter=90000,
    max_epochs=None,
    eval_period=5000,
    eval_period_epochs=None,
    log_period=20,
    checkpointer=dict(period=5000, period_epochs=None, max_to_keep=100),
    amp=dict(enabled=False, dtype="bf16"),          # "bf16" or "fp16" (fp16 uses a GradScaler)
    clip_grad=dict(enabled=False, params=dict(max_norm=0.1, norm_type=2)),
    grad_accumulation_steps=1,
    ddp=dict(broadcast_buffers=False, find_unused_parameters=False, fp16_compression=False),
    ema=dict(enabled=False, decay=0.9998),
    best_checkpointer=dict(enabled=True, metric="bbox/AP", mode="max"),
    device="cuda",                   # falls back to the CPU (said once) when CUDA is missing
    seed=-1,                         # -1: a random seed, written to log.txt
    wandb=dict(enabled=False, project="lazydet", name=None, entity=None),
    # SIGUSR1/USR2/TERM -> checkpoint + stop (+ SLURM requeue; None = when in a SLURM job), docs/slurm.md
    preemption=dict(enabled=True, requeue=None),
    doctor=doctor,
)
