"""What a folder holds, to assert that a failed or refused run left every file a user already had untouched.

    before = folder_state(run_dir)
    ... a run that must fail / be refused ...
    assert_unchanged(run_dir, before)
"""
import hashlib
import os


def folder_state(folder: str) -> dict:
    """{path relative to `folder`: sha256 of its bytes} for every regular file under `folder` ({} if absent)."""
    state = {}
    for root, _, files in os.walk(folder):
        for name in files:
            path = os.path.join(root, name)
            with open(path, "rb") as f:
                state[os.path.relpath(path, folder)] = hashlib.sha256(f.read()).hexdigest()
    return state


def assert_unchanged(folder: str, before: dict, allow_new=()) -> None:
    """Every file of `before` still exists with the same bytes. New files are allowed only when their relative
    path starts with one of `allow_new` (e.g. "log.txt" for a run that logs why it stopped)."""
    after = folder_state(folder)
    changed = sorted(p for p, digest in before.items() if after.get(p) != digest)
    added = sorted(p for p in after if p not in before and not p.startswith(tuple(allow_new)))
    assert not changed and not added, f"changed or removed: {changed}; new: {added}"
