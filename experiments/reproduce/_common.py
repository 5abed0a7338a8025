"""What the proxy-scale reproductions (``experiments/reproduce/*.py``) share.

Every script answers one claim of the supplement (docs/architecture.md §5) on the tiny space and
Fashion-MNIST, with the same pieces:

* the **supernet and latency table** of ``nas quickstart`` (``--quickstart DIR``), reused
  when that run finished them, else trained/built there by the quickstart's own stages;
* **searches** through :class:`nas.search_job.SearchJob`, in the quickstart's results store
  (its family search is reused; scripts share evaluated configs), outputs in ``WORK/search``;
* **from-scratch training** (``nas train``'s :func:`supernet.retrain.train_network`) with one
  protocol for every network: the supernet's recipe (``fashion-mnist-tiny``: one epoch) on
  its training images (or the first ``--train-images``). Runs are cached in ``WORK/scratch/`` by config key,
  seed and protocol, and a killed run resumes from its checkpoint, so scripts share them
  and a rerun costs nothing;
* the **outputs**: ``RESULTS/NAME.csv``, ``NAME.png`` and ``NAME.md`` (the table, the
  finding, the command, the machine, seeds and wall time), written atomically.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import random
import shlex
import statistics
import sys
import time
from pathlib import Path
from typing import Callable, Optional, Sequence

import numpy as np
import pandas as pd

from search_spaces import SubnetConfig, count_params, save_config
from search_spaces.io import atomic_path, atomic_write_text

ROOT = Path(__file__).resolve().parents[2]


def parser(description: str, seeds: Optional[int] = None) -> argparse.ArgumentParser:
    """The scripts' shared options; ``seeds``: the default of a ``--seeds`` option (none if None)."""
    from nas.quickstart import QuickstartSettings

    defaults = QuickstartSettings()
    p = argparse.ArgumentParser(description=description, formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--quickstart", type=Path, default=ROOT / "runs" / "quickstart",
                   help="nas quickstart's folder: its supernet and latency table are reused (trained and built "
                        "there first if absent)")
    p.add_argument("--work", type=Path, default=ROOT / "runs" / "reproduce",
                   help="searches and from-scratch runs (cached: a rerun reuses them)")
    p.add_argument("--results", type=Path, default=ROOT / "experiments" / "results",
                   help="where NAME.csv, NAME.png and NAME.md go")
    p.add_argument("--recipe", default="fashion-mnist-tiny",
                   help="the quickstart's recipe (name or YAML file): its supernet's, and the from-scratch runs'")
    p.add_argument("--train-images", type=int, default=None,
                   help="training images of each from-scratch run (default: all of them, i.e. the recipe's epochs "
                        "on the supernet's data)")
    p.add_argument("--eval-images", type=int, default=defaults.eval_images, help="the searches' evaluation (the "
                   "quickstart's)")
    p.add_argument("--bn-batches", type=int, default=defaults.bn_batches, help="the searches' evaluation (the "
                   "quickstart's)")
    p.add_argument("--criterion", default=defaults.criterion, help="the searches' criterion (the quickstart's)")
    p.add_argument("--seed", type=int, default=0, help="seed of the from-scratch runs and of random configs")
    p.add_argument("--data-dir", default=None, help="Fashion-MNIST folder (default: Debian's)")
    p.add_argument("--quiet", action="store_true", help="no progress lines")
    if seeds is not None:
        p.add_argument("--seeds", type=int, default=seeds,
                       help="from-scratch runs per network (seeds SEED, SEED+1, ...)")
    return p


def positive(name: str, value: int) -> int:
    if value < 1:
        raise SystemExit(f"{name} {value}: expected a positive number")
    return value


def machine() -> str:
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return (f"{cpu}, {os.cpu_count()} cores, torch {torch.__version__} ({torch.get_num_threads()} threads), "
            f"Python {platform.python_version()}, {platform.system()}")


