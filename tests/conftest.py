"""Suite-wide fixtures."""
import logging
import os

import pytest

# The coco_mini_* datasets of every test are the 22-image real-COCO fixture in the repository (set before
# lazydet.data registers them; subprocesses inherit it), whatever the user's own $LAZYDET_COCO_MINI says.
COCO_MINI_FIXTURE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures", "coco_mini")
os.environ["LAZYDET_COCO_MINI"] = COCO_MINI_FIXTURE


@pytest.fixture(autouse=True)
def _restore_lazydet_logger():
    """In-process train_net runs call setup_logger, which stops the `lazydet` logger from propagating (and
    adds handlers writing into a test's tmp folder); undo that after each test so caplog sees later tests' logs."""
    logger = logging.getLogger("lazydet")
    saved = (logger.propagate, list(logger.handlers), logger.level)
    yield
    logger.propagate, level = saved[0], saved[2]
    for h in list(logger.handlers):
        if h not in saved[1]:
            logger.removeHandler(h)
            h.close()
    logger.setLevel(level)


@pytest.fixture(autouse=True)
def _restore_torch_threads():
    """Tools called in-process (benchmark --threads 1, ablation cells) set torch's global thread count; restore
    it so that later tests (e.g. an in-process resume compared bit for bit with a subprocess run) run as
    a fresh process would."""
    import torch

    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)
