"""Train (or evaluate) a lazydet recipe: the whole run, wired in one place (detectron2's lazyconfig_train_net).

    python -m scripts.train_net --config-file F [--num-gpus N] [--num-machines M --machine-rank R
        --dist-url U] [--resume] [--eval-only] [key=value ...]

`main` is the run step by step; `do_train` builds the parts (`lazydet.engine.build`), wraps them (DDP, EMA,
checkpointer), registers the hooks in their order and trains; `do_test` evaluates. Settings are read from
`cfg.train.*` directly; every default is in configs/common/train.py. See docs/engine.md; `--help` lists
every option.
"""
import logging
import os
import sys

# Idle OpenMP threads sleep instead of spinning (set before torch loads). On a shared CPU, spinning threads
# made the quickstart ~8x slower (15.8 vs 1.8 s/it on 2 busy cores). Export OMP_WAIT_POLICY to override.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from omegaconf import OmegaConf  # noqa: E402

from lazydet.analysis.plots import plot_run_folder  # noqa: E402
from lazydet.checkpoint import CheckpointError, Checkpointer  # noqa: E402
from lazydet.config import ConfigError, LazyConfig, instantiate  # noqa: E402
from lazydet.data import DataError, check_datasets  # noqa: E402
from lazydet.diagnostics import build_doctor_hooks  # noqa: E402
from lazydet.engine import (ModelEMA, Trainer, build_model, build_training_parts, build_writers,  # noqa: E402
                            create_ddp_model, default_argument_parser, default_setup, launch, load_ema_weights,
                            missing_keys_as_errors, training_device)
from lazydet.engine import hooks as H  # noqa: E402
from lazydet.engine.launch import LaunchError  # noqa: E402
from lazydet.engine.preemption import build_preemption_hooks  # noqa: E402
from lazydet.engine.run_folder import (RunFolder, RunFolderError, check_before_launch, keep_early_log,  # noqa: E402
                                      open_run_folder)
from lazydet.engine.train_config import validate_train_config  # noqa: E402
from lazydet.evaluation import format_results_table, inference_on_dataset  # noqa: E402
from lazydet.solver import format_param_group_table, param_group_table  # noqa: E402
from lazydet.utils import comm  # noqa: E402

logger = logging.getLogger("lazydet")


def load_config(args):
    """The recipe `args.config_file` with the command line's `key=value` overrides applied."""
    cfg = LazyConfig.load(args.config_file)
    return LazyConfig.apply_overrides(cfg, args.opts)


def do_test(cfg, model) -> dict:
    """Evaluate `model` on `dataloader.test` with `dataloader.evaluator` (collective: every rank calls it) and
    log the results; returns the flat metric dict on the main process ({} on the others, and when the recipe
    has no test loader or evaluator)."""
    if OmegaConf.select(cfg, "dataloader.test") is None or OmegaConf.select(cfg, "dataloader.evaluator") is None:
        logger.info("No dataloader.test / dataloader.evaluator in the recipe: skipping evaluation")
        return {}
    evaluator = cfg.dataloader.evaluator
    if "output_dir" in evaluator and evaluator.output_dir is None:  # results json next to the checkpoints
        evaluator = evaluator.copy()
        evaluator.output_dir = cfg.train.output_dir
    results = inference_on_dataset(model, instantiate(cfg.dataloader.test), instantiate(evaluator))
    if comm.is_main_process() and results:
        if any(k.startswith("bbox/") for k in results):
            logger.info("Evaluation results:\n" + format_results_table(results))
        else:
            logger.info("Evaluation results: " + ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                                                           for k, v in results.items()))
    return results


def build_ema(cfg, model):
    """A `ModelEMA` of `model` (decay `train.ema.decay`) when `train.ema.enabled`, else None."""
    return ModelEMA(model, cfg.train.ema.decay) if cfg.train.ema.enabled else None