class Reproduction:
    """One script's run: the shared supernet, table, searches, scratch runs and outputs."""

    def __init__(self, name: str, args: argparse.Namespace) -> None:
        from supernet.recipe import load_recipe

        if args.train_images is not None:
            positive("--train-images", args.train_images)
        if hasattr(args, "seeds"):
            positive("--seeds", args.seeds)
        self.name, self.args = name, args
        self.started = time.time()
        self.recipe = load_recipe(args.recipe)
        self.scratch_base = self.recipe  # the from-scratch runs' recipe (the truth bank pins its own)
        self.echo: Callable[[str], None] = (lambda line: None) if args.quiet else (lambda line: print(line, flush=True))
        self.work = Path(args.work)
        self.scratch_seconds = 0.0  # trained in this invocation
        self.scratch_runs = 0
        self.used: dict[Path, float] = {}  # run folder -> training seconds, of the runs behind the results
        self._jobs: dict[tuple[float, float], object] = {}
        self._supernet_accuracy = None

    # -- the quickstart's supernet and table ---------------------------------------------------------

    def quickstart(self):
        from nas.quickstart import Quickstart, QuickstartSettings

        if not hasattr(self, "_quickstart"):
            settings = QuickstartSettings(out=self.args.quickstart, recipe=self.args.recipe,
                                          data_dir=self.args.data_dir, eval_images=self.args.eval_images,
                                          bn_batches=self.args.bn_batches, criterion=self.args.criterion,
                                          progress=not self.args.quiet)
            quickstart = Quickstart(settings, echo=self.echo)
            quickstart.train_supernet()  # both reuse what a finished quickstart left
            quickstart.build_lut()
            self._quickstart = quickstart
        return self._quickstart

    @property
    def supernet_dir(self) -> Path:
        return self.quickstart().supernet_dir

    @property
    def lut(self) -> Path:
        return self.quickstart().lut

    def job(self, alpha_latency: float = 1.0, alpha_size: float = 0.5):
        """A search job on the quickstart's supernet and table (its evaluation settings)."""
        from nas.search_job import SearchJob
        from nas.store import default_storage

        key = (alpha_latency, alpha_size)
        if key not in self._jobs:
            from nas.search_job import SEARCH_PROTOCOL

            quickstart = self.quickstart()
            settings = quickstart.settings
            protocol = SEARCH_PROTOCOL.replace(images=settings.eval_images, bn_batches=settings.bn_batches)
            # the quickstart's results store: its searches (the family search) are reused, not rerun
            self._jobs[key] = SearchJob(self.supernet_dir, self.lut, self.work / "search",
                                        storage=default_storage(quickstart.search_dir), alpha_latency=alpha_latency,
                                        alpha_size=alpha_size, protocol=protocol, criterion=settings.criterion,
                                        data_dir=self.args.data_dir)
        return self._jobs[key]

    def search(self, budgets, algorithm: str = "fine-grained", alpha_latency: float = 1.0, alpha_size: float = 0.5,
               evaluations: int = 100):
        job = self.job(alpha_latency, alpha_size)
        budgets = job.check(budgets)
        progress = (lambda line: self.echo("  " + line)) if not self.args.quiet else None
        self.echo(f"search: {algorithm}, {', '.join(b.label for b in budgets)}, alpha_lat {alpha_latency}, "
                  f"alpha_size {alpha_size}")
        return job.run(budgets, algorithm, evaluations=evaluations, progress=progress,
                       command=f"experiments/reproduce/{self.name}.py")

    def params_budget(self):
        """The quickstart's ``--params`` budget: halfway, geometrically, across the space."""
        return self.quickstart().params_budget

    def costs(self, config: SubnetConfig, alpha_latency: float = 1.0, alpha_size: float = 0.5) -> dict:
        params, latency_ms, mes = self.job(alpha_latency, alpha_size).objectives.costs(config)
        return {"params_m": params / 1e6, "latency_ms": latency_ms, "mes": mes}

    def supernet_top1(self, config: SubnetConfig) -> float:
        """Top-1 (%) on the whole held-out val split from the supernet, BatchNorm recalibrated
        (``nas eval-subnet``'s evaluation): a finer evaluation than the search's."""
        from nas.objectives import SupernetAccuracy
        from supernet.protocol import EvalProtocol

        if self._supernet_accuracy is None:
            self._supernet_accuracy = SupernetAccuracy(self.supernet_dir, EvalProtocol(), data_dir=self.args.data_dir)
        return self._supernet_accuracy(config).top1

    # -- from-scratch training ------------------------------------------------------------------------

    def available_images(self) -> int:
        """Training images of the recipe (its data less the held-out val split)."""
        from supernet.data import Splits

        if not hasattr(self, "_available"):
            self._available = len(Splits(self.recipe, 32, data_dir=self.args.data_dir).held_out()[0])
        return self._available

    def train_images(self) -> int:
        available = self.available_images()
        return available if self.args.train_images is None else min(self.args.train_images, available)

    def scratch_recipe(self, seed: Optional[int] = None):
        return self.scratch_base.replace(max_train_images=self.train_images(),
                                         seed=self.args.seed if seed is None else seed)

    def protocol(self) -> str:
        epochs = f"{self.recipe.epochs} epoch{'s' if self.recipe.epochs > 1 else ''}"
        return (f"the `{self.args.recipe}` recipe ({epochs}, the supernet's) on the first {self.train_images()} of "
                f"its {self.available_images()} training images, batch {self.recipe.batch_size}, no teacher")

    def scratch(self, config: SubnetConfig, seed: Optional[int] = None) -> dict:
        """``val_top1`` / ``test_top1`` (%) of ``config`` trained from scratch (cached) and its training time."""
        from supernet.checkpoint import CHECKPOINT, load_checkpoint
        from supernet.retrain import train_network
        from supernet.train import logged_train_seconds

        recipe = self.scratch_recipe(seed)
        if recipe.space != config.space:  # e.g. the -nobias variant of the recipe's space
            recipe = recipe.replace(space=config.space)
        protocol = hashlib.sha1(recipe.scratch_yaml().encode()).hexdigest()[:10]
        run = self.work / "scratch" / protocol / hashlib.sha1(config.key.encode()).hexdigest()[:16]
        result_file = run / "result.json"
        if result_file.exists():
            return self._used(run, json.loads(result_file.read_text()))
        checkpoint = run / CHECKPOINT
        resume = checkpoint.exists()
        if not (resume and load_checkpoint(checkpoint, "network").get("finished", False)):
            self.echo(f"training from scratch ({count_params(config) / 1e6:.3f}M params, seed {recipe.seed}"
                      f"{', resumed' if resume else ''}): {config.key}")
            run.mkdir(parents=True, exist_ok=True)
            save_config(config, run / "config.yaml")
            atomic_write_text(run / "recipe.yaml", recipe.to_yaml())
            trained = train_network(config, recipe, run, resume=resume, data_dir=self.args.data_dir, progress=False)
            self.scratch_seconds += trained.seconds
            self.scratch_runs += 1
        result = {"key": config.key, "seed": recipe.seed, **self._evaluate_run(run, recipe, config),
                  "train_seconds": round(logged_train_seconds(run), 1)}
        atomic_write_text(result_file, json.dumps(result, indent=1) + "\n")
        self.echo(f"  val {result['val_top1']:.2f}%, test {result['test_top1']:.2f}% "
                  f"({result['train_seconds']:.0f} s of training)")
        return self._used(run, result)

    def seeds(self, count: int) -> list[int]:
        return [self.args.seed + i for i in range(count)]

    def scratch_seeds(self, config: SubnetConfig, count: int) -> dict:
        """``config`` trained from scratch with ``count`` seeds: mean and standard deviation of test top-1."""
        runs = [self.scratch(config, seed) for seed in self.seeds(count)]
        tests = [r["test_top1"] for r in runs]
        return {"scratch_test_top1": statistics.mean(tests),
                "scratch_test_std": statistics.stdev(tests) if len(tests) > 1 else float("nan"),
                "scratch_val_top1": statistics.mean(r["val_top1"] for r in runs),
                "per_seed_test": " / ".join(f"{t:.2f}" for t in tests),
                "train_seconds": statistics.mean(r["train_seconds"] for r in runs)}

    def _used(self, run: Path, result: dict) -> dict:
        self.used[run] = result["train_seconds"]
        return result

    def _evaluate_run(self, run: Path, recipe, config: SubnetConfig) -> dict:
        from supernet.data import Splits
        from supernet.evaluate import evaluate
        from supernet.retrain import load_network

        model, _ = load_network(run, config)
        splits = Splits(recipe, config.resolution, data_dir=self.args.data_dir)
        return {split + "_top1": round(evaluate(model, splits.eval_loader(split)).top1, 3)
                for split in ("val", "test")}

    # -- outputs ----------------------------------------------------------------------------------------

    def write(self, frame: pd.DataFrame, figure, title: str, claim: str, finding: Sequence[str],
              verdict: tuple[str, str], notes: Sequence[str] = (), table: Optional[pd.DataFrame] = None
              ) -> list[Path]:
        """``RESULTS/NAME.{csv,png,md}`` and this claim's row of ``RESULTS/README.md``.

        ``verdict``: (ours in a few words, agrees / disagrees / ...); ``table`` (default
        ``frame``) is the Markdown table.
        """
        from nas.plots import save_figure

        out = Path(self.args.results)
        out.mkdir(parents=True, exist_ok=True)
        csv, png, md = (out / f"{self.name}.{suffix}" for suffix in ("csv", "png", "md"))
        with atomic_path(csv) as tmp:
            frame.to_csv(tmp, index=False)
        save_figure(figure, png)
        minutes = (time.time() - self.started) / 60
        command = "python " + " ".join(shlex.quote(a) for a in [f"experiments/reproduce/{self.name}.py",
                                                                   *sys.argv[1:]])
        lines = [f"# {title}", "", f"**Paper**: {claim}", "", f"**Verdict**: {verdict[1]}", "", "**Ours**:", ""]
        lines += [f"- {line}" for line in finding]
        lines += ["", _markdown_table(table if table is not None else frame), "", f"![{title}]({png.name})", ""]
        lines += ["## How it was measured", ""]
        lines += [f"- {line}" for line in notes]
        from nas.quickstart import BACKEND

        lines += [f"- Supernet and latency table: `nas quickstart`'s (`{self.args.recipe}` recipe, `{BACKEND}` "
                  f"table, 1 thread, calibrated).",
                  f"- From scratch: {self.protocol()}; seed {self.args.seed} unless a row says otherwise.",
                  f"- Command: `{command}`",
                  f"- Machine: {machine()}",
                  (f"- Wall time: {len(self.used)} from-scratch run(s) behind this table, "
                   f"{sum(self.used.values()) / 60:.1f} min of training in all (each trained once and cached); this "
                   f"invocation took {minutes:.1f} min, {self.scratch_runs} run(s) trained in it." if self.used else
                   f"- Wall time: this invocation took {minutes:.1f} min."),
                  f"- Data: `{csv.name}` (every number above)."]
        atomic_write_text(md, "\n".join(lines) + "\n")
        index = _update_index(out, self.name, {"title": title, "paper": claim, "ours": verdict[0],
                                               "verdict": verdict[1]})
        self.echo(f"wrote {csv}, {png}, {md}, {index} ({minutes:.1f} min)")
        return [csv, png, md, index]


