"""What the default family search of the full space costs at ImageNet scale, on 1, 8 and 64 GPUs.

1. **Evaluations**: the fine-grained family search (S0-L's parameter budgets) of the full
   ``efficientformerv2`` space is run with a stand-in accuracy (smooth in size, no supernet) on a
   full-space latency table; every step scores every useful move, so the number of configs scored
   per step and in all does not depend on the accuracy much. Their MACs at 224 px are summed.
2. **One evaluation** is BatchNorm recalibration (``--bn-batches`` x 128 training images, forward)
   plus ``--eval-images`` held-out images (forward), at the config's MACs per image. Its cost on a
   GPU is the MACs over an effective throughput. Without a GPU to measure, the throughput is an
   assumption (``--gpu-tmacs``, stated with the figures); this machine's CPU throughput is measured
   on the largest config for scale.
3. **Wall time** on N GPUs: one step's moves are scored in parallel (nas search --workers), so a
   step takes ceil(moves / N) evaluations' time, plus the driver's share.

    python benchmarks/scale_model.py [--lut benchmarks/results/lut/efficientformerv2-onnxruntime-t1.parquet]
"""
from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from search_spaces.runtime import configure_process  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lut", type=Path,
                        default=ROOT / "benchmarks" / "results" / "lut" / "efficientformerv2-onnxruntime-t1.parquet")
    parser.add_argument("--eval-images", type=int, default=10000, help="held-out images per evaluation")
    parser.add_argument("--bn-batches", type=int, default=2, help="BatchNorm batches of 128 per evaluation")
    parser.add_argument("--gpu-tmacs", type=float, nargs="+", default=[10.0, 30.0],
                        help="assumed effective GPU throughputs, tera-MACs per second (batch-128 inference)")
    parser.add_argument("--cpu-images", type=int, default=64, help="images for this CPU's measured throughput")
    args = parser.parse_args()

    from latency_lut import LatencyTable
    from nas.objectives import Objectives
    from nas.search import Evaluator, default_family, greedy_search
    from search_spaces import count_macs, count_params, get_space

    space = get_space("efficientformerv2")
    table = LatencyTable.load(args.lut)
    scored = []

    def stand_in(config):  # smooth in size: the search walks a plausible trajectory
        scored.append(config)
        return 60 + 5 * math.log(count_params(config))

    objectives = Objectives.from_table(space, table, stand_in, 1.0, 0.5)
    budgets = default_family(space)
    started = time.perf_counter()
    marks = [1]  # configs scored by the end of each step (the start config: 1)
    trajectory, _ = greedy_search(space, Evaluator(objectives, None, "fine-grained"), budgets,
                                  progress=lambda line: marks.append(len(scored)))
    moves = [b - a for a, b in zip(marks, marks[1:])]  # configs scored at each step
    steps = len(trajectory) - 1
    macs = [count_macs(c) for c in scored]
    per_step = len(scored) / max(1, steps)
    print(f"default family search of {space.name} ({', '.join(b.label for b in budgets)}): {steps} steps, "
          f"{len(scored)} configs scored ({per_step:.0f} per step on average, {len(scored) - 1} moves), "
          f"mean {sum(macs) / len(macs) / 1e9:.2f} GMACs per image at {space.resolution} px "
          f"(walked in {time.perf_counter() - started:.0f} s with a stand-in accuracy)")
    images = args.eval_images + args.bn_batches * 128
    total_macs = sum(macs) * images
    print(f"one evaluation: {args.bn_batches} x 128 BatchNorm images + {args.eval_images} held-out images = "
          f"{images} forward images; the whole search: {total_macs / 1e15:.1f} peta-MACs")

    import torch

    from search_spaces.model import build_model

    model = build_model(space.largest()).eval()
    batch = torch.randn(args.cpu_images, 3, space.resolution, space.resolution)
    with torch.no_grad():
        model(batch[:8])
        t = time.perf_counter()
        model(batch)
        cpu_seconds = time.perf_counter() - t
    cpu_tmacs = count_macs(space.largest()) * args.cpu_images / cpu_seconds / 1e12
    print(f"this CPU ({torch.get_num_threads()} threads), largest config: {args.cpu_images / cpu_seconds:.1f} "
          f"images/s, {cpu_tmacs:.3f} tera-MACs/s effective: one evaluation "
          f"{sum(macs) / len(macs) * images / (cpu_tmacs * 1e12) / 60:.0f} min, the search "
          f"{total_macs / (cpu_tmacs * 1e12) / 86400:.0f} days")
    print("\nGPU estimate (an assumed effective throughput, not a measurement); wall time of the search:")
    print(f"{'TMAC/s':>8} {'s / eval':>9} {'1 GPU':>12} {'8 GPUs':>12} {'64 GPUs':>12}")
    for tmacs in args.gpu_tmacs:
        seconds = sum(macs) / len(macs) * images / (tmacs * 1e12)
        walls = []
        for gpus in (1, 8, 64):
            walls.append(sum(math.ceil(m / gpus) for m in moves) * seconds)
        print(f"{tmacs:8.0f} {seconds:9.2f} " + " ".join(f"{w / 60:8.0f} min" for w in walls))


if __name__ == "__main__":
    configure_process()
    main()
