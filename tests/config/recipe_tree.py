"""Builds small recipe trees in a temp folder (configs/ and projects/ are not Python packages)."""
import textwrap
from pathlib import Path


def write_tree(root: Path, files: dict) -> Path:
    """Write {relative path: source} under root (sources are dedented) and return root."""
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text).lstrip())
    return root


COMMON_TRAIN = """
    train = dict(
        output_dir="./output",
        max_iter=90000,
        eval_period=5000,
        amp=dict(enabled=False, dtype="bf16"),
        checkpointer=dict(period=5000, max_to_keep=2),
        init_checkpoint="",
        seed=-1,
        lr_scale=1.0,
        wandb=dict(enabled=False, project="lazydet"),
    )
"""

COMMON_OPTIM = """
    import torch
    from lazydet.config import LazyCall as L

    AdamW = L(torch.optim.AdamW)(params=None, lr=1e-4, betas=(0.9, 0.999), weight_decay=0.1)
"""

COMMON_SCHEDULE = """
    import torch
    from lazydet.config import LazyCall as L

    lr_multiplier_12ep = L(dict)(
        scheduler=L(torch.optim.lr_scheduler.MultiStepLR)(optimizer=None, milestones=[11], gamma=0.1),
        warmup_length=0.0,
    )
"""

MODEL = """
    import collections
    import torch
    from lazydet.config import LazyCall as L

    model = L(collections.OrderedDict)(
        backbone=L(torch.nn.Linear)(in_features=4, out_features=8),
        head=L(torch.nn.Sequential)(L(torch.nn.Linear)(8, 2), L(torch.nn.ReLU)()),
        output_dir="${..train.output_dir}",
        num_classes=80,
    )
"""

RECIPE = """
    from ....configs.common.train import train
    from ....configs.common.optim import AdamW as optimizer
    from ....configs.common.schedule import lr_multiplier_12ep as lr_multiplier
    from .models.tiny import model

    train.max_iter = 300
    train.output_dir = "./output/tiny"
    optimizer.lr = 2e-4
    model.num_classes = 3
"""


def standard_tree(root: Path) -> Path:
    """configs/common/* shared parts plus projects/demo/configs/{models/tiny.py, recipe.py}."""
    return write_tree(root, {
        "configs/common/train.py": COMMON_TRAIN,
        "configs/common/optim.py": COMMON_OPTIM,
        "configs/common/schedule.py": COMMON_SCHEDULE,
        "projects/demo/configs/models/tiny.py": MODEL,
        "projects/demo/configs/recipe.py": RECIPE,
    })
