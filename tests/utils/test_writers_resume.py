"""A resumed run's writers drop what the interrupted run logged from the resumed iteration on."""
import json

from lazydet.utils import EventStorage
from lazydet.utils.writers import JSONWriter, TensorboardWriter, drop_rows_from


def _log(path, start, stop, value):
    w = JSONWriter(str(path), window_size=1)
    with EventStorage(start) as s:
        for i in range(start, stop):
            s.iter = i
            s.put_scalar("total_loss", value)
            w.write()
    w.close()


def test_json_rows_from_the_resumed_iteration_are_replaced(tmp_path):
    path = tmp_path / "metrics.json"
    _log(path, 0, 8, 1.0)  # killed after iteration 7; the last checkpoint was at iteration 4
    with open(path, "a") as f:
        f.write('{"iteration": 8, "total_lo')  # and mid-way through a row
    _log(path, 5, 10, 2.0)
    lines = path.read_text().splitlines()
    assert lines[5] == '{"iteration": 8, "total_lo'  # an unparsable line is kept (and ended), never merged
    rows = [json.loads(line) for line in lines[:5] + lines[6:]]
    assert [(r["iteration"], r["total_loss"]) for r in rows] == [(i, 1.0) for i in range(5)] + \
        [(i, 2.0) for i in range(5, 10)]


def test_drop_rows_leaves_a_file_without_later_rows_untouched(tmp_path):
    path = tmp_path / "metrics.json"
    path.write_text('{"iteration": 3}\n{"iteration": 4, "bbox/AP": 1.0}\n')
    mtime = path.stat().st_mtime_ns
    assert drop_rows_from(str(path), 5) == 0 and path.stat().st_mtime_ns == mtime
    assert drop_rows_from(str(path), 4) == 1 and path.read_text() == '{"iteration": 3}\n'
    assert drop_rows_from(str(tmp_path / "absent.json"), 0) == 0


def test_writers_create_nothing_before_their_first_write(tmp_path):
    JSONWriter(str(tmp_path / "metrics.json")).close()
    TensorboardWriter(str(tmp_path)).close()
    assert list(tmp_path.iterdir()) == []
