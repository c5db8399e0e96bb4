"""train_net over `bad_data_train` / `bad_data_val` (COCO jsons and images under $LAZYDET_BAD_DATA/{train,val}/,
registered here) with a stand-in detector that predicts the ground truth: the bad-input handling of the whole
data path (start check, loaders, evaluator) in seconds. Used by tests/data/test_bad_data_train_net.py."""
import os

from fvcore.common.param_scheduler import ConstantParamScheduler

from lazydet.config import LazyCall as L
from lazydet.config import get_config
from lazydet.data import DatasetCatalog, register_coco_instances
from tests.data.data_test_utils import GroundTruthDetector

for _split in ("train", "val"):
    if f"bad_data_{_split}" not in DatasetCatalog:
        _folder = os.path.join(os.environ["LAZYDET_BAD_DATA"], _split)
        register_coco_instances(f"bad_data_{_split}", os.path.join(_folder, "ann.json"), os.path.join(_folder, "images"))

model = L(GroundTruthDetector)()

dataloader = get_config("common/data/synthetic_shapes.py").dataloader
dataloader.train.dataset.names = "bad_data_train"
dataloader.train.total_batch_size = 2
dataloader.train.num_workers = 0
dataloader.test.dataset.names = "bad_data_val"
dataloader.test.batch_size = 2
dataloader.test.num_workers = 0

optimizer = get_config("common/optim.py").SGD
lr_multiplier = L(ConstantParamScheduler)(value=1.0)

train = get_config("common/train.py").train
train.max_iter = 2
train.eval_period = 0
train.log_period = 1
train.checkpointer.period = 100
train.device = "cpu"
train.seed = 0
train.doctor.enabled = False
