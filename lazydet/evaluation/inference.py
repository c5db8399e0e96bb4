"""Run a model over a finite loader and feed an evaluator, logging throughput and ETA."""
from __future__ import annotations

import datetime
import logging
import time

import torch

logger = logging.getLogger(__name__)


def _to_device(obj, device):
    try:
        from lazydet.utils import to_device
    except ImportError:  # engine utilities not present: move tensors ourselves
        to_device = None
    if to_device is not None:
        return to_device(obj, device)
    if isinstance(obj, torch.Tensor):
        return obj.to(device)
    if isinstance(obj, dict):
        return {k: _to_device(v, device) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_to_device(v, device) for v in obj)
    return obj


def _model_device(model) -> torch.device:
    param = next(iter(model.parameters()), None)
    return param.device if param is not None else torch.device("cpu")


def inference_on_dataset(model, data_loader, evaluator, log_period_s: float = 10.0) -> dict:
    """Evaluate ``model`` on every batch of ``data_loader`` (collective: every rank calls it).

    The model runs in eval mode under ``torch.no_grad`` and gets its previous mode back afterwards.
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
                batch = _to_device(batch, device)
                outputs = model(batch)
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
