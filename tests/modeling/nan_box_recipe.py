"""The tiny quickstart (tests/slurm/quickstart_tiny.py) with the first box of every training image made NaN by
the mapper: the run must stop with the matcher's one-line DataError naming the image."""
from lazydet.config import LazyCall as L
from tests.modeling.corrupt_data import NaNFirstBox

from ..slurm.quickstart_tiny import dataloader, lr_multiplier, model, optimizer, train

dataloader.train.mapper = L(NaNFirstBox)(mapper=dataloader.train.mapper)
dataloader.train.num_workers = 0
train.max_iter = 2
