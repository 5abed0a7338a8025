"""``nas quickstart``: the whole pipeline on the embedded default, into one folder with a report.

Stages, each reusing what an earlier run finished (a killed run resumes where it stopped):

1. **supernet**: ``nas train-supernet --recipe fashion-mnist-tiny`` (resumed from its checkpoint);
2. **latency table**: ``nas build-lut`` on ``onnxruntime`` (missing blocks only), then
   ``nas lut validate`` once (the calibration is stored in the table);
3. **family search**: ``nas search --family`` (fine-grained, one trajectory);
4. **baselines**: ``nas search --family --algorithm random`` and ``nsga2`` with as many
   evaluations, for the Pareto plots;
5. **--params search**: ``nas search --params B`` (its configs mostly come from the store);
6. **export**: the ``--params`` search's config with the supernet's weights, as ONNX (checked
   against PyTorch) and Core ML;
7. **report**: ``OUT/report/``: ``configs/*.yaml``, ``trajectories/*.csv``, ``figures/*.png``
   and ``summary.md`` naming each figure and the command that made it.

Everything is a call of the functions the ``nas`` commands call; the report names those
commands so each stage can be rerun (or varied) by hand.
"""
from __future__ import annotations

import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

from search_spaces import InvalidInputError, count_params, get_space, parse_params
from search_spaces.io import atomic_write_text, check_output

from supernet.protocol import check_criterion

from nas import nas_command
from nas.mes import check_alpha
from nas.search_job import DEFAULT_CRITERION, SEARCH_PROTOCOL
from nas.search import Budget, SearchResult

# ONNX Runtime, the deployment runtime: its block latencies depend on width (1.6-2.0x across a stage's widths)
# and FFN expansion (1.7-2.7x), where torch-cpu's are mostly per-op overhead (1.1-1.3x), so the alphas of MES
# change what the search picks (benchmarks/latency_sensitivity.py, RESULTS-search.md)
BACKEND = "onnxruntime"
BASELINES = ("random", "nsga2")
EXPORT_FORMATS = ("onnx", "coreml")


@dataclass(frozen=True)
class QuickstartSettings:
    out: Path = Path("runs/quickstart")
    recipe: str = "fashion-mnist-tiny"
    data_dir: Optional[str] = None
    params: Optional[str] = None  # the --params search's budget (default: halfway, geometrically, across the space)
    alpha_latency: float = 1.0
    alpha_size: float = 0.5
    evaluations: int = 100  # per baseline
    eval_images: int = SEARCH_PROTOCOL.images
    bn_batches: int = SEARCH_PROTOCOL.bn_batches
    criterion: str = DEFAULT_CRITERION
    lut_runs: int = 100  # timed runs per block and per validation network
    validate_samples: int = 20  # held-out networks of the table's validation (10 more fit the calibration)
    progress: bool = True

    def command(self) -> str:
        """The ``nas quickstart`` command of these settings (the options that differ from the defaults)."""
        defaults, words = QuickstartSettings(), []
        for name, flag in (("out", "--out"), ("recipe", "--recipe"), ("data_dir", "--data-dir"), ("params", "--params"),
                           ("alpha_latency", "--alpha-lat"), ("alpha_size", "--alpha-size"),
                           ("evaluations", "--evaluations"), ("eval_images", "--eval-images"),
                           ("bn_batches", "--bn-batches"), ("criterion", "--criterion"), ("lut_runs", "--lut-runs")):
            if getattr(self, name) != getattr(defaults, name):
                words += [flag, getattr(self, name)]
        return nas_command("quickstart", *words)


@dataclass
class StageLog:
    """What each stage did, for the summary: name, the equivalent command, seconds, reused or not."""

    rows: list[dict] = field(default_factory=list)

    def add(self, stage: str, command: str, seconds: float, reused: bool, note: str = "") -> None:
        self.rows.append({"stage": stage, "command": command, "seconds": seconds, "reused": reused, "note": note})