INDEX_HEADER = """# The supplement's claims, reproduced at proxy scale

Made by the scripts of `experiments/reproduce/` (see the project README): the tiny space on
Fashion-MNIST, 2 CPU cores, networks trained for one epoch. Each row links the script's full
result (table, figure, machine, seeds, wall time). Where ours disagrees with the paper, that
is the finding.

| claim | paper | ours | verdict |
|---|---|---|---|
"""


def _update_index(out: Path, name: str, row: dict) -> Path:
    """``out/index.json`` (one entry per script) and ``out/README.md`` rendered from it."""
    index_file = out / "index.json"
    index = json.loads(index_file.read_text()) if index_file.exists() else {}
    index[name] = row
    atomic_write_text(index_file, json.dumps(dict(sorted(index.items())), indent=1, ensure_ascii=False) + "\n")
    lines = [f"| [{r['title']}]({n}.md) | {r['paper']} | {r['ours']} | {r['verdict']} |" for n, r in
             sorted(index.items())]
    readme = out / "README.md"
    atomic_write_text(readme, INDEX_HEADER + "\n".join(lines) + "\n")
    return readme


def _markdown_table(frame: pd.DataFrame) -> str:
    def cell(value) -> str:
        if isinstance(value, float):
            return "" if np.isnan(value) else f"{value:.4g}"
        return str(value).replace("|", "\\|")

    header = "| " + " | ".join(map(str, frame.columns)) + " |"
    rule = "|" + "|".join("---" for _ in frame.columns) + "|"
    rows = ["| " + " | ".join(cell(v) for v in row) + " |" for row in frame.itertuples(index=False)]
    return "\n".join([header, rule, *rows])


