"""The start of every run of scripts/train_net.py: its argument parser, and the setup (output folder, logs,
config dumps, seed) that comes before anything is built. Building the parts is `build.py`'s job."""
import argparse
import logging
import os
import sys

from ..utils import comm
from ..utils.env import collect_env_info, seed_all_rng
from ..utils.logger import setup_logger

logger = logging.getLogger("lazydet")


def default_argument_parser(epilog: str = None) -> argparse.ArgumentParser:
    """train_net's command line (detectron2's flags): --config-file, --resume, --eval-only, the launch options
    (--num-gpus, --num-machines, --machine-rank, --dist-url) and `key=value` overrides in `opts`."""
    parser = argparse.ArgumentParser(
        description="Train or evaluate a lazydet recipe.",
        epilog=epilog or """examples:
  single process:      python -m scripts.train_net --config-file R.py train.max_iter=100
  4 local GPUs:        python -m scripts.train_net --config-file R.py --num-gpus 4
  2 nodes x 8 GPUs:    (node 0) ... --num-gpus 8 --num-machines 2 --machine-rank 0 --dist-url tcp://node0:29500
                       (node 1) ... --num-gpus 8 --num-machines 2 --machine-rank 1 --dist-url tcp://node0:29500
  torchrun / srun:     torchrun --nproc-per-node 8 -m scripts.train_net --config-file R.py  (ranks from env)
  resume:              python -m scripts.train_net --config-file R.py --resume train.output_dir=<same dir>
  evaluate:            python -m scripts.train_net --config-file R.py --eval-only train.init_checkpoint=W.pth
""",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--config-file", required=True, metavar="FILE", help="recipe (.py) or saved config (.yaml)")
    parser.add_argument("--resume", action="store_true",
                        help="continue from train.output_dir/last_checkpoint (model, optimizer, scheduler, grad "
                             "scaler, EMA, iteration, RNG); without one, start from train.init_checkpoint")
    parser.add_argument("--eval-only", action="store_true",
                        help="only evaluate: weights from train.init_checkpoint (or the last checkpoint with "
                             "--resume)")
    parser.add_argument("--num-gpus", type=int, default=1,
                        help="processes per machine (one per GPU; CPU processes with gloo when there is no CUDA)")
    parser.add_argument("--num-machines", type=int, default=1, help="number of machines")
    parser.add_argument("--machine-rank", type=int, default=0, help="rank of this machine (0..num-machines-1)")
    parser.add_argument("--dist-url", default="auto",
                        help="tcp://<host of machine 0>:<port> for several machines; 'auto' = a free local port")
    parser.add_argument("opts", nargs=argparse.REMAINDER, default=[], metavar="key=value",
                        help="config overrides, e.g. train.max_iter=1000 optimizer.lr=2e-4")
    return parser


def default_setup(cfg, args) -> str:
    """Output folder, logging (log.txt), environment and argument log and the seed (`train.seed`, -1 =
    random, logged). Returns the output folder. config.yaml/config.py are written when training starts
    (`run_folder.RunFolder`), so a run that fails before that leaves the previous ones in place."""
    output_dir = cfg.train.output_dir
    rank = comm.get_rank()
    if comm.is_main_process():
        os.makedirs(output_dir, exist_ok=True)
    comm.synchronize()
    setup_logger(output_dir, rank=rank)
    logger.info(f"Rank {rank} of {comm.get_world_size()}; command line: {' '.join(sys.argv)}")
    logger.info("Environment:\n" + collect_env_info())
    seed = int(cfg.train.seed)
    drawn = seed < 0
    if drawn:  # one random base seed for all ranks (rank 0's), so the log line reproduces the whole run
        seed = comm.broadcast_object(int.from_bytes(os.urandom(4), "big") % 2**30)
    seed_all_rng(seed + rank)
    logger.info(f"Seed: {seed} + rank" + (" (drawn at random because train.seed=-1; pass train.seed="
                                          f"{seed} to repeat)" if drawn else ""))
    return output_dir
