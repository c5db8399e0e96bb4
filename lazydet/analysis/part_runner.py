"""Run a report's parts one after another, each in its own process under its own time cap.

A part is a function `fn(rows: PartRows, **kwargs)` named by its import path "package.module:function".
It runs in a fresh child (`python -m lazydet.analysis.part_runner --part JSON --out DIR`), so a crash, a
hang, a CUDA error or an out-of-memory kill stays inside it and the caching allocator starts empty. Every
`rows.add(row)` rewrites `DIR/parts/<name>.json` atomically at once, so what a part measured before it
overran its cap or was killed is on disk; the parent records the part as ok / failed: <reason> /
timeout and calls back after each part so the caller can rewrite its report as soon as a part ends.
The child's stdout+stderr go to `DIR/parts/<name>.log`.
"""
from __future__ import annotations

import argparse
import importlib
import json
import os
import signal
import subprocess
import sys
import time
import traceback
from dataclasses import asdict, dataclass, field
from typing import Callable, List, Optional


@dataclass
class Part:
    """One part of a report: `target` "module:function" called with `kwargs` (JSON values) under `cap_s`."""

    name: str
    target: str
    cap_s: float
    kwargs: dict = field(default_factory=dict)
    title: str = ""


def atomic_write_json(path: str, obj) -> None:
    """Write JSON to `path` atomically (`lazydet.checkpoint.atomic_open`): a reader never sees half a file."""
    from lazydet.checkpoint.atomic import atomic_open  # here: the parent process stays free of torch

    with atomic_open(path, "w") as f:
        json.dump(obj, f, indent=2, default=str)


def one_line(e: BaseException) -> str:
    """`Type: first line of the message`, at most 300 characters (what a table cell holds)."""
    lines = [ln for ln in str(e).strip().splitlines() if ln.strip()]
    return f"{type(e).__name__}: {lines[0].strip() if lines else ''}"[:300]


class PartRows:
    """The child's side: collects a part's rows and notes and rewrites its JSON file after each one."""

    def __init__(self, path: str, name: str):
        self.path, self.state = path, {"name": name, "status": "running", "reason": "", "rows": [], "notes": []}
        self._save()

    def add(self, row: dict) -> None:
        """Append one result row (a JSON-able dict) and write it out now."""
        self.state["rows"].append(row)
        self._save()

    def note(self, text: str) -> None:
        """A sentence for the report under the part's table (e.g. why rows were skipped)."""
        self.state["notes"].append(text)
        self._save()

    def finish(self, status: str, reason: str = "") -> None:
        """Final status ("ok" / "failed") and its one-line reason, written out now."""
        self.state["status"], self.state["reason"] = status, reason
        self._save()

    def _save(self) -> None:
        atomic_write_json(self.path, self.state)


def part_paths(out_dir: str, name: str) -> tuple:
    """(json, log) paths of a part's files under out_dir/parts/."""
    folder = os.path.join(out_dir, "parts")
    os.makedirs(folder, exist_ok=True)
    return os.path.join(folder, f"{name}.json"), os.path.join(folder, f"{name}.log")


def run_part_here(part: Part, out_dir: str) -> None:
    """The child's side: import the target, run it, record ok or `failed: <one line>`."""
    rows = PartRows(part_paths(out_dir, part.name)[0], part.name)
    try:
        module, _, func = part.target.partition(":")
        getattr(importlib.import_module(module), func)(rows, **part.kwargs)
    except Exception as e:  # noqa: BLE001 - any failure is a report entry, not a crash of the report
        traceback.print_exc()
        rows.finish("failed", one_line(e))
        return
    rows.finish("ok")


def _read_state(path: str) -> Optional[dict]:
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def _last_log_line(log_path: str) -> str:
    try:
        with open(log_path, errors="replace") as f:
            lines = [ln.strip() for ln in f.read().splitlines() if ln.strip()]
    except OSError:
        return ""
    return lines[-1][:300] if lines else ""


def _kill_group(proc: subprocess.Popen) -> None:
    """SIGKILL the child's process group (the child and whatever it started) and reap the child."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait()


def _exit_on_sigterm(signum, frame):
    raise SystemExit(128 + signum)


def run_part_subprocess(part: Part, out_dir: str, cap_s: float, env: Optional[dict] = None) -> dict:
    """Run `part` in a child for at most `cap_s` seconds; returns its state with `status`, `reason`, `rows`,
    `notes` and `wall_s`. Past the cap the child's whole process group (its own children too) is killed."""
    json_path, log_path = part_paths(out_dir, part.name)
    if os.path.exists(json_path):
        os.remove(json_path)  # a stale file must not pass for this run's results
    cmd = [sys.executable, "-m", "lazydet.analysis.part_runner", "--out", out_dir, "--part", json.dumps(asdict(part))]
    start = time.perf_counter()
    with open(log_path, "w") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        try:
            proc.wait(timeout=cap_s)
            timed_out = False
        except subprocess.TimeoutExpired:
            _kill_group(proc)
            timed_out = True
        except BaseException:  # the report itself is stopped (Ctrl-C, `timeout`): take the part's processes along
            _kill_group(proc)
            raise
    state = _read_state(json_path) or {"name": part.name, "rows": [], "notes": []}
    if timed_out:
        state["status"], state["reason"] = "timeout", f"stopped at its cap of {cap_s:.0f} s"
    elif state.get("status") in (None, "running"):  # died without finishing (segfault, OOM kill, ...)
        state["status"] = "failed"
        state["reason"] = f"exit {proc.returncode}: {_last_log_line(log_path) or 'no output'}"
    state["wall_s"] = round(time.perf_counter() - start, 2)
    state["cap_s"] = round(cap_s, 1)
    atomic_write_json(json_path, state)
    return state


def run_parts(parts: List[Part], out_dir: str, on_part_done: Callable[[List[dict]], None] = lambda s: None,
              log: Callable[[str], None] = print) -> List[dict]:
    """Run every part in order, each under min(its cap, time left of the sum of all caps); calls
    `on_part_done(states so far)` after each, so the caller's report is on disk as soon as a part ends."""
    deadline = time.monotonic() + sum(p.cap_s for p in parts)
    states: List[dict] = []
    # SIGTERM (as `timeout` sends) becomes SystemExit, so the running part's processes are killed on the way out:
    # they run in their own session and would otherwise outlive the report (a GPU still busy for the rerun)
    previous = signal.signal(signal.SIGTERM, _exit_on_sigterm)
    try:
        for i, part in enumerate(parts, start=1):
            left = deadline - time.monotonic()
            if left < 1.0:
                state = {"name": part.name, "status": "skipped", "reason": "no time left of the report's budget",
                         "rows": [], "notes": []}
            else:
                log(f"[{i}/{len(parts)}] {part.name}: running (cap {min(part.cap_s, left):.0f} s) ...")
                state = run_part_subprocess(part, out_dir, min(part.cap_s, left))
            state["title"] = part.title or part.name
            states.append(state)
            log(f"[{i}/{len(parts)}] {part.name}: {state['status']}"
                + (f" ({state['reason']})" if state.get("reason") else "") + f", {len(state['rows'])} rows")
            on_part_done(states)
    finally:
        signal.signal(signal.SIGTERM, previous)
    return states


def _child_main(argv=None) -> None:
    p = argparse.ArgumentParser(description="run one report part (internal; used by tools.gpu_report)")
    p.add_argument("--part", required=True, help="the Part as JSON")
    p.add_argument("--out", required=True, help="the report's output folder")
    args = p.parse_args(argv)
    run_part_here(Part(**json.loads(args.part)), args.out)


if __name__ == "__main__":
    _child_main()
