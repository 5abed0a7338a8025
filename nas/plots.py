"""Pareto fronts and search trajectories, drawn from result stores (matplotlib).

Every function takes the frames of :mod:`nas.results` (one row per evaluated config:
``accuracy``, ``mes``, ``latency_ms``, ``params_m``, ``algorithm``, ...) and draws on a
given ``Axes`` (or a new figure). One colour per algorithm, the same in every plot::

    from nas.results import load_results, load_trajectories
    from nas.plots import pareto_figure

    frame = load_results("runs/quickstart/search")
    figure = pareto_figure(frame, load_trajectories("runs/quickstart/search"))
    figure.savefig("pareto.png")

Figures are built without pyplot (no display needed); in Jupyter pass axes from
``plt.subplots`` or display the returned figure.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional, Union

import pandas as pd

from nas.search import ALGORITHMS
from nas.store import pareto_front
from search_spaces.io import atomic_path

#: x axes of the Pareto plots: column, label, maximised
AXES = {
    "mes": ("MES (higher is better)", True),
    "latency_ms": ("predicted latency (ms)", False),
    "params_m": ("parameters (M)", False),
}
COLOURS = dict(zip(ALGORITHMS, ("tab:red", "tab:blue", "tab:purple", "tab:grey", "tab:green")))


def colour(algorithm: str) -> str:
    return COLOURS.get(algorithm, "tab:orange")


def _axes(ax=None):
    if ax is not None:
        return ax
    from matplotlib.figure import Figure

    return Figure(figsize=(6, 4.5), dpi=110).add_subplot()


def _check_x(x: str) -> None:
    if x not in AXES:
        raise ValueError(f"x = {x!r}; expected one of {', '.join(AXES)}")


def _scale(ax, x: str) -> None:
    """Latency and parameters span orders of magnitude across a space: log axes, plain tick labels."""
    if x in ("latency_ms", "params_m"):
        from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

        ax.set_xscale("log")
        ax.xaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
        ax.xaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
        ax.xaxis.set_minor_formatter(NullFormatter())
    ax.grid(alpha=0.3)


def plot_pareto(frame: pd.DataFrame, x: str = "mes", ax=None, title: Optional[str] = None):
    """Top-1 against ``x`` (``mes``, ``latency_ms`` or ``params_m``): every evaluated config of
    each algorithm as a faint dot, its Pareto front (accuracy vs ``x``) as a line."""
    _check_x(x)
    ax = _axes(ax)
    label, maximise = AXES[x]
    for algorithm, group in frame.groupby("algorithm", sort=True):
        group = group.drop_duplicates("key")
        ax.scatter(group[x], group["accuracy"], s=9, alpha=0.25, color=colour(algorithm), linewidths=0)
        front = pareto_front(group, (("accuracy", True), (x, maximise))).sort_values(x)
        ax.plot(front[x], front["accuracy"], marker="o", markersize=4, drawstyle="steps-post" if maximise
                else "steps-pre", color=colour(algorithm), label=f"{algorithm} ({len(group)} configs)")
    ax.set_xlabel(label)
    ax.set_ylabel("top-1 (%), held-out split")
    _scale(ax, x)
    ax.legend(fontsize="small")
    if title:
        ax.set_title(title)
    return ax


def plot_trajectories(trajectories: pd.DataFrame, x: str = "params_m", ax=None, title: Optional[str] = None):
    """The path of each greedy search (fine-grained, v1-scale, ...) from the largest config down:
    top-1 against ``x``, one line per search (:func:`nas.results.load_trajectories`)."""
    _check_x(x)
    ax = _axes(ax)
    for search, path in trajectories.groupby("search", sort=True):
        path = path[~path["move"].isin(["sample", "nsga2"])]  # random and NSGA-II have no path
        if len(path) > 1:
            ax.plot(path[x], path["accuracy"], marker=".", color=colour(path["algorithm"].iloc[0]), label=search)
    ax.set_xlabel(AXES[x][0])
    ax.set_ylabel("top-1 (%), held-out split")
    _scale(ax, x)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize="small")
    ax.set_title(title or "search trajectories (largest config at the right)")
    return ax


def pareto_figure(frame: pd.DataFrame, trajectories: Optional[pd.DataFrame] = None):
    """One figure: the fronts against MES, latency and params, and the trajectories."""
    from matplotlib.figure import Figure

    panels = 4 if trajectories is not None else 3
    figure = Figure(figsize=(6 * panels / 2, 9) if panels == 4 else (18, 4.8), dpi=100)
    axes = figure.subplots(2, 2).ravel() if panels == 4 else figure.subplots(1, 3)
    for ax, x in zip(axes, AXES):
        plot_pareto(frame, x, ax, title=f"accuracy vs {AXES[x][0].split(' (')[0]}")
    if trajectories is not None:
        plot_trajectories(trajectories, "params_m", axes[3])
    figure.tight_layout()
    return figure


def save_figure(figure, path: Union[str, Path]) -> Path:
    """Write a figure as PNG, atomically."""
    path = Path(path)
    with atomic_path(path) as tmp:
        figure.savefig(tmp, format="png", bbox_inches="tight")
    return path


__all__ = ["AXES", "COLOURS", "pareto_figure", "plot_pareto", "plot_trajectories", "save_figure"]
