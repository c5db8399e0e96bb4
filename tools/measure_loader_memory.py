"""Host memory of the training loader over many iterations: serialized records vs a plain list.

    python -m tools.measure_loader_memory --iters 3000 --workers 4 --replicate 300

Records of coco_mini_train are replicated (``--replicate``) to a COCO-sized record count; a light
mapper touches each sampled record (no image decoding, so thousands of iterations take seconds and
only the record storage shows). Prints RSS and PSS (proportional set size: shared pages split
between processes, the honest total) summed over the main process and its workers. With a plain list
every worker's private memory grows as reads un-share copy-on-write pages; serialized, it stays flat.
"""
import argparse
import gc
import os
import time

import torch

from lazydet.data import build_detection_train_loader, get_detection_dataset_dicts


class TouchRecordMapper:
    """Reads the record like the real mapper does (boxes, labels), skips the image."""

    def __call__(self, record):
        boxes = torch.as_tensor(record["boxes"])
        return {"image": torch.zeros(3, 8, 8, dtype=torch.uint8),
                "target": {"image_id": record["image_id"], "labels": torch.as_tensor(record["labels"]),
                           "boxes": boxes}}


def _children(pid: int) -> list[int]:
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    if int(f.read().rsplit(")", 1)[1].split()[1]) == pid:
                        out.append(int(entry))
            except (OSError, IndexError, ValueError):
                pass
    return out


def _mem_mb(pid: int) -> tuple[float, float]:
    rss = pss = 0.0
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith("Rss:"):
                    rss = int(line.split()[1]) / 1024
                elif line.startswith("Pss:"):
                    pss = int(line.split()[1]) / 1024
    except OSError:
        pass
    return rss, pss


def measure(make_records, serialize: bool, iters: int, workers: int, batch: int, every: int):
    loader = build_detection_train_loader(make_records(), TouchRecordMapper(), total_batch_size=batch, num_workers=workers,
                                          serialize=serialize, seed=0)
    me = os.getpid()
    rows, start = [], time.perf_counter()
    for i, _ in enumerate(loader, 1):
        if i % every == 0 or i == 1:
            pids = [me] + _children(me)
            mem = [_mem_mb(p) for p in pids]
            rows.append((i, mem[0][0], sum(m[0] for m in mem[1:]), sum(m[1] for m in mem)))
        if i >= iters:
            break
    elapsed = time.perf_counter() - start
    del loader
    gc.collect()
    return rows, elapsed


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", default="coco_mini_train")
    p.add_argument("--replicate", type=int, default=300, help="copies of the dataset's records")
    p.add_argument("--iters", type=int, default=3000)
    p.add_argument("--workers", type=int, default=4)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--every", type=int, default=500, help="print memory every N iterations")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    base = get_detection_dataset_dicts(args.dataset)

    def make_records():  # fresh list each time; with serialize=True only the byte buffer survives
        return [dict(r, image_id=r["image_id"] * 1000 + k, boxes=r["boxes"].copy()) for k in range(args.replicate)
                for r in base]

    print(f"{len(base) * args.replicate} records, {args.workers} workers, batch {args.batch}, {args.iters} iterations")
    for serialize in (True, False):
        rows, elapsed = measure(make_records, serialize, args.iters, args.workers, args.batch, args.every)
        print(f"\nstorage={'serialized' if serialize else 'python list'} ({elapsed:.1f} s)")
        print(f"{'iter':>6} {'main RSS MB':>12} {'workers RSS MB':>15} {'total PSS MB':>13}")
        for it, main_rss, workers_rss, pss in rows:
            print(f"{it:>6} {main_rss:>12.0f} {workers_rss:>15.0f} {pss:>13.0f}")
        first, last = rows[0], rows[-1]
        print(f"growth from iter {first[0]} to {last[0]}: workers RSS {last[2] - first[2]:+.0f} MB, "
              f"total PSS {last[3] - first[3]:+.0f} MB")


if __name__ == "__main__":
    main()
