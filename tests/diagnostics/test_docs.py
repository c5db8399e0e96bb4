"""docs/doctor.md documents every finding and every setting (they are one catalogue and one defaults tree)."""
import os

from lazydet.diagnostics.findings import CATALOG
from lazydet.diagnostics.settings import DEFAULTS

DOC = os.path.join(os.path.dirname(__file__), "..", "..", "docs", "doctor.md")


def leaf_keys(tree, prefix=""):
    for k, v in tree.items():
        if isinstance(v, dict):
            yield from leaf_keys(v, f"{prefix}{k}.")
        else:
            yield prefix + k


def test_every_finding_and_setting_is_documented():
    text = open(DOC).read()
    assert [n for n in CATALOG if f"`{n}`" not in text] == []
    missing = [k for k in leaf_keys(DEFAULTS) if k.split(".")[-1] not in text]
    assert missing == []


def test_configs_common_doctor_exposes_the_defaults():
    from lazydet.config import LazyConfig
    cfg = LazyConfig.load(os.path.join(os.path.dirname(DOC), "..", "configs", "common", "doctor.py"))
    assert dict(cfg.doctor)["enabled"] is True and cfg.doctor.loss.window == DEFAULTS["loss"]["window"]
