import os

import pytest


@pytest.fixture
def coco_mini():
    """Folder of the in-repo real-COCO fixture that backs the coco_mini_* datasets in tests."""
    from lazydet.data.builtin import coco_mini_root

    root = coco_mini_root()
    assert os.path.isfile(os.path.join(root, "annotations", "instances_val2017.json")), root
    return root
