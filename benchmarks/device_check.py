"""The GPU path, checked in one short run: training, the supernet's overhead, a torch-cuda table, evaluations.

On one GPU, in a few minutes:

1. **training**: the full-space supernet for a few sandwich steps at 224 px with the imagenet
   recipe (AMP, mixup, RandAugment, in-place distillation) on generated ImageNet-style images
   (a folder of random JPEGs, ``train/<class>/`` and ``val/<class>/``): steps per second;
2. **overhead**: the supernet's sandwich step and eval forward against the same configs as
   static timm networks, interleaved (``benchmarks/supernet_overhead.py``);
3. **latency table**: a ``torch-cuda`` table of a part of the space (``--lut-space``, default
   the tiny space at 224 px) built and validated against whole networks;
4. **evaluations per second** of the search (BatchNorm recalibration + held-out top-1, loss, KL)
   on the trained supernet.

    python benchmarks/device_check.py                        # on a GPU machine, about 5-8 min
    python benchmarks/device_check.py --device cpu --space efficientformerv2-tiny@32 --steps 2 \\
        --batch 8 --lut-space efficientformerv2-tiny@32 --lut-runs 3 --evaluations 3   # the tests' size
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from search_spaces.runtime import configure_process  # noqa: E402


def imagenet_style_folder(root: Path, classes: int, per_class: int, size: int = 256, seed: int = 0) -> Path:
    """``root/train/<class>/*.jpg`` and ``root/val/<class>/*.jpg`` of random images (timm reads them as
    it reads ImageNet)."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    for split, count in (("train", per_class), ("val", max(2, per_class // 4))):
        for c in range(classes):
            folder = root / split / f"n{c:08d}"
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(count):
                pixels = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(folder / f"{i}.jpg", quality=85)
    return root


def stage(title: str) -> float:
    print(f"\n== {title}", flush=True)
    return time.perf_counter()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda", choices=("cuda", "cpu"))
    parser.add_argument("--space", default="efficientformerv2", help="the supernet's space (224 px)")
    parser.add_argument("--steps", type=int, default=20, help="sandwich steps of training")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--classes", type=int, default=10, help="classes of the generated images")
    parser.add_argument("--repeats", type=int, default=10, help="interleaved repeats of the overhead")
    parser.add_argument("--lut-space", default="efficientformerv2-tiny@224", help="the table's part of the space")
    parser.add_argument("--lut-runs", type=int, default=50)
    parser.add_argument("--validate", type=int, default=10, help="held-out networks of the table's validation")
    parser.add_argument("--evaluations", type=int, default=20, help="configs the search-evaluation stage scores")
    parser.add_argument("--work", type=Path, help="working folder (default: a temporary one)")
    args = parser.parse_args()
    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("error: --device cuda, but torch sees no CUDA device; expected a GPU machine "
                         "(or --device cpu for a check of the script itself)")
    work = args.work or Path(tempfile.mkdtemp(prefix="device-check-"))
    started = time.perf_counter()
    device = torch.cuda.get_device_name(0) if args.device == "cuda" else "CPU"
    print(f"device check on {device}: torch {torch.__version__}, work in {work}")

    from search_spaces import get_space
    from supernet.recipe import load_recipe
    from supernet.train import train_supernet

    space = get_space(args.space)
    t = stage(f"1/4 training: {space.name}, {args.steps} sandwich steps of {args.batch} at {space.resolution} px")
    images_needed = args.steps * args.batch
    per_class = -(-images_needed // args.classes) + 4
    data = imagenet_style_folder(work / "images", args.classes, per_class)
    recipe = load_recipe("imagenet").replace(
        space=space.name, epochs=1, batch_size=args.batch, max_train_images=images_needed, val_split=2 * args.batch,
        num_workers=4 if args.device == "cuda" else 0, eval_images=args.batch, checkpoint_every_steps=10 ** 6,
        warmup_epochs=0.0)
    print(f"generated {args.classes} x {per_class} training images in {time.perf_counter() - t:.0f} s")
    t = time.perf_counter()
    result = train_supernet(recipe, work / "supernet", data_dir=str(data), progress=False)
    seconds = time.perf_counter() - t
    print(f"{result.global_step} steps in {seconds:.1f} s ({result.global_step / seconds:.2f} steps/s, AMP "
          f"{'on' if recipe.amp and args.device == 'cuda' else 'off'}); epoch metrics: {result.metrics[-1]}")

    t = stage(f"2/4 overhead: supernet against static timm networks, batch {args.batch}")
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from supernet_overhead import measure_overhead, report

    print(report(measure_overhead(space.name, args.batch, args.repeats, args.device)))
    print(f"({time.perf_counter() - t:.0f} s)")

    from latency_lut import Backend, Protocol, build_table, validate_table

    backend = "torch-cuda" if args.device == "cuda" else "torch-cpu"
    t = stage(f"3/4 latency table: {backend}, {args.lut_space}, {args.lut_runs} runs per block")
    protocol = Protocol(runs=args.lut_runs, warmup=3, rounds=2)
    table = build_table(args.lut_space, Backend(backend, threads=1), work / "lut.parquet", protocol, progress=False)
    validation = validate_table(table, samples=args.validate, fit_samples=8, protocol=protocol, progress=False)
    c = validation.calibrated
    print(f"{len(table.frame)} blocks in {time.perf_counter() - t:.0f} s; {validation.calibration.formula()}; "
          f"held-out {c.networks} networks: MAPE {c.mape_pct:.1f}%, {c.within_10_pct:.0f}% within ±10%, "
          f"Kendall tau {c.kendall_tau:.3f}")

    import random

    from nas.objectives import SEARCH_PROTOCOL, SupernetAccuracy

    t = stage(f"4/4 search evaluations: {args.evaluations} configs, BatchNorm recalibration + held-out scores")
    protocol = SEARCH_PROTOCOL.replace(images=2 * args.batch, batch_size=args.batch)
    accuracy = SupernetAccuracy(work / "supernet", protocol, data_dir=str(data))
    configs = [space.sample(random.Random(i)) for i in range(args.evaluations + 1)]
    accuracy(configs[0])  # warm-up
    t = time.perf_counter()
    for config in configs[1:]:
        accuracy(config)
    seconds = time.perf_counter() - t
    print(f"{args.evaluations / seconds:.2f} evaluations per second ({protocol.images} images, "
          f"{protocol.bn_batches} BatchNorm batches of {protocol.batch_size})")
    print(f"\ndevice check done in {(time.perf_counter() - started) / 60:.1f} min")


if __name__ == "__main__":
    configure_process()
    main()
