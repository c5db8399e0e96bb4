"""Submit a lazydet training to SLURM with submitit (the `[slurm]` extra); one task per GPU, requeue-safe.

    python -m scripts.slurm.submit --config-file RECIPE.py --nodes 2 --gpus-per-node 4
        --partition P --time 72:00:00 [key=value ...]      (one command line)

Every task runs `python -m scripts.train_net --config-file RECIPE.py --resume key=value ...` with its rank
from SLURM. Near the time limit SLURM sends submitit's warning signal (USR2, `--signal-delay` seconds
before); lazydet's preemption hook checkpoints at the end of the step and requeues the job, which resumes
from `last_checkpoint`. `--dry-run` prints the sbatch script that would be submitted, and submits nothing.
"""
from __future__ import annotations

import argparse
import os
import re
import shlex
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]


def parse_slurm_time(text: str) -> int:
    """SLURM's time formats (M, M:S, H:M:S, D-H, D-H:M, D-H:M:S) to whole minutes (at least 1)."""
    m = re.fullmatch(r"(?:(\d+)-)?(\d+)(?::(\d+))?(?::(\d+))?", text.strip())
    if not m:
        raise argparse.ArgumentTypeError(f"--time {text!r}: expected e.g. 90, 4:00:00 or 3-00:00:00")
    days, a, b, c = (int(x) if x else None for x in m.groups())
    if days is not None:  # D-H[:M[:S]]
        minutes = days * 1440 + a * 60 + (b or 0) + (c or 0) / 60
    elif c is not None:  # H:M:S
        minutes = a * 60 + b + c / 60
    elif b is not None:  # M:S
        minutes = a + b / 60
    else:  # M
        minutes = a
    return max(1, int(minutes))


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config-file", required=True, help="the recipe (.py), relative to the repository root")
    p.add_argument("--nodes", type=int, default=1)
    p.add_argument("--gpus-per-node", type=int, default=8)
    p.add_argument("--ntasks-per-node", type=int, default=None,
                   help="default: --gpus-per-node (one task per GPU); with --cpu, the number of CPU ranks")
    p.add_argument("--cpus-per-task", type=int, default=8, help="data-loader workers + 1")
    p.add_argument("--mem", default=None, help="memory per node, e.g. 400G (default: the site's default)")
    p.add_argument("--partition", default=None)
    p.add_argument("--account", default=None)
    p.add_argument("--qos", default=None)
    p.add_argument("--constraint", default=None, help="e.g. a100")
    p.add_argument("--time", type=parse_slurm_time, default=parse_slurm_time("24:00:00"),
                   help="wall time per job (SLURM format); longer trainings continue in requeued jobs")
    p.add_argument("--signal-delay", type=int, default=180,
                   help="seconds before the time limit at which SLURM warns the job (checkpoint + requeue)")
    p.add_argument("--job-name", default="lazydet")
    p.add_argument("--log-dir", default=None,
                   help="submitit's folder (scripts, pickles, per-task logs); default <output_dir>/submitit")
    p.add_argument("--cpu", action="store_true",
                   help="no GPUs: request none, run with train.device=cpu and gloo (tests, debugging)")
    p.add_argument("--python", default=None, help="python command in the job (default: this interpreter)")
    p.add_argument("--dry-run", action="store_true", help="print the sbatch script and exit")
    p.add_argument("overrides", nargs="*", help="recipe overrides, dotted.key=value")
    return p


class TrainJob:
    """What each task runs: train_net with `--resume` (pickled by submitit; run in the repository root)."""

    def __init__(self, argv: list[str], workdir: str, env: dict[str, str]):
        self.argv, self.workdir, self.env = list(argv), workdir, dict(env)

    def __call__(self) -> None:
        import runpy

        os.chdir(self.workdir)
        os.environ.update(self.env)
        sys.argv = ["scripts.train_net", *self.argv]
        try:
            runpy.run_module("scripts.train_net", run_name="__main__", alter_sys=True)
        except SystemExit as e:  # argparse / explicit exits: a non-zero code is a failure
            if e.code not in (0, None):
                raise RuntimeError(f"scripts.train_net exited with {e.code}") from None
        from lazydet.engine.preemption import run_pending_requeue

        if run_pending_requeue():
            # Preempted and requeued: leave without a result file (as submitit's own requeue does), so
            # `job.result()` waits for the run that finishes the training.
            sys.exit(-1)

    def checkpoint(self):
        """submitit's own signal handler (active outside the training loop) requeues the same call: it
        resumes from `last_checkpoint` because `--resume` is always passed."""
        import submitit

        return submitit.helpers.DelayedSubmission(TrainJob(self.argv, self.workdir, self.env))


