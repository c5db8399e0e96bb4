"""Shared utilities: event storage and writers, process-group helpers, logging, seeds, device moves."""
from .device import resolve_device, to_device
from .events import EventStorage, get_event_storage

__all__ = ["to_device", "resolve_device", "EventStorage", "get_event_storage"]