def build_trainer(args, cfg) -> Trainer:
    """Everything `do_train` trains: the parts, DDP, EMA, the checkpointer, the hooks (in the order they run
    after each step), then `--resume` or `train.init_checkpoint`. Tests add hooks to it before `train()`."""
    train = cfg.train
    parts = build_training_parts(cfg)
    model, optimizer, lengths = parts.model, parts.optimizer, parts.lengths
    logger.info("Parameter groups (lr and weight_decay each group gets before the schedule's multiplier):\n"
                + format_param_group_table(param_group_table(model, optimizer)))
    logger.info(lengths.describe())
    wrapped = create_ddp_model(model, train.ddp)  # DDP broadcasts rank 0's weights: copy the EMA after this
    ema = build_ema(cfg, model)
    trainer = Trainer(
        wrapped, parts.data_loader, optimizer, cfg=cfg, device=parts.device, max_iter=lengths.max_iter,
        iters_per_epoch=lengths.iters_per_epoch, amp_enabled=train.amp.enabled, amp_dtype=train.amp.dtype,
        clip_grad_max_norm=train.clip_grad.params.max_norm if train.clip_grad.enabled else None,
        clip_grad_norm_type=train.clip_grad.params.norm_type, grad_accumulation_steps=train.grad_accumulation_steps,
        ema=ema, output_dir=train.output_dir)
    checkpointer = Checkpointer(model, train.output_dir, optimizer=optimizer, scheduler=parts.lr_scheduler,
                                trainer=trainer)
    if trainer.grad_scaler is not None:
        checkpointer.add_checkpointable("grad_scaler", trainer.grad_scaler)
    if ema is not None:
        checkpointer.add_checkpointable("ema", ema)
    trainer.checkpointer = checkpointer

    trainer.register_hooks([
        H.IterationTimer(),
        H.LRScheduler(parts.lr_scheduler),
        *build_doctor_hooks(cfg, parts.lr_scheduler),
        H.PeriodicCheckpointer(checkpointer, lengths.checkpoint_period, train.checkpointer.max_to_keep),
        H.EvalHook(lengths.eval_period, lambda: do_test(cfg, trainer.eval_model())),
        H.BestCheckpointer(checkpointer, train.best_checkpointer.metric, train.best_checkpointer.mode)
        if train.best_checkpointer.enabled else None,
        *build_preemption_hooks(cfg),
        H.ProgressBar(),
        H.PeriodicWriter(build_writers(cfg, train.output_dir, lengths.max_iter, resume=args.resume),
                         train.log_period),  # last, so that it writes what the others put
    ])

    checkpointer.resume_or_load(train.init_checkpoint, resume=args.resume)
    if ema is not None and not (args.resume and checkpointer.has_checkpoint()):
        ema.reset_from(model)  # not resumed: the average starts from the (possibly pretrained) initial weights
    if args.resume and trainer.start_iter > 0 and not hasattr(parts.data_loader, "load_state_dict"):
        logger.warning("the train loader cannot restore its position (no load_state_dict): resumed data order "
                       "restarts from the sampler's beginning")
    return trainer


def do_train(args, cfg, run_folder: RunFolder) -> Trainer:
    """Build the trainer and run it to `max_iter` (or until a hook stops it); `run_folder` writes the config
    files when training starts and plots/ when it ends. Returns the trainer."""
    trainer = build_trainer(args, cfg)
    trainer.register_hooks([run_folder])
    trainer.train()
    return trainer


def do_eval_only(args, cfg) -> dict:
    """--eval-only: the model with weights from `train.init_checkpoint`, or the last checkpoint with --resume
    (its EMA weights when it has them and `train.ema.enabled`), evaluated by `do_test`."""
    model = build_model(cfg, training_device(cfg.train))
    ema = build_ema(cfg, model)
    checkpointer = Checkpointer(model, cfg.train.output_dir, **({"ema": ema} if ema is not None else {}))
    init = cfg.train.init_checkpoint
    checkpointer.resume_or_load(init, resume=args.resume)
    if ema is not None and not (args.resume and checkpointer.has_checkpoint()):
        ema = load_ema_weights(ema, init)
    return do_test(cfg, ema.module if ema is not None else model)


def main(args):
    """One process's run, step by step."""
    cfg = load_config(args)  # load config
    with missing_keys_as_errors(cfg.train):  # a train.* key the recipe lacks: one line naming it
        validate_train_config(cfg)  # validate train config: bad values stop here in one line
        keep_early_log()  # the lines logged before the run folder is accepted go into its log.txt
        check_datasets(cfg)  # check datasets: they exist and their images are readable, before anything is built
        # open run folder: lock it, refuse a used one, pick the resume checkpoint; plots/ drawn when the run ends
        run_folder = open_run_folder(cfg, args, plot=plot_run_folder)
        default_setup(cfg, args)  # setup: logging, environment, seed
        if args.eval_only:
            return do_eval_only(args, cfg)
        return do_train(args, cfg, run_folder)  # build (build_trainer), then train


def cli(argv=None):
    """Parse the command line, check the config once before any process is spawned, launch `main` on every
    process; recipe, data and network problems end with a one-line `error: ...` instead of a traceback."""
    args = default_argument_parser().parse_args(argv)
    try:
        cfg = load_config(args)
        validate_train_config(cfg)
        check_before_launch(cfg, args)  # the run folder and checkpoints, before spawning processes
    except (ConfigError, RunFolderError, CheckpointError) as e:
        sys.exit(f"error: {e}")
    try:
        launch(main, args.num_gpus, num_machines=args.num_machines, machine_rank=args.machine_rank,
               dist_url=args.dist_url, args=(args,))
    except (ConfigError, DataError, LaunchError, RunFolderError, CheckpointError) as e:  # one line, no traceback
        sys.exit(f"error: {e}")


if __name__ == "__main__":
    cli()
