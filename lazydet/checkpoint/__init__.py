"""Checkpoints: atomic saving, exact resume, init weights with a load report."""
from .atomic import atomic_open, atomic_torch_save, atomic_write_text, leftover_temp_files
from .checkpointer import Checkpointer, fetch_state_dict
from .files import CheckpointError, checkpoint_problem, choose_resume_checkpoint
from .load_report import LoadReport, load_state_into

__all__ = ["Checkpointer", "LoadReport", "load_state_into", "fetch_state_dict", "atomic_open",
           "atomic_torch_save", "atomic_write_text", "leftover_temp_files", "CheckpointError",
           "checkpoint_problem", "choose_resume_checkpoint"]
