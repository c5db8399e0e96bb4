"""Run a model over a finite loader and feed an evaluator, logging throughput and ETA."""
from __future__ import annotations

import datetime
import logging
import time

import torch

from lazydet.utils import to_device

logger = logging.getLogger(__name__)


def _model_device(model) -> torch.device:
    param = next(iter(model.parameters()), None)
    return param.device if param is not None else torch.device("cpu")


def inference_on_dataset(model, data_loader, evaluator, log_period_s: float = 10.0) -> dict:
    """Evaluate ``model`` on every batch of ``data_loader`` (collective: every rank calls it).

    The model runs in eval mode under ``torch.no_grad`` and gets its previous mode back afterwards.
    Returns the evaluator's results (``{}`` on ranks other than the main one).
    """
    device = _model_device(model)
    total = len(data_loader)
    evaluator.reset()
    was_training = model.training
    model.eval()
    start = last_log = time.perf_counter()
    num_images = 0
    try:
        with torch.no_grad():
            for i, batch in enumerate(data_loader):
                batch = to_device(batch, device)
                # a batch whose images were all unreadable still reaches the evaluator, which counts them
                outputs = model(batch) if batch["targets"] else []
                evaluator.process(batch, outputs)
                num_images += len(batch["targets"])
                now = time.perf_counter()
                if now - last_log >= log_period_s or i + 1 == total:
                    last_log = now
                    ips = num_images / max(now - start, 1e-9)
                    eta = (now - start) / (i + 1) * (total - i - 1)
                    logger.info(f"inference {i + 1}/{total} batches, {ips:.2f} images/s, "
                                f"ETA {datetime.timedelta(seconds=int(eta))}")
    finally:
        model.train(was_training)
    elapsed = time.perf_counter() - start
    logger.info(f"inference done: {num_images} images in {elapsed:.1f} s ({num_images / max(elapsed, 1e-9):.2f} "
                f"images/s on this rank)")
    results = evaluator.evaluate()
    return results if results is not None else {}
