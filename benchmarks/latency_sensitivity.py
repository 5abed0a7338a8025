"""Does a latency table make latency depend on width and expansion? (issue 12, item 8)

For each table given: per block kind and stage, how much a block's measured latency
varies with its width and its FFN expansion (max / min over the choices, and the
coefficient of variation); and over random configs of the space, how much of the
predicted latency's variance the parameter count explains (if latency were only a
per-block constant, configs of equal depth would have equal latency whatever their
widths). Then the fine-grained family search under three alpha settings on each table
(scores come from the results store, so only new configs are evaluated): how far apart
the selected configs' latencies are.

    python benchmarks/latency_sensitivity.py --supernet runs/quickstart/supernet \\
        runs/quickstart/lut/efficientformerv2-tiny-torch-cpu.parquet runs/lut-ort/tiny-onnxruntime.parquet
"""
from __future__ import annotations

import argparse
import random
from pathlib import Path

import numpy as np

from latency_lut import LatencyTable
from search_spaces import count_params, get_space
from search_spaces.runtime import configure_process

ALPHAS = ((1.0, 0.5), (1.0, 1.0), (0.5, 1.0))


def block_variation(table: LatencyTable) -> list[str]:
    frame = table.frame
    lines = []
    for kind in ("ffn", "mhsa"):
        rows = frame[frame.kind == kind]
        for resolution, group in sorted(rows.groupby("resolution"), key=lambda g: -g[0]):
            by_width = group.groupby("in_channels").latency_ms.median()
            text = (f"  {kind:4s} at {resolution:2d}x{resolution:<2d}: widths {by_width.index.min()}-{by_width.index.max()} "
                    f"max/min {by_width.max() / by_width.min():4.2f}")
            if kind == "ffn":
                by_expansion = group.groupby("expansion").latency_ms.median()
                text += f"; expansions 1-4 max/min {by_expansion.max() / by_expansion.min():4.2f}"
            text += f"; CV over its {len(group)} blocks {group.latency_ms.std() / group.latency_ms.mean():.2f}"
            lines.append(text)
    return lines


def params_explain(table: LatencyTable, samples: int = 2000, seed: int = 0) -> tuple[float, float]:
    """R² of predicted latency on (params, depth) over random configs, and latency's CV."""
    space = get_space(table.space)
    rng = random.Random(seed)
    configs = [space.sample(rng) for _ in range(samples)]
    latency = np.array([table.predict(c) for c in configs])
    params = np.array([count_params(c) for c in configs], dtype=float)
    depth = np.array([sum(s.depth for s in c.stages) for c in configs], dtype=float)
    design = np.stack([np.ones_like(params), params, depth], axis=1)
    fitted = design @ np.linalg.lstsq(design, latency, rcond=None)[0]
    depth_only = np.stack([np.ones_like(depth), depth], axis=1)
    fitted_depth = depth_only @ np.linalg.lstsq(depth_only, latency, rcond=None)[0]
    total = ((latency - latency.mean()) ** 2).sum()
    return 1 - ((latency - fitted) ** 2).sum() / total, 1 - ((latency - fitted_depth) ** 2).sum() / total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("tables", nargs="+")
    parser.add_argument("--supernet", help="also run the alpha sweep of the family search on each table")
    parser.add_argument("--out", default="runs/bench-latency", help="the sweep's results store")
    args = parser.parse_args()
    for path in args.tables:
        table = LatencyTable.load(path)
        print(f"{path}: {table.backend}, {table.threads} thread(s), {len(table.frame)} rows")
        print("\n".join(block_variation(table)))
        with_params, depth_only = params_explain(table)
        print(f"  predicted latency over 2000 random configs: R² {depth_only:.2f} from depth alone, "
              f"{with_params:.2f} from depth and params\n")
    if not args.supernet:
        return
    from nas.search_job import SearchJob
    from nas.store import default_storage

    for path in args.tables:
        print(f"alpha sweep, fine-grained family search, table {path}")
        picks = {}
        for alpha_latency, alpha_size in ALPHAS:
            job = SearchJob(args.supernet, path, Path(args.out) / Path(path).stem, storage=default_storage(Path(args.out)),
                            alpha_latency=alpha_latency, alpha_size=alpha_size)
            result = job.run(job.default_family())
            for budget, (config, metrics) in result.selected.items():
                picks.setdefault(budget.label, []).append((alpha_latency, alpha_size, metrics))
            print(f"  alpha_lat {alpha_latency}, alpha_size {alpha_size}: {result.measured} configs evaluated now")
        for label, rows in picks.items():
            latencies = [m.latency_ms for _, _, m in rows]
            distinct = len({m.key for _, _, m in rows})
            print(f"  {label}: {distinct} distinct configs; latency " +
                  ", ".join(f"({a}, {b}) {m.latency_ms:.3f} ms / {m.params / 1e6:.3f}M / top-1 {m.accuracy:.1f}"
                            for a, b, m in rows) +
                  f"; spread {100 * (max(latencies) / min(latencies) - 1):.1f}%")


if __name__ == "__main__":
    configure_process()
    main()
