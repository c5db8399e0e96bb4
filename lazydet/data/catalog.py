"""Dataset catalog: dataset names -> functions returning records, plus per-dataset metadata.

Recipes name datasets by string (``"coco_2017_train"``); the catalog turns the name into records
lazily, so registering COCO costs nothing until a loader is built.
"""
from __future__ import annotations

import difflib
import types
from typing import Any, Callable


class DataError(ValueError):
    """Bad dataset input; the message is one line naming the file / key at fault."""


def _unknown_name(kind: str, name: str, known) -> DataError:
    close = difflib.get_close_matches(name, list(known), n=3)
    hint = f"; did you mean {', '.join(repr(c) for c in close)}?" if close else ""
    return DataError(f"{kind} {name!r} is not registered{hint} (registered: {len(known)} names, "
                     f"see lazydet.data.DatasetCatalog.list())")


class _DatasetCatalog:
    """name -> zero-argument function returning a list of record dicts."""

    def __init__(self):
        self._funcs: dict[str, Callable[[], list]] = {}

    def register(self, name: str, func: Callable[[], list]) -> None:
        """Register ``func`` (no arguments -> list of records) under ``name``; a name is registered once."""
        if not callable(func):
            raise TypeError(f"DatasetCatalog.register({name!r}, ...): func must be callable")
        if name in self._funcs:
            raise DataError(f"dataset {name!r} is already registered")
        self._funcs[name] = func

    def get(self, name: str) -> list:
        """The records of ``name`` (calls its function); an unknown name is a ``DataError`` with suggestions."""
        if name not in self._funcs:
            raise _unknown_name("dataset", name, self._funcs)
        return self._funcs[name]()

    def list(self) -> list[str]:
        """Registered names, sorted."""
        return sorted(self._funcs)

    def remove(self, name: str) -> None:
        """Forget ``name`` (tests)."""
        self._funcs.pop(name)

    def __contains__(self, name: str) -> bool:
        return name in self._funcs


class Metadata(types.SimpleNamespace):
    """Attributes of one dataset (thing_classes, id maps, json_file, ...). Set once, read anywhere."""

    name: str = "N/A"

    def __getattr__(self, key: str) -> Any:
        # only called when the attribute is missing
        known = sorted(k for k in self.__dict__)
        raise AttributeError(f"metadata of dataset {self.__dict__.get('name', '?')!r} has no {key!r} "
                             f"(available: {', '.join(known)})")

    def set(self, **kwargs) -> "Metadata":
        """Set attributes; changing one already set to another value is a ``DataError``. Returns self."""
        for k, v in kwargs.items():
            old = self.__dict__.get(k, None)
            if k in self.__dict__ and old != v:
                raise DataError(f"metadata {k!r} of dataset {self.name!r} is already {old!r}; refusing to set {v!r}")
            setattr(self, k, v)
        return self

    def get(self, key: str, default: Any = None) -> Any:
        """Attribute ``key``, or ``default`` when it was never set."""
        return self.__dict__.get(key, default)

    def as_dict(self) -> dict:
        """A shallow copy of every attribute."""
        return dict(self.__dict__)


class _MetadataCatalog:
    """name -> ``Metadata`` (created empty on first access)."""

    def __init__(self):
        self._meta: dict[str, Metadata] = {}

    def get(self, name: str) -> Metadata:
        """Metadata of ``name`` (created empty on first access, like detectron2)."""
        if name not in self._meta:
            self._meta[name] = Metadata(name=name)
        return self._meta[name]

    def remove(self, name: str) -> None:
        self._meta.pop(name, None)

    def list(self) -> list[str]:
        return sorted(self._meta)


DatasetCatalog = _DatasetCatalog()
MetadataCatalog = _MetadataCatalog()


def dataset_records(name: str) -> list[dict]:
    """The records of dataset ``name`` that training and evaluation use: the validated records of
    ``DatasetCatalog.get(name)`` minus the images ``check_datasets`` found unreadable (``bad_images`` in
    the metadata: file name -> reason). Both the loaders and the evaluator's ground truth read this."""
    meta = MetadataCatalog.get(name)
    records = meta.__dict__.pop("checked_records", None)  # left by check_datasets: the json is read once
    records = DatasetCatalog.get(name) if records is None else records
    bad = meta.get("bad_images") or {}
    return [r for r in records if r["file_name"] not in bad] if bad else records


def ensure_category_metadata(name: str) -> Metadata:
    """Make sure ``thing_classes`` and the id maps are set (reading only the json's categories)."""
    meta = MetadataCatalog.get(name)
    if meta.get("thing_dataset_id_to_contiguous_id") is None:
        DatasetCatalog.get(name)  # loading the json sets the category metadata
    return meta


def verify_num_classes(dataset_names, num_classes: int) -> None:
    """Fail with one line when a recipe's ``num_classes`` disagrees with its dataset(s)."""
    if isinstance(dataset_names, str):
        dataset_names = [dataset_names]
    for name in dataset_names:
        classes = ensure_category_metadata(name).thing_classes
        if len(classes) != num_classes:
            raise DataError(f"model num_classes={num_classes} but dataset {name!r} has {len(classes)} "
                            f"classes; set model.num_classes={len(classes)} in the recipe")