class Quickstart:
    def __init__(self, settings: QuickstartSettings, echo: Callable[[str], None] = print) -> None:
        from supernet.recipe import load_recipe

        self.settings, self.echo = settings, echo
        self.out = check_output(settings.out, "--out", folder=True)
        self.recipe = load_recipe(settings.recipe)
        self.space = get_space(self.recipe.space)
        # bad input is refused here, before the supernet trains
        check_alpha(settings.alpha_latency, "--alpha-lat")
        check_alpha(settings.alpha_size, "--alpha-size")
        check_criterion(settings.criterion)
        for name in ("evaluations", "eval_images", "bn_batches"):
            if getattr(settings, name) < 1:
                raise InvalidInputError(f"--{name.replace('_', '-')} {getattr(settings, name)}: expected a positive "
                                        f"number")
        smallest, largest = count_params(self.space.smallest()), count_params(self.space.largest())
        params = parse_params(settings.params) if settings.params else float(f"{(smallest * largest) ** 0.5:.3g}")
        if params < smallest:
            raise InvalidInputError(f"--params {settings.params} is unreachable: the smallest config of "
                                    f"{self.space.name!r} has {smallest / 1e6:.3f}M params")
        self.params_budget = Budget("params", params)
        from latency_lut import Protocol

        self.protocol = Protocol(runs=settings.lut_runs)
        self.supernet_dir = self.out / "supernet"
        self.lut = self.out / "lut" / f"{self.space.name}-{BACKEND}.parquet"
        self.search_dir = self.out / "search"
        self.export_dir = self.out / "export"
        self.report_dir = self.out / "report"
        self.log = StageLog()
        self.started = time.perf_counter()

    # -- stages ------------------------------------------------------------------------------------

    def run(self) -> Path:
        """Every stage in order; returns the report's summary."""
        self.echo(f"nas quickstart: {self.space.name} supernet on {self.recipe.dataset}, {BACKEND} latency table, "
                  f"searches and exports into {self.out}/")
        self.train_supernet()
        self.build_lut()
        job = self._job()
        family = job.check(job.default_family())
        results = {"fine-grained": self._search(job, "3/7 family search", family, "fine-grained", ["--family"])}
        for algorithm in BASELINES:
            results[algorithm] = self._search(job, f"4/7 {algorithm} baseline", family, algorithm,
                                              ["--family", "--algorithm", algorithm, "--evaluations",
                                               self.settings.evaluations])
        budget = job.check([self.params_budget])[0]
        params_result = self._search(job, "5/7 --params search", [budget], "fine-grained",
                                     ["--params", f"{budget.value / 1e6:.3g}M"])
        exports = self.export(params_result)
        return self.write_report(family, results, params_result, exports)

    def _stage(self, title: str) -> float:
        self.echo(f"\n== {title} ({(time.perf_counter() - self.started) / 60:.1f} min elapsed)")
        return time.perf_counter()

    def train_supernet(self) -> None:
        from supernet.checkpoint import CHECKPOINT, load_checkpoint
        from supernet.recipe import LAYOUT_ONLY, Recipe
        from supernet.train import train_supernet

        started = self._stage("1/7 supernet")
        command = nas_command("train-supernet", "--recipe", self.settings.recipe, "--out", self.supernet_dir)
        checkpoint = self.supernet_dir / CHECKPOINT
        stored = load_checkpoint(checkpoint) if checkpoint.exists() else {}
        trained = Recipe.from_dict(stored["recipe"]).to_dict() if stored else {}
        changed = sorted(k for k, v in self.recipe.to_dict().items() if trained.get(k) != v and k not in LAYOUT_ONLY)
        if stored and changed:  # (from_dict: settings added since the run take their defaults)
            raise InvalidInputError(f"{self.supernet_dir} holds a supernet of another recipe than "
                                    f"{self.settings.recipe!r} (they differ in {', '.join(changed)}); choose another "
                                    "--out, or delete that folder to train it again")
        reused = bool(stored.get("finished", False))
        if reused:
            self.echo(f"reusing the trained supernet in {self.supernet_dir}")
        else:
            self.echo(command + (" --resume" if checkpoint.exists() else ""))
            train_supernet(self.recipe, self.supernet_dir, resume=checkpoint.exists(), data_dir=self.settings.data_dir,
                           progress=self.settings.progress)
        self.log.add("supernet", command, time.perf_counter() - started, reused)

    def build_lut(self) -> None:
        from latency_lut import Backend, LatencyTable, Protocol, build_table, missing_parts, validate_and_calibrate

        started = self._stage("2/7 latency table")
        protocol = self.protocol
        runs = ["--runs", protocol.runs] if protocol.runs != Protocol().runs else []
        command = nas_command("build-lut", "--space", self.space.name, "--backend", BACKEND, "--out", self.lut, *runs)
        table = LatencyTable.load(self.lut) if self.lut.exists() else None
        reused = table is not None and not missing_parts(table, self.space) and table.calibration is not None
        if reused:
            self.echo(f"reusing the calibrated table {self.lut}")
        else:
            self.echo(command)
            build_table(self.space, Backend(BACKEND, threads=1), self.lut, protocol, progress=self.settings.progress)
            self.echo(self._validate_command(*runs))
            report, _, _ = validate_and_calibrate(
                self.lut, samples=self.settings.validate_samples, fit_samples=10, protocol=protocol,
                progress=self.settings.progress)
            c = report.calibrated
            self.echo(f"calibrated prediction on {c.networks} held-out networks: {c.within_10_pct:.0f}% within "
                      f"±10%, Kendall tau {c.kendall_tau:.3f}, MAPE {c.mape_pct:.1f}%; {report.noise.describe()}")
            for warning in report.noise.warnings():
                self.echo(f"warning: {warning}")
        self.log.add("latency table", command, time.perf_counter() - started, reused)

    def _job(self):
        from nas.search_job import SearchJob

        s = self.settings
        protocol = SEARCH_PROTOCOL.replace(images=s.eval_images, bn_batches=s.bn_batches)
        return SearchJob(self.supernet_dir, self.lut, self.search_dir, alpha_latency=s.alpha_latency,
                         alpha_size=s.alpha_size, protocol=protocol, criterion=s.criterion, data_dir=s.data_dir)

    def _validate_command(self, *runs) -> str:
        return nas_command("lut", "validate", self.lut, "--samples", self.settings.validate_samples, "--fit-samples",
                           10, *runs)

    def _search_command(self, budget_args: list) -> str:
        s = self.settings
        return nas_command("search", "--supernet", self.supernet_dir, "--lut", self.lut, *budget_args, "--alpha-lat",
                           s.alpha_latency, "--alpha-size", s.alpha_size, "--criterion", s.criterion, "--eval-images",
                           s.eval_images, "--bn-batches", s.bn_batches, "--out", self.search_dir)

    def _search(self, job, title: str, budgets: list[Budget], algorithm: str, budget_args: list) -> SearchResult:
        started = self._stage(title)
        command = self._search_command(budget_args)
        self.echo(command)
        progress = (lambda line: self.echo("  " + line)) if self.settings.progress else None
        result = job.run(budgets, algorithm, evaluations=self.settings.evaluations, progress=progress,
                         command=command)
        note = f"{result.evaluations} configs, {result.measured} evaluated now"
        self.echo(f"{algorithm}: {note}, {result.seconds:.0f} s")
        self.log.add(title.split(" ", 1)[1], command, time.perf_counter() - started, result.measured == 0, note)
        return result

    def export(self, result: SearchResult) -> dict[str, Path]:
        from nas.export import FORMATS, export_network
        from supernet.retrain import load_network

        started = self._stage("6/7 export")
        exports: dict[str, Path] = {}
        budget = result.budgets[0]
        if budget not in result.selected:
            self.echo(f"no config reached {budget.label}: nothing to export")
            return exports
        config = result.selected[budget][0]
        config_file = self.search_dir / f"{result.config_name(budget)}.yaml"
        model = None
        reused = True
        commands = []
        for fmt in EXPORT_FORMATS:
            target = self.export_dir / f"{result.algorithm}-{budget.label}{FORMATS[fmt]}"
            command = nas_command("export", config_file, "--weights", self.supernet_dir, "--format", fmt, "--out", target)
            commands.append(command)
            if target.exists():
                exports[fmt] = target
                self.echo(f"reusing {target}")
                continue
            self.echo(command)
            try:
                if model is None:
                    model, config = load_network(self.supernet_dir, config, data_dir=self.settings.data_dir)
                export_network(model, config, fmt, target)
            except InvalidInputError as error:  # e.g. no coremltools here: the rest of the report still stands
                self.echo(f"skipped {fmt}: {error}")
                continue
            exports[fmt] = target
            reused = False
        self.log.add("export", " && ".join(commands), time.perf_counter() - started, reused,
                     ", ".join(map(str, exports.values())))
        return exports

    # -- the report --------------------------------------------------------------------------------

    def write_report(self, family: list[Budget], results: dict[str, SearchResult], params_result: SearchResult,
                     exports: dict[str, Path]) -> Path:
        from nas.plots import pareto_figure, plot_trajectories, save_figure
        from nas.results import load_results, load_trajectories

        started = self._stage("7/7 report")
        configs_dir, trajectories_dir, figures_dir = (self.report_dir / name for name in
                                                      ("configs", "trajectories", "figures"))
        for folder in (configs_dir, trajectories_dir, figures_dir):
            folder.mkdir(parents=True, exist_ok=True)
        for path in sorted(self.search_dir.glob("*.yaml")):
            shutil.copyfile(path, configs_dir / path.name)
        for path in sorted(self.search_dir.glob("*-trajectory.csv")):
            shutil.copyfile(path, trajectories_dir / path.name)
        frame = load_results(self.search_dir)
        trajectories = load_trajectories(self.search_dir)
        trajectories = trajectories[trajectories["search"].str.contains("-family-", regex=False)]
        figures = {
            "pareto.png": ("accuracy against MES, latency and parameters: every evaluated config (dots) and "
                           "each algorithm's Pareto front (lines), with the fine-grained search's trajectory",
                           save_figure(pareto_figure(frame, trajectories), figures_dir / "pareto.png")),
            "trajectory.png": ("the fine-grained search from the largest config down, with the family's budgets",
                               save_figure(self._trajectory_figure(trajectories, family, plot_trajectories),
                                           figures_dir / "trajectory.png")),
        }
        from latency_lut.validation import validation_paths

        validation = validation_paths(self.lut)[1]
        if validation.exists():
            shutil.copyfile(validation, figures_dir / "lut-validation.png")
            figures["lut-validation.png"] = ("the latency table's calibrated predictions against measured "
                                             "networks", figures_dir / "lut-validation.png")
        summary = self.report_dir / "summary.md"
        atomic_write_text(summary, self._summary(family, results, params_result, exports, figures, frame))
        self.log.add("report", "", time.perf_counter() - started, False)
        self.echo(f"report: {summary}")
        return summary

    def _trajectory_figure(self, trajectories, family: list[Budget], plot_trajectories):
        from matplotlib.figure import Figure

        figure = Figure(figsize=(7, 4.5), dpi=100)
        ax = figure.add_subplot()
        plot_trajectories(trajectories[trajectories["search"] == "fine-grained-family"], "params_m", ax)
        for budget in family:
            ax.axvline(budget.value / 1e6, color="grey", linestyle=":", linewidth=1)
            ax.text(budget.value / 1e6, ax.get_ylim()[0], f" {budget.label}", rotation=90, fontsize=7,
                    va="bottom", color="grey")
        figure.tight_layout()
        return figure

    def _summary(self, family, results, params_result, exports, figures, frame) -> str:
        s = self.settings
        quickstart = s.command()
        lines = ["# nas quickstart: report", "",
                 f"Space `{self.space.name}` ({self.space.resolution} px), data `{self.recipe.dataset}`, latency "
                 f"table `{BACKEND}` (1 thread), MES with alpha_latency {s.alpha_latency}, alpha_size "
                 f"{s.alpha_size}; configs are ranked by `{s.criterion}` and accuracy is top-1, both on {s.eval_images} "
                 f"held-out training images after BatchNorm recalibration on {s.bn_batches} batches. Made by "
                 f"`{quickstart}`.", "",
                 "## Family search: the config at each budget", "",
                 "| budget | algorithm | top-1 (%) | params (M) | latency (ms) | MES | config |",
                 "|---|---|---|---|---|---|---|"]
        for budget in family:
            for algorithm, result in results.items():
                if budget in result.selected:
                    m = result.selected[budget][1]
                    lines.append(f"| {budget.label} | {algorithm} | {m.accuracy:.2f} | {m.params / 1e6:.3f} | "
                                 f"{m.latency_ms:.3f} | {m.mes:.1f} | `{m.key}` |")
        budget = params_result.budgets[0]
        lines += ["", f"## The `--params {budget.value / 1e6:.3g}M` search", ""]
        if budget in params_result.selected:
            m = params_result.selected[budget][1]
            lines.append(f"Selected `{m.key}`: top-1 {m.accuracy:.2f}%, {m.params / 1e6:.3f} M params, "
                         f"{m.latency_ms:.3f} ms predicted, MES {m.mes:.1f}. Config: "
                         f"`configs/{params_result.config_name(budget)}.yaml`.")
        else:
            lines.append(f"No config reached {budget.label}.")
        if exports:
            lines += ["", "Exported with the supernet's weights (BatchNorm recalibrated): " + ", ".join(
                f"`{path}` ({fmt})" for fmt, path in exports.items()) + "."]
        lines += ["", "## Figures", ""]
        for name, (what, _) in figures.items():
            made_by = (f"`{self._validate_command()}` (stage 2)"
                       if name == "lut-validation.png" else
                       f"`{quickstart}` (stage 7: `nas.plots` over the results store in `{self.search_dir}`)")
            lines += [f"- `figures/{name}`: {what}. Made by {made_by}.", f"  ![{name}](figures/{name})"]
        lines += ["", "## Stages", "", "| stage | command | wall time (s) | reused | note |", "|---|---|---|---|---|"]
        for row in self.log.rows:
            lines.append(f"| {row['stage']} | `{row['command']}` | {row['seconds']:.0f} | "
                         f"{'yes' if row['reused'] else 'no'} | {row['note']} |")
        total = time.perf_counter() - self.started
        lines += ["", f"Total wall time of this run: {total:.0f} s ({total / 60:.1f} min). The results store holds "
                  f"{frame['key'].nunique()} distinct evaluated configs in {frame['study'].nunique()} studies: "
                  f"`{nas_command('results', 'show', self.search_dir)}`; in Python, `nas.results.load_results`; in Jupyter, "
                  "`experiments/notebooks/pareto_fronts.ipynb`.", "",
                  "Files: `configs/` (one YAML per budget and algorithm), `trajectories/` (one CSV per search: "
                  "step, move, accuracy, params, latency_ms, mes, utility, key), `figures/`."]
        return "\n".join(lines) + "\n"


def run_quickstart(settings: QuickstartSettings, echo: Callable[[str], None] = print) -> Path:
    return Quickstart(settings, echo).run()


__all__ = ["QuickstartSettings", "run_quickstart"]
