"""Forward + backward time of the multi-scale deformable attention cores at one layer's shapes.

    python -m tools.bench_ms_deform_attn --device cpu --queries 7485 --repeats 5
    python -m tools.bench_ms_deform_attn --device cuda --dtype bf16 --cores pytorch triton

Cores: ``autograd`` (the PyTorch path under plain autograd, which keeps every sample for backward: what
main ran before the recomputing backward), ``pytorch`` (the recomputing backward, the CPU default) and
``triton`` (CUDA, or the CPU under TRITON_INTERPRET=1: very slow, use tiny shapes). Default shapes: one DINO
encoder layer of the COCO recipe at 512 px, batch 2 (levels 74x74, 37x37, 19x19, 10x10 of a ViT/14 +
SimpleFeaturePyramid; 8 heads x 32 channels, 4 points). Runs are interleaved core by core (A B C A B C ...)
so a shared machine slows all cores alike; prints the median seconds per core and its ratio to the first.
"""
import argparse
import statistics
import time

import torch

from lazydet.analysis.kernel_bench import forward_backward, make_inputs, sampler
from lazydet.analysis.timing import PRECISIONS, synchronize


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", default="fp32", choices=list(PRECISIONS))
    p.add_argument("--cores", nargs="+", default=["autograd", "pytorch"], choices=["autograd", "pytorch", "triton"])
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--levels", default="74x74,37x37,19x19,10x10", help="H x W per level, fine to coarse")
    p.add_argument("--queries", type=int, default=None, help="default: one per value token (encoder)")
    p.add_argument("--heads", type=int, default=8)
    p.add_argument("--head-dim", type=int, default=32)
    p.add_argument("--points", type=int, default=4)
    p.add_argument("--repeats", type=int, default=5)
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    device = torch.device(args.device)
    dtype = PRECISIONS[args.dtype] or torch.float32
    shapes = [tuple(int(s) for s in level.split("x")) for level in args.levels.split(",")]
    queries = args.queries or sum(h * w for h, w in shapes)
    inputs = make_inputs(args.batch, shapes, queries, args.heads, args.points, args.head_dim, device)
    seconds = {core: [] for core in args.cores}
    for i in range(args.repeats + 1):  # the first round warms up
        for core in args.cores:
            synchronize(device)
            t0 = time.perf_counter()
            forward_backward(sampler(core), shapes, inputs, dtype)
            synchronize(device)
            if i:
                seconds[core].append(time.perf_counter() - t0)
    first = statistics.median(seconds[args.cores[0]])
    print(f"levels {shapes}, queries {queries}, batch {args.batch}, {args.heads} heads x "
          f"{args.head_dim}, {args.points} points, {args.dtype}, {device}, {torch.get_num_threads()} threads")
    print("| core | fwd+bwd s (median) | min | max | vs first |\n| --- | --- | --- | --- | --- |")
    for core, s in seconds.items():
        median = statistics.median(s)
        print(f"| {core} | {median:.4f} | {min(s):.4f} | {max(s):.4f} | {median / first:.2f}x |")


if __name__ == "__main__":
    main()
