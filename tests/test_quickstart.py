"""`nas quickstart` (test-sized) end to end: the report it writes, a rerun that reuses every stage,
and the Pareto notebook run by a real Jupyter kernel on its results."""
import re
from pathlib import Path

import nbformat
import optuna
import pandas as pd
import yaml
from nbclient import NotebookClient

from conftest import QUICKSTART_ARGS, ROOT, nas_main, parse_nas_command, run_nas
from nas import store
from search_spaces import load_config
from supernet.checkpoint import CHECKPOINT

PNG = b"\x89PNG\r\n\x1a\n"


def test_quickstart_writes_the_report(quickstart_run):
    out, _, result = quickstart_run
    for stage in range(1, 8):
        assert f"== {stage}/7 " in result.stdout  # progress: every stage announced
    report = out / "report"
    summary = (report / "summary.md").read_text()
    figures = sorted((report / "figures").glob("*.png"))
    assert {f.name for f in figures} == {"pareto.png", "trajectory.png", "lut-validation.png"}
    for figure in figures:
        assert figure.read_bytes()[:8] == PNG
        # the summary names each figure and the command that made it
        line = next(line for line in summary.splitlines() if f"`figures/{figure.name}`" in line)
        assert "Made by `nas " in line
    configs = sorted((report / "configs").glob("*.yaml"))
    algorithms = {c.name.split("-params-")[0] for c in configs}
    assert algorithms == {"fine-grained", "random", "nsga2"}
    for config in configs:
        assert load_config(config).space == "efficientformerv2-tiny@32"
    (family,) = (report / "trajectories").glob("fine-grained-family-*-trajectory.csv")  # ALGO-family-DIGEST
    trajectory = pd.read_csv(family)
    assert trajectory["params"].is_monotonic_decreasing and trajectory["move"].iloc[0] == "start"
    # the --params search's config, exported and named in the summary
    selected = re.search(r"Selected `([^`]+)`", summary).group(1)
    exported = sorted(p.name for p in (out / "export").iterdir())
    assert any(name.endswith(".onnx") for name in exported) and any(name.endswith(".mlpackage") for name in exported)
    assert load_config(next((report / "configs").glob("fine-grained-params-0.3*.yaml"))).key == selected
    for command in ("nas train-supernet", "nas build-lut", "nas search", "nas export"):
        assert command in summary


def test_every_command_the_quickstart_prints_parses_to_what_it_ran(quickstart_run):
    """The commands of the stages, the report and the figures, read by the real parser."""
    out, recipe, result = quickstart_run
    summary = (out / "report" / "summary.md").read_text()
    printed = [c for text in re.findall(r"`(nas [^`]+)`", summary) for c in text.split(" && ")]
    printed += [line for line in result.stdout.splitlines() if line.startswith("nas ")
                and not line.startswith("nas quickstart:")]
    parsed = [parse_nas_command(command) for command in printed]
    by_command = {}
    for args in parsed:
        by_command.setdefault(args.command, []).append(args)
    assert set(by_command) == {"quickstart", "train-supernet", "build-lut", "lut", "search", "export", "results"}
    (train,) = {(a.recipe, a.out) for a in by_command["train-supernet"]}
    assert (train[0], Path(train[1])) == (str(recipe), out / "supernet")
    (lut,) = {Path(a.out) for a in by_command["build-lut"]}
    assert {Path(a.file) for a in by_command["lut"]} == {lut} and lut.exists()
    for search in by_command["search"]:
        assert (Path(search.supernet), Path(search.lut), Path(search.out)) == (out / "supernet", lut, out / "search")
        assert (search.eval_images, search.bn_batches, search.criterion) == (64, 1, "kl")
    assert {a.algorithm for a in by_command["search"]} == {"fine-grained", "random", "nsga2"}
    assert {a.format for a in by_command["export"]} == {"onnx", "coreml"}
    assert all(Path(a.config).exists() for a in by_command["export"])
    (again,) = {(Path(a.out), a.recipe, a.eval_images, a.bn_batches, a.evaluations, a.lut_runs)
                for a in by_command["quickstart"]}
    assert again == (out, str(recipe), 64, 1, 8, 3)  # the settings of QUICKSTART_ARGS


def test_quickstart_again_reuses_every_stage(quickstart_run):
    out, recipe, _ = quickstart_run
    checkpoint = out / "supernet" / CHECKPOINT
    before = checkpoint.stat().st_mtime_ns
    storage = store.default_storage(out / "search")
    trials = sum(s.n_trials for s in optuna.study.get_all_study_summaries(storage))
    again = run_nas("quickstart", "--out", out, "--recipe", recipe, *QUICKSTART_ARGS)
    assert again.returncode == 0, again.stderr[-2000:]
    assert "reusing the trained supernet" in again.stdout and "reusing the calibrated table" in again.stdout
    assert again.stdout.count("0 evaluated now") == 4 and again.stdout.count("reusing ") >= 4
    assert checkpoint.stat().st_mtime_ns == before
    assert sum(s.n_trials for s in optuna.study.get_all_study_summaries(storage)) == trials
    # another recipe is not silently served the old supernet
    changed = recipe.with_name("changed.yaml")
    settings = yaml.safe_load(recipe.read_text())
    changed.write_text(yaml.safe_dump({**settings, "clip_grad": 1.0, "channels_last": not settings.get("channels_last")}))
    refused = run_nas("quickstart", "--out", out, "--recipe", changed, *QUICKSTART_ARGS)
    assert refused.returncode != 0 and "another recipe" in refused.stderr and "clip_grad" in refused.stderr
    assert "channels_last" not in refused.stderr  # a layout, not a recipe: the supernet is the same
    assert checkpoint.stat().st_mtime_ns == before


def test_pareto_notebook_runs_on_the_quickstart_results(quickstart_run, monkeypatch):
    out, _, _ = quickstart_run
    monkeypatch.setenv("NAS_RESULTS", str(out / "search"))
    path = ROOT / "experiments" / "notebooks" / "pareto_fronts.ipynb"
    notebook = nbformat.read(path, as_version=4)
    NotebookClient(notebook, timeout=300, kernel_name="python3",
                   resources={"metadata": {"path": str(path.parent)}}).execute()
    outputs = [o for cell in notebook.cells if cell.cell_type == "code" for o in cell.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    text = "\n".join(o.get("text", "") + o.get("data", {}).get("text/plain", "") for o in outputs)
    assert "evaluated configs in 4 studies" in text
    for algorithm in ("fine-grained", "random", "nsga2"):
        assert algorithm in text  # the per-algorithm table and the Pareto sets
    images = [o for o in outputs if "image/png" in o.get("data", {})]
    assert len(images) == 2  # the fronts and the trajectories


def test_bad_quickstart_input_stops_before_any_work(tmp_path):
    def error(*args):
        result = nas_main("quickstart", "--out", tmp_path / "qs", *args)
        assert result.returncode == 2 and "Traceback" not in result.stderr
        return result.stderr

    assert "unreachable" in error("--params", "1K")
    assert "--alpha-size = 2.0 is outside [0, 1]" in error("--alpha-size", "2")
    assert "--evaluations 0" in error("--evaluations", "0")
    assert "runs = 1" in error("--lut-runs", "1")
    assert "recipe 'nope' does not exist" in error("--recipe", "nope")
    assert not (tmp_path / "qs").exists()
