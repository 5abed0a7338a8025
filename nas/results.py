"""Search outputs on disk, and reading result stores back for analysis.

Per search, in its output folder (``ALGO`` is the algorithm, ``LABEL`` a budget, ``DIGEST`` the
study's hash of the search's arguments, ``NAME`` the search's name: ``ALGO-LABEL-DIGEST`` for one
budget, ``ALGO-family-DIGEST`` for several; so searches of one folder never share a file):

* ``ALGO-LABEL-DIGEST.yaml``: the config selected at each budget reached;
* ``NAME-trajectory.csv``: step, move, accuracy (top-1), loss, kl, params, latency_ms, mes, utility
  (the criterion's drop per MES gain), key;
* ``NAME-summary.md``: budgets, selected configs and their metrics, evaluations, wall time;
* ``study.db``: the results store (unless ``--storage`` names another).
"""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from search_spaces import InvalidInputError
from search_spaces.config import save_config
from search_spaces.io import atomic_path, atomic_write_text

from nas import store
from nas.search import ALGORITHMS, SearchResult

TRAJECTORY_COLUMNS = ["step", "move", "accuracy", "loss", "kl", "params", "latency_ms", "mes", "utility", "key"]


def selected_frame(result: SearchResult) -> pd.DataFrame:
    rows = []
    for budget in result.budgets:
        if budget in result.selected:
            config, metrics = result.selected[budget]
            rows.append({"budget": budget.label, **metrics.as_dict()})
    return pd.DataFrame(rows, columns=["budget", "key", "accuracy", "params", "latency_ms", "mes"])


def write_search_outputs(result: SearchResult, out: Path, command: str = "") -> list[Path]:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for budget, (config, _) in result.selected.items():
        written.append(save_config(config, out / f"{result.config_name(budget)}.yaml"))
    trajectory = out / f"{result.name}-trajectory.csv"
    with atomic_path(trajectory) as tmp:
        pd.DataFrame(result.trajectory, columns=TRAJECTORY_COLUMNS).to_csv(tmp, index=False)
    written.append(trajectory)
    summary = out / f"{result.name}-summary.md"
    atomic_write_text(summary, summary_markdown(result, command))
    written.append(summary)
    return written


def summary_markdown(result: SearchResult, command: str = "") -> str:
    frame = selected_frame(result)
    lines = [f"# Search: {result.algorithm}", ""]
    if command:
        lines += [f"Command: `{command}`", ""]
    lines += [f"Budgets: {', '.join(b.label for b in result.budgets)}",
              f"Configs evaluated: {result.evaluations}; wall time {result.seconds:.1f} s", ""]
    missed = [b.label for b in result.budgets if b not in result.selected]
    if missed:
        lines += [f"Budgets not reached: {', '.join(missed)}", ""]
    lines += ["| budget | top-1 (%) | params (M) | latency (ms) | MES | config |", "|---|---|---|---|---|---|"]
    for row in frame.itertuples():
        lines.append(f"| {row.budget} | {row.accuracy:.2f} | {row.params / 1e6:.3f} | {row.latency_ms:.4g} | "
                     f"{row.mes:.2f} | `{row.key}` |")
    return "\n".join(lines) + "\n"


def load_results(*folders: Path) -> pd.DataFrame:
    """Every evaluated config of every study under the given folders (one row per trial):
    key, accuracy, params, params_m, latency_ms, mes, config, algorithm, trial, study, store."""
    frames = [store.studies_dataframe(Path(folder)) for folder in folders]
    frame = pd.concat(frames, ignore_index=True)
    return frame.assign(params_m=frame["params"] / 1e6)


def load_trajectories(*folders: Path) -> pd.DataFrame:
    """The trajectories (``NAME-trajectory.csv``) of the searches written to the given folders,
    with each row's search name, algorithm and folder."""
    frames = []
    by_length = sorted(ALGORITHMS, key=len, reverse=True)  # v1-scale+prune before v1-scale
    for folder in map(Path, folders):
        for path in sorted(folder.glob("*-trajectory.csv")):
            name = path.name[: -len("-trajectory.csv")]
            algorithm = next((a for a in by_length if name.startswith(f"{a}-")), name)
            frame = pd.read_csv(path)
            frames.append(frame.assign(search=name, algorithm=algorithm, folder=str(folder),
                                       params_m=frame["params"] / 1e6))
    if not frames:
        raise InvalidInputError(f"no search trajectory (*-trajectory.csv) in {', '.join(map(str, folders))}")
    return pd.concat(frames, ignore_index=True)


def pareto_table(frame: pd.DataFrame) -> pd.DataFrame:
    """Per study, the configs on the (accuracy, MES) front, most accurate first."""
    fronts = []
    for _, group in frame.groupby("study", sort=True):
        front = store.pareto_front(group.drop_duplicates("key"))
        fronts.append(front.sort_values(["accuracy", "mes"], ascending=False))
    return pd.concat(fronts, ignore_index=True)
