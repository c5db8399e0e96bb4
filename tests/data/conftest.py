import pytest


@pytest.fixture
def coco_mini():
    from lazydet.data.builtin import coco_mini_root

    root = coco_mini_root()
    if root is None:
        pytest.skip("coco_mini not found (set LAZYDET_COCO_MINI)")
    return root