def output_dir_of(config_file: str, overrides: list[str]) -> str:
    """`train.output_dir` of the recipe with the overrides applied (also checks both before queueing)."""
    from lazydet.config import LazyConfig

    cfg = LazyConfig.load(config_file)
    cfg = LazyConfig.apply_overrides(cfg, overrides)
    return str(cfg.train.output_dir)


def slurm_parameters(args) -> dict:
    """submitit SlurmExecutor parameters (SLURM's own names)."""
    tasks = args.ntasks_per_node or max(1, args.gpus_per_node)
    if not args.cpu and tasks != args.gpus_per_node:
        raise SystemExit(f"submit: --ntasks-per-node={tasks} but --gpus-per-node={args.gpus_per_node}: "
                         "lazydet runs one task per GPU")
    params = dict(
        job_name=args.job_name,
        nodes=args.nodes,
        ntasks_per_node=tasks,
        cpus_per_task=args.cpus_per_task,
        time=args.time,
        signal_delay_s=args.signal_delay,
        setup=[f"cd {shlex.quote(str(REPO_ROOT))}",
               f"export PYTHONPATH={shlex.quote(str(REPO_ROOT))}${{PYTHONPATH:+:$PYTHONPATH}}"],
        additional_parameters={"requeue": True},
    )
    if not args.cpu:
        params["gpus_per_node"] = args.gpus_per_node
    for key in ("partition", "account", "qos", "constraint", "mem"):
        if getattr(args, key) is not None:
            params[key] = getattr(args, key)
    return params


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    config_file = os.path.relpath(os.path.abspath(args.config_file), REPO_ROOT)
    if not os.path.isfile(REPO_ROOT / config_file):
        print(f"submit: --config-file {args.config_file!r}: no such file", file=sys.stderr)
        return 2
    overrides = list(args.overrides) + (["train.device=cpu"] if args.cpu else [])
    from lazydet.config import ConfigError

    try:
        output_dir = output_dir_of(str(REPO_ROOT / config_file), overrides)
    except ConfigError as e:
        print(f"submit: {e}", file=sys.stderr)
        return 2
    log_dir = Path(args.log_dir or os.path.join(output_dir, "submitit")).absolute()
    params = slurm_parameters(args)
    job = TrainJob(["--config-file", config_file, "--resume", *overrides], str(REPO_ROOT),
                   {"LAZYDET_DEVICE": "cpu"} if args.cpu else {})

    import submitit
    from submitit.slurm.slurm import _make_sbatch_string  # what SlurmExecutor writes, without needing srun

    python = args.python or shlex.quote(sys.executable)
    if args.dry_run:
        command = f"{python} -u -m submitit.core._submit {shlex.quote(str(log_dir))}"
        print(_make_sbatch_string(command=command, folder=str(log_dir / "%j"), **params))
        print(f"# each task runs: python -m scripts.train_net {shlex.join(job.argv)}")
        return 0

    executor = submitit.SlurmExecutor(folder=str(log_dir / "%j"), python=python, max_num_timeout=1000)
    executor.update_parameters(**params)
    submitted = executor.submit(job)
    print(f"submitted job {submitted.job_id}: {args.nodes} node(s) x {params['ntasks_per_node']} task(s)")
    print(f"  output_dir: {output_dir}")
    print(f"  log (rank 0): {submitted.paths.stdout}")
    print(f"  errors (rank 0): {submitted.paths.stderr}")
    print(f"  follow: tail -f {submitted.paths.stdout}; status: squeue -j {submitted.job_id}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
