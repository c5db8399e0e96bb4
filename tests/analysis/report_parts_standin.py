"""Stand-in report parts for the GPU report's plumbing tests (no torch: they start in a blink)."""
import json
import os
import time


def emit_then_fail(rows, count):
    """Adds `count` rows, then raises: the part is 'failed' with this reason and keeps its rows."""
    for i in range(count):
        rows.add({"i": i})
    raise ValueError("planted failure\nsecond line that must not reach the report")


def emit_then_sleep(rows, seconds):
    """Adds one row, then overruns any cap shorter than `seconds`."""
    rows.add({"before": "sleep"})
    time.sleep(seconds)
    rows.add({"after": "sleep"})


def sleep_with_child(rows, seconds):
    """Starts a grandchild process, adds both pids as a row, then sleeps `seconds`."""
    import subprocess
    import sys

    child = subprocess.Popen([sys.executable, "-c", f"import time; time.sleep({seconds})"])
    rows.add({"pids": [os.getpid(), child.pid]})
    time.sleep(seconds)


def exit_hard(rows, code):
    """Adds one row, then ends the process without a word (as a segfault or an OOM kill would)."""
    rows.add({"before": "exit"})
    print("last words on stderr")
    os._exit(code)


def read_report(rows, out_dir):
    """Adds the parts (name, status, rows) that report.json holds while this part runs."""
    with open(os.path.join(out_dir, "report.json")) as f:
        report = json.load(f)
    rows.add({"on_disk": [[p["name"], p["status"], len(p["rows"])] for p in report["parts"]]})