# -- statistics and config sets ---------------------------------------------------------------------

def spread_configs(space, key: Callable[[SubnetConfig], float], count: int, low: float, high: float, seed: int,
                   pool: int = 3000) -> list[SubnetConfig]:
    """``count`` random configs whose ``key`` (e.g. latency) is spread evenly over [low, high]:
    ``pool`` seeded draws, then the draw nearest each of ``count`` evenly spaced targets."""
    rng = random.Random(seed)
    drawn = {}
    for _ in range(pool):
        config = space.sample(rng)
        drawn.setdefault(config.key, config)
    values = {k: key(c) for k, c in drawn.items()}
    inside = sorted((v, k) for k, v in values.items() if low <= v <= high)
    if len(inside) < count:
        raise SystemExit(f"only {len(inside)} of {pool} random configs fall in [{low:.4g}, {high:.4g}]; "
                         f"expected at least {count}")
    chosen: list[str] = []
    for target in np.linspace(inside[0][0], inside[-1][0], count):
        best = min((abs(v - target), k) for v, k in inside if k not in chosen)
        chosen.append(best[1])
    return [drawn[k] for k in chosen]


def seed_bar_figure(frame: pd.DataFrame, labels: Sequence[str], title: str):
    """Bars of ``scratch_test_top1`` with ``scratch_test_std`` error bars (mean ± std over seeds)."""
    import matplotlib.pyplot as plt

    figure, ax = plt.subplots(figsize=(5.5, 4))
    std = frame["scratch_test_std"].fillna(0)
    ax.bar(list(labels), frame["scratch_test_top1"], yerr=std, capsize=6, color="tab:blue")
    ax.set_ylim((frame["scratch_test_top1"] - std).min() - 2, frame["scratch_test_top1"].max() + 1.5)
    ax.set_ylabel("from-scratch test top-1 (%, mean ± std over seeds)")
    ax.set_title(title)
    ax.grid(axis="y", alpha=0.3)
    figure.tight_layout()
    return figure


def config_text(config: SubnetConfig) -> str:
    """A short human-readable form: widths, depths and expansions per stage, MHSA marked ``*``."""
    stages = []
    for stage in config.stages:
        blocks = ",".join(f"{b.expansion}{'*' if b.mhsa else ''}" for _, b in stage.kept)
        stages.append(f"{stage.width}:{blocks}")
    return " ".join(stages)


def family_and_random(rep: Reproduction, count: int) -> tuple[list[tuple[str, SubnetConfig]], list[SubnetConfig]]:
    """The fine-grained family search's configs (the quickstart's S0-L-like budgets) and
    ``count`` random configs spread evenly over the family's latency range (seeded)."""
    job = rep.job()
    result = rep.search(job.default_family())
    family = [(budget.label, selected[0]) for budget, selected in result.selected.items()]
    latencies = [rep.costs(config)["latency_ms"] for _, config in family]
    randoms = spread_configs(job.space, lambda c: rep.costs(c)["latency_ms"], count, min(latencies), max(latencies),
                             rep.args.seed)
    return family, randoms
