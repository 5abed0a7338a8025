"""The fine-grained joint search (the paper's Algorithm 1) and its baselines, on one evaluator.

Every algorithm ranks configs by one *criterion* (``CRITERIA``): held-out top-1, mean
cross-entropy (``loss``) or the KL divergence from the largest subnet's predictions
(``kl``); all three are measured in one pass and stored, and top-1 is always reported.

Algorithms (``ALGORITHMS``):

* ``fine-grained``: from the largest config, every step scores every applicable move
  (shrink a width, shrink one FFN's expansion, drop a block, drop a block's MHSA) by
  the criterion's drop per MES gain and takes the best (smallest ``drop / dMES``). A move
  that does not lower the criterion wins outright; among several such, the one with the
  largest MES gain. Remaining ties go to the first move in the space's fixed move order.
  It stops when every budget is met, recording the config as the trajectory crosses each
  budget. Optionally (``recheck``) a step re-scores its best few moves on a second slice
  of images before committing.
* ``v1-scale``: the same loop with depth and width moves only (expansion fixed at the
  largest), EfficientFormer V1's search space.
* ``v1-scale+prune``: ``v1-scale`` to a budget loosened by ``PRUNE_SLACK``, then
  expansion ratios chosen by magnitude pruning of FFN hidden channels (the hidden
  channels a shrink would remove with the smallest mean ``|fc1 weight| x |BN scale|``
  go first) until the budget is met.
* ``random``: ``evaluations`` random configs within the loosest budget; per budget the
  best one meeting it.
* ``nsga2`` / ``tpe``: Optuna's NSGA-II / multivariate TPE over the config's choices,
  maximising the criterion and MES, the loosest budget as a constraint; duplicate
  configs are not re-evaluated. Proposals come in rounds scored as one batch: the rest of
  NSGA-II's generation (what one proposal at a time gives), ten for TPE (constant liar).

Every evaluation goes through :class:`Evaluator`, which caches by config key in the
results store, so a search started again with the same arguments resumes without
re-evaluating any stored config.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import math
import random
import re
import time
import warnings
from dataclasses import dataclass, field
from typing import Callable, Optional, Sequence

from search_spaces import (
    MOVE_KINDS,
    InvalidInputError,
    SearchSpace,
    SubnetConfig,
    count_params,
    parse_latency_ms,
    parse_mes,
    parse_params,
)
from search_spaces.presets import PAPER_FIGURES

from supernet.protocol import Scores, check_criterion

from nas import store
from nas.objectives import Metrics, Objectives

ALGORITHMS = ("fine-grained", "v1-scale", "v1-scale+prune", "random", "nsga2", "tpe")
SAMPLING = ("random", "nsga2", "tpe")  # the algorithms that draw --evaluations configs with a --seed
V1_MOVES = ("width", "drop_block", "drop_mhsa")
PRUNE_SLACK = 1.25  # v1-scale+prune: V1 stops at budget x 1.25 (params, latency) or / 1.25 (MES)


# -- budgets ---------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Budget:
    """``params`` (count) or ``latency`` (ms): at most; ``mes``: at least."""

    kind: str
    value: float

    def met(self, metrics_or_costs) -> bool:
        params, latency_ms, mes = _costs_of(metrics_or_costs)
        if self.kind == "params":
            return params <= self.value
        if self.kind == "latency":
            return latency_ms <= self.value
        return mes >= self.value

    def loosened(self, factor: float) -> "Budget":
        return Budget(self.kind, self.value / factor if self.kind == "mes" else self.value * factor)

    @property
    def label(self) -> str:
        if self.kind == "params":
            return f"params-{self.value / 1e6:.3g}M"
        if self.kind == "latency":
            return f"latency-{self.value:.3g}ms"
        return f"mes-{self.value:.4g}"


def _costs_of(item) -> tuple[float, float, float]:
    if isinstance(item, Metrics):
        return item.params, item.latency_ms, item.mes
    return item


def parse_family(text: str) -> list[Budget]:
    """``3.5M,6.1M`` (params), ``0.9ms,1.1ms`` (latency) or ``60,80`` (MES): one kind for all."""
    budgets = []
    for item in [t.strip() for t in text.split(",") if t.strip()]:
        unit = re.sub(r"^[-+0-9.eE]*", "", item).strip().lower()
        if unit in ("ms", "us", "µs", "s"):
            budgets.append(Budget("latency", parse_latency_ms(item)))
        elif unit:
            budgets.append(Budget("params", parse_params(item)))
        else:
            budgets.append(Budget("mes", parse_mes(item)))
    if not budgets:
        raise InvalidInputError(f"--family {text!r}: expected comma-separated budgets such as 3.5M,6.1M")
    kinds = {b.kind for b in budgets}
    if len(kinds) > 1:
        raise InvalidInputError(f"--family {text!r} mixes budget kinds ({', '.join(sorted(kinds))}); expected "
                                f"one kind: params (7M), latency (1.1ms) or MES (60)")
    return budgets


def default_family(space: SearchSpace) -> list[Budget]:
    """The paper's S0-L parameter counts on ``efficientformerv2``; elsewhere four parameter
    budgets spaced geometrically between the smallest and the largest config."""
    if space.name == "efficientformerv2":
        return [Budget("params", PAPER_FIGURES[name]["params_m"] * 1e6) for name in ("L", "S2", "S1", "S0")]
    low, high = count_params(space.smallest()), count_params(space.largest())
    return [Budget("params", float(f"{low * (high / low) ** f:.3g}")) for f in (0.8, 0.6, 0.4, 0.2)]


def check_budgets(objectives: Objectives, budgets: Sequence[Budget]) -> list[Budget]:
    """Budgets sorted loosest first; one below the smallest config is refused before any work."""
    labels = [budget.label for budget in budgets]
    alike = [label for label in labels if labels.count(label) > 1]
    if alike:  # the label names the budget's output file
        raise InvalidInputError(f"budget {alike[0]} is given twice (or two budgets agree to 3 digits); expected "
                                "distinct budgets")
    smallest = objectives.costs(objectives.space.smallest())
    for budget in budgets:
        if not budget.met(smallest):
            unit = {"params": f"{smallest[0] / 1e6:.3f}M params", "latency": f"{smallest[1]:.4g} ms",
                    "mes": f"MES {smallest[2]:.4g}"}[budget.kind]
            raise InvalidInputError(f"budget {budget.label} is unreachable: the smallest config of "
                                    f"{objectives.space.name!r} already has {unit}")
    return sorted(budgets, key=lambda b: (-b.value if b.kind != "mes" else b.value, b.label))


# -- evaluation through the store ------------------------------------------------------------------

class Evaluator:
    """Metrics of configs, each evaluated once: cached in memory and in the study.

    ``shared`` holds the scores that other studies of the storage already measured on the
    same supernet under the same evaluation protocol: a config found there is filed in this
    study with this study's costs (table, alphas), without evaluating it.
    """

    def __init__(self, objectives: Objectives, study, algorithm: str,
                 shared: Optional[dict[str, Scores]] = None, criterion: str = "top1", queue=None) -> None:
        """``queue``: a :class:`nas.workers.ScoreQueue`; batches (:meth:`many`) are then scored by every
        process serving it, this one included."""
        self.objectives, self.study, self.algorithm, self.criterion = objectives, study, algorithm, criterion
        self.queue = queue
        self.cache: dict[str, Metrics] = store.stored_metrics(study) if study is not None else {}
        self.shared = shared or {}
        self.evaluations = 0  # new evaluations made by this process
        self._prefix: Optional[SubnetConfig] = None  # a config to prepare before the next evaluation

    def share_prefix(self, config: SubnetConfig) -> None:
        """The next configs share leading stages with ``config``: the accuracy may reuse its prefix
        (prepared lazily, only if something is actually evaluated)."""
        self._prefix = config

    def __call__(self, config: SubnetConfig, record: bool = True) -> Metrics:
        """``record=False``: the caller files the trial itself (Optuna's ask/tell)."""
        metrics = self.cache.get(config.key)
        if metrics is None:
            scores = self.shared.get(config.key)
            if scores is not None:
                metrics = self.objectives.with_scores(config, scores)
            else:
                if self._prefix is not None:
                    self.objectives.prepare(self._prefix)
                    self._prefix = None
                metrics = self.objectives(config)
                self.evaluations += 1
            self.cache[config.key] = metrics
            if record and self.study is not None:
                store.record(self.study, self.objectives.space, config, metrics, self.algorithm, self.criterion)
        return metrics

    def many(self, configs: Sequence[SubnetConfig], record: bool = True) -> list[Metrics]:
        """The metrics of a batch of configs, in order. With a queue, the configs not known yet are scored
        by the processes serving it (the prefix shared by :meth:`share_prefix` travels with them), then
        filed as one process files them; without, one after the other here."""
        if self.queue is not None:
            new = list({c.key: c for c in configs if c.key not in self.cache and c.key not in self.shared}.values())
            if new:
                from nas.workers import prepared_score

                prefix, self._prefix = self._prefix, None
                scores = self.queue.run(new, prefix, lambda claim: prepared_score(self.objectives.accuracy, claim))
                self.evaluations += len(new)
                self.shared = {**self.shared, **{key: scores[key] for key in scores}}
        return [self(config, record) for config in configs]

    @property
    def distinct(self) -> int:
        """Distinct configs of this search (those of the study it resumed included)."""
        return len(self.cache)


# -- results ---------------------------------------------------------------------------------------

@dataclass
class SearchResult:
    algorithm: str
    budgets: list[Budget]
    selected: dict[Budget, tuple[SubnetConfig, Metrics]] = field(default_factory=dict)  # budget -> best
    trajectory: list[dict] = field(default_factory=list)
    evaluations: int = 0  # distinct configs of the search (stored ones included)
    seconds: float = 0.0
    measured: int = 0  # of which evaluated by this run (the others came from the store)
    written: list = field(default_factory=list)  # output files (nas.results.write_search_outputs)
    study: str = ""  # the study of the results store that holds its evaluations

    @property
    def name(self) -> str:
        """``ALGO-LABEL-DIGEST`` for one budget, ``ALGO-family-DIGEST`` for several, ``DIGEST`` naming the study
        (its arguments): names the search's output files, so two searches of one folder never share one."""
        return self._file_name(self.budgets[0].label if len(self.budgets) == 1 else "family")

    def config_name(self, budget: Budget) -> str:
        """``ALGO-LABEL-DIGEST``: the file name (without suffix) of the config selected at ``budget``."""
        return self._file_name(budget.label)

    def _file_name(self, part: str) -> str:
        digest = self.study.rsplit("-", 1)[-1] if self.study else ""  # the study's name ends in its digest
        return f"{self.algorithm}-{part}" + (f"-{digest}" if digest else "")


def _row(step: int, move: str, metrics: Metrics, utility: Optional[float]) -> dict:
    return {"step": step, "move": move, "accuracy": metrics.accuracy, "loss": metrics.loss, "kl": metrics.kl,
            "params": metrics.params, "latency_ms": metrics.latency_ms, "mes": metrics.mes,
            "utility": utility if utility is not None else float("nan"), "key": metrics.key}


# -- greedy slimming (fine-grained, v1-scale) -------------------------------------------------------

def _rank(drop: float, gain: float) -> tuple:
    """A move that costs nothing wins outright, the largest MES gain first (the biggest free
    stride); otherwise the least drop per MES gain."""
    return (0, -gain, drop) if drop <= 0 else (1, drop / gain, 0.0)


def greedy_search(space: SearchSpace, evaluate: Evaluator, budgets: Sequence[Budget],
                  kinds: Sequence[str] = MOVE_KINDS, start: Optional[SubnetConfig] = None,
                  progress: Optional[Callable[[str], None]] = None, criterion: str = "top1",
                  recheck: Optional[tuple[Evaluator, int]] = None) -> tuple[list[dict], dict]:
    """Slim from ``start`` (the largest config) one move at a time by least drop of ``criterion``
    per MES gain until every budget is met. Returns the trajectory and budget -> (config, metrics).

    ``recheck = (evaluator, k)``: the ``k`` best moves of a step are scored again by a second
    evaluator (another slice of images) and re-ranked by their mean drop over both before the
    step commits. Without it, the paper's plain algorithm.
    """
    state = start or space.largest()
    current = evaluate(state)
    trajectory = [_row(0, "start", current, None)]
    selected: dict[Budget, tuple[SubnetConfig, Metrics]] = {}
    pending = list(budgets)

    def record_crossings() -> None:
        for budget in list(pending):
            if budget.met(current):
                selected[budget] = (state, current)
                pending.remove(budget)

    record_crossings()
    step = 0
    while pending:
        step += 1
        candidates = space.moves(state, tuple(kinds))
        if not candidates:
            break
        costs = [evaluate.objectives.costs(config) for _, config in candidates]
        gains = [c[2] - current.mes for c in costs]
        # a move that does not raise MES cannot pay for a drop; score it only if nothing else is left
        useful = [i for i, gain in enumerate(gains) if gain > 0] or list(range(len(candidates)))
        evaluate.share_prefix(state)  # every move changes one stage: the ones before it are the state's
        scored = []
        for i, after in zip(useful, evaluate.many([candidates[i][1] for i in useful])):
            drop = current.score(criterion) - after.score(criterion)
            scored.append([_rank(drop, gains[i]), i, drop, after])
        scored.sort(key=lambda row: (row[0], row[1]))  # ties keep the first move in order
        if recheck is not None:
            second, k = recheck
            second.share_prefix(state)
            base, *again = second.many([state] + [candidates[row[1]][1] for row in scored[:k]])
            for row, after in zip(scored[:k], again):
                row[2] = (row[2] + base.score(criterion) - after.score(criterion)) / 2
                row[0] = _rank(row[2], gains[row[1]])
            scored[:k] = sorted(scored[:k], key=lambda row: (row[0], row[1]))
        _, i, drop, current = scored[0]
        move, state = candidates[i]
        utility = drop / gains[i] if gains[i] > 0 else math.inf
        trajectory.append(_row(step, str(move), current, utility))
        if progress:
            progress(f"step {step}: {move}  top-1 {current.accuracy:.2f}  params {current.params / 1e6:.3f}M  "
                     f"MES {current.mes:.2f}  ({evaluate.distinct} configs evaluated)")
        record_crossings()
    return trajectory, selected


# -- magnitude pruning of FFN hidden channels (v1-scale+prune) --------------------------------------

def hidden_channel_scores(supernet) -> dict[tuple[int, int], list[float]]:
    """Per supernet block (stage, index): the magnitude of each hidden channel of its FFN,
    ``mean |fc1 weight row| x |fc1 BN scale|``, in the supernet's (prefix) channel order."""
    scores = {}
    for s, stage in enumerate(supernet.stages):
        for b, block in enumerate(stage.blocks):
            fc1 = block.mlp.fc1
            magnitude = fc1.conv.weight.detach().abs().flatten(1).mean(dim=1) * fc1.bn.weight.detach().abs()
            scores[(s, b)] = magnitude.tolist()
    return scores


def prune_expansions(space: SearchSpace, config: SubnetConfig, scores: dict[tuple[int, int], list[float]],
                     budget: Budget, costs: Callable[[SubnetConfig], tuple]) -> SubnetConfig:
    """Shrink FFN expansions, least important hidden channels first, until ``budget`` is met."""
    while not budget.met(costs(config)):
        options = []
        for s, stage in enumerate(config.stages):
            for b, block in stage.kept:
                smaller = space.shrink_expansion(config, s, b)
                if smaller is None:
                    continue
                new_expansion = smaller.stages[s].blocks[b].expansion
                removed = scores[(s, b)][stage.width * new_expansion: stage.width * block.expansion]
                options.append((sum(removed) / len(removed), s, b, smaller))
        if not options:
            break  # every FFN at its smallest expansion: the budget needs depth/width moves
        config = min(options, key=lambda o: o[:3])[3]
    return config


# -- random search and NSGA-II ---------------------------------------------------------------------

def sample_within(space: SearchSpace, budget: Budget, rng: random.Random, costs: Callable,
                  max_tries: int = 100_000) -> SubnetConfig:
    for _ in range(max_tries):
        config = space.sample(rng)
        if budget.met(costs(config)):
            return config
    raise InvalidInputError(f"no random config of {space.name!r} met {budget.label} in {max_tries} draws; "
                            f"loosen the budget")


def best_per_budget(evaluated: Sequence[tuple[SubnetConfig, Metrics]], budgets: Sequence[Budget],
                    criterion: str = "top1") -> dict:
    selected = {}
    for budget in budgets:
        feasible = [(c, m) for c, m in evaluated if budget.met(m)]
        if feasible:  # the best by the criterion, then highest MES, then key: deterministic
            selected[budget] = max(feasible, key=lambda cm: (cm[1].score(criterion), cm[1].mes, cm[1].key))
    return selected


def random_search(space: SearchSpace, evaluate: Evaluator, budgets: Sequence[Budget], evaluations: int,
                  seed: int, progress=None, criterion: str = "top1") -> tuple[list[dict], dict]:
    rng = random.Random(seed)
    configs = [sample_within(space, budgets[0], rng, evaluate.objectives.costs) for _ in range(evaluations)]
    evaluated, trajectory = [], []
    for start in range(0, evaluations, 10):  # batches of 10: served by workers where there are some
        batch = configs[start:start + 10]
        for i, (config, metrics) in enumerate(zip(batch, evaluate.many(batch)), start=start):
            evaluated.append((config, metrics))
            trajectory.append(_row(i + 1, "sample", metrics, None))
        if progress:
            progress(f"{start + len(batch)}/{evaluations} random configs evaluated")
    return trajectory, best_per_budget(evaluated, budgets, criterion)


def sampler_search(space: SearchSpace, evaluate: Evaluator, budgets: Sequence[Budget], evaluations: int,
                   study, algorithm: str, seed: int = 0, progress=None,
                   criterion: str = "top1") -> tuple[list[dict], dict]:
    """NSGA-II or TPE in the study itself: its trials are the evaluations (ask/tell), resumable.

    The sampler maximises (criterion, MES) with the loosest budget as a constraint. Proposals come
    in rounds (:func:`round_size`), asked together and scored as one batch (by the workers of a
    queue, where there are some), then told in order: NSGA-II's round is the rest of its
    generation, which proposes exactly what one proposal at a time would; TPE's is ``TPE_ROUND``
    proposals (with the constant liar), which one at a time would not.
    """
    optuna = store._optuna()
    states = optuna.trial.TrialState
    loosest = budgets[0]
    distributions = store.distributions(space)

    def tell(proposals, duplicates, keys):
        """Score a round's proposals as one batch, then tell its duplicates and its proposals in order."""
        scored = evaluate.many([config for _, config in proposals], record=False)  # stored ones are not rescored
        for trial, config in duplicates:
            trial.set_user_attr("duplicate_of", config.key)
            study.tell(trial, state=states.PRUNED)
        for (trial, config), metrics in zip(proposals, scored):
            with warnings.catch_warnings():  # a reopened round's trial may have it already: same value
                warnings.filterwarnings("ignore", "The constraint value is ignored", UserWarning)
                trial.set_constraint("budget", _violation(loosest, metrics))
            for key, value in store.user_attrs(config, metrics, algorithm).items():
                trial.set_user_attr(key, value)
            study.tell(trial, [metrics.score(criterion), metrics.mes])
            keys.add(config.key)

    trials = study.get_trials(deepcopy=False)
    keys = {t.user_attrs["key"] for t in trials if t.state == states.COMPLETE}
    reopened = _open_round(study, space, trials, keys)  # a round an interrupted run left: carried on
    asked = len(study.get_trials(deepcopy=False, states=(states.COMPLETE, states.PRUNED, states.RUNNING)))
    while reopened or (len(keys) < evaluations and asked < DUPLICATE_LIMIT * evaluations):
        proposals, duplicates, first, asked_in_full = reopened or ([], [], asked, False)
        reopened, new = None, {config.key for _, config in proposals}
        room = min(round_size(study, algorithm), evaluations - len(keys))
        while not asked_in_full and len(proposals) < room and asked < DUPLICATE_LIMIT * evaluations:
            # a sampler seeded by the seed and the number of proposals so far: the proposals depend on the stored
            # trials alone, so a search resumed after a kill proposes what an uninterrupted one would
            study.sampler = optuna_sampler(algorithm, seed * 1_000_003 + asked)
            trial = study.ask(distributions)
            trial.set_user_attr("round", first)
            asked += 1
            config = store.decode(space, trial.params)
            if config.key in keys or config.key in new:  # proposed again: no new evaluation, kept out of the results
                duplicates.append((trial, config))
            else:
                proposals.append((trial, config))
                new.add(config.key)
        tell(proposals, duplicates, keys)
        if progress and proposals:
            progress(f"{len(keys)}/{evaluations} {algorithm} configs")
    evaluated, trajectory = [], []
    for i, trial in enumerate(t for t in study.get_trials(deepcopy=False) if store.trial_metrics(t)):
        metrics = store.trial_metrics(trial)
        evaluated.append((store.decode(space, trial.params), metrics))
        trajectory.append(_row(i + 1, algorithm, metrics, None))
    return trajectory, best_per_budget(evaluated, budgets, criterion)


def _open_round(study, space: SearchSpace, trials, keys: set):
    """The round an interrupted run left open (its trials still RUNNING), to be carried on as the
    uninterrupted run would: ``(proposals, duplicates, first, asked_in_full)``, or None. A round of
    which some trials were told had been asked in full (only the rest is told); one of which none
    was told goes on asking where it stopped. Its proposals are kept rather than asked again: asked
    again they could differ (NSGA-II spends random draws choosing a generation's parents at its
    first proposal, and the study caches them, so the second asking would not spend them). A trial
    stopped inside ``ask`` (some of its parameters missing) is failed and asked again."""
    states = store._optuna().trial.TrialState
    names = set(store.distributions(space))
    running = []
    for trial in sorted((t for t in trials if t.state == states.RUNNING), key=lambda t: t.number):
        if names <= set(trial.params):
            running.append(trial)
        else:  # the sampler was still choosing its parameters
            study.tell(trial.number, state=states.FAIL)
    if not running:
        return None
    first = running[0].user_attrs.get("round")
    if first is None:  # stopped right after the round's first proposal was asked
        first = len([t for t in trials if t.state in (states.COMPLETE, states.PRUNED)])
    told = any(t.state in (states.COMPLETE, states.PRUNED) and t.user_attrs.get("round") == first for t in trials)
    proposals, duplicates, new = [], [], set()
    for frozen in running:
        trial = store._optuna().trial.Trial(study, frozen._trial_id)
        if frozen.user_attrs.get("round") is None:
            trial.set_user_attr("round", first)
        config = store.decode(space, frozen.params)
        (duplicates if config.key in keys or config.key in new else proposals).append((trial, config))
        new.add(config.key)
    return proposals, duplicates, first, told


NSGA2_POPULATION = 20
TPE_ROUND = 10  # TPE's proposals per round (scored together; the constant liar keeps them apart)


def round_size(study, algorithm: str) -> int:
    """How many proposals the sampler makes before any is told: for NSGA-II the rest of the current
    generation (proposals within a generation depend only on the previous one's, so asking them
    together changes nothing), for TPE ``TPE_ROUND``."""
    if algorithm != "nsga2":
        return TPE_ROUND
    sampler = optuna_sampler(algorithm, 0)
    generations = [sampler.get_trial_generation(study, t) for t in study.get_trials(
        deepcopy=False, states=(store._optuna().trial.TrialState.COMPLETE,))]
    done = generations.count(max(generations)) if generations else 0
    return NSGA2_POPULATION - done if done < NSGA2_POPULATION else NSGA2_POPULATION


DUPLICATE_LIMIT = 20  # proposals per requested evaluation before a sampler that only repeats itself is stopped


def _violation(budget: Budget, metrics: Metrics) -> float:
    """Optuna's constraint value: <= 0 when the budget is met."""
    if budget.kind == "params":
        return (metrics.params - budget.value) / 1e6
    if budget.kind == "latency":
        return metrics.latency_ms - budget.value
    return budget.value - metrics.mes


def optuna_sampler(algorithm: str, seed: int):
    """NSGA-II (population 20) or multivariate TPE with the constant liar (a round's proposals are asked
    before any is told, and the liar keeps them apart); constraints go through ``Trial.set_constraint``."""
    optuna = store._optuna()
    if algorithm == "nsga2":
        return optuna.samplers.NSGAIISampler(seed=seed, population_size=NSGA2_POPULATION)
    return optuna.samplers.TPESampler(seed=seed, multivariate=True, constant_liar=True)  # Optuna 5's default too


# -- one search end to end -------------------------------------------------------------------------

def study_name(algorithm: str, arguments: dict) -> str:
    """What the search was, then a digest of all its arguments (same arguments, same study), e.g.
    ``fine-grained-family-kl-lat1-size0.5-3fa9c2d1e0`` or ``nsga2-params-0.33M-top1-lat1-size1-seed0-...``."""
    digest = hashlib.sha1(json.dumps(arguments, sort_keys=True, default=str).encode()).hexdigest()[:10]
    budgets = arguments.get("budgets") or []
    words = [algorithm, budgets[0] if len(budgets) == 1 else "family" if budgets else None, arguments.get("criterion"),
             f"lat{arguments['alpha_latency']:g}" if "alpha_latency" in arguments else None,
             f"size{arguments['alpha_size']:g}" if "alpha_size" in arguments else None,
             f"seed{arguments['seed']}" if "seed" in arguments else None, digest]
    return "-".join(str(word) for word in words if word is not None)


def metric_names(criterion: str) -> list[str]:
    """The study's two objectives as Optuna shows them: the criterion's score (maximised) and MES."""
    return [{"top1": "top1", "loss": "-loss", "kl": "-kl"}[criterion], "mes"]


def check_evaluations(evaluations: int) -> None:
    if evaluations < 1:
        raise InvalidInputError(f"--evaluations {evaluations}: expected a positive number")


def run_search(objectives: Objectives, budgets: Sequence[Budget], algorithm: str, storage: str,
               arguments: dict, evaluations: int = 100, seed: int = 0, supernet=None,
               progress=None, evaluation_id: Optional[dict] = None, criterion: str = "top1",
               recheck: Optional[tuple[Objectives, int, Optional[dict]]] = None, queue=None,
               recheck_queue=None) -> SearchResult:
    """Run (or resume) one search; ``arguments`` name the study (same arguments, same study).

    ``evaluation_id`` names what a config's scores depend on (the supernet's weights and the
    evaluation protocol): studies of the storage with the same one share their scores, so a
    search with other alphas, another table or another criterion re-measures nothing stored.
    ``recheck = (objectives, k, evaluation_id)``: the fine-grained step re-scores its ``k`` best
    moves on the objectives' (second) slice before committing; those scores are kept in the
    study ``NAME-recheck``.
    ``queue`` (:class:`nas.workers.ScoreQueue`): batches of configs are scored by every process serving
    it (the fine-grained and v1-scale steps' moves, random samples, NSGA-II's and TPE's rounds); the
    recheck slice's configs by the processes serving ``recheck_queue``. One driver per study: a second
    one is refused while the first lives.
    """
    if algorithm not in ALGORITHMS:
        raise InvalidInputError(f"unknown algorithm {algorithm!r}; expected one of {', '.join(ALGORITHMS)}")
    check_evaluations(evaluations)
    check_criterion(criterion)
    budgets = check_budgets(objectives, budgets)
    space = objectives.space
    started = time.perf_counter()
    evaluation = _jsonable(evaluation_id)
    if algorithm == "tpe":  # TPE in rounds (2026-12-03): not the studies of the one-proposal-at-a-time TPE before
        arguments = {**arguments, "tpe_round": TPE_ROUND}
    study = store.open_study(storage, study_name(algorithm, arguments), metric_names(criterion),
                             metadata={"algorithm": algorithm, "space": space.name,
                                       "budgets": [b.label for b in budgets], "criterion": criterion,
                                       "arguments": json.loads(json.dumps(arguments, default=str)),
                                       **({"evaluation": evaluation} if evaluation else {})})
    earlier = store.elapsed_seconds(study)  # a resumed search's wall time counts its earlier runs
    shared = store.shared_scores(storage, evaluation, exclude=study.study_name) if evaluation else {}
    evaluate = Evaluator(objectives, study, algorithm, shared, criterion, queue)
    second = None
    if recheck is not None and recheck[1] > 0 and algorithm in ("fine-grained", "v1-scale"):
        # the recheck slice's scores: a study of their own (resumable, shared like any other)
        objectives_2, k, evaluation_2 = recheck
        evaluation_2 = _jsonable(evaluation_2)
        study_2 = store.open_study(storage, f"{study.study_name}-recheck", metric_names(criterion),
                                   metadata={"algorithm": algorithm, "space": space.name, "recheck_of": study.study_name,
                                             **({"evaluation": evaluation_2} if evaluation_2 else {})})
        shared_2 = store.shared_scores(storage, evaluation_2, exclude=study_2.study_name) if evaluation_2 else {}
        second = (Evaluator(objectives_2, study_2, algorithm, shared_2, criterion, recheck_queue), k)
    if queue is not None:
        from nas.workers import DriverLease

        lease = DriverLease(study, queue.stale_after)
    else:
        lease = contextlib.nullcontext()
    with lease:
        if algorithm == "fine-grained":
            trajectory, selected = greedy_search(space, evaluate, budgets, MOVE_KINDS, progress=progress,
                                                 criterion=criterion, recheck=second)
        elif algorithm == "v1-scale":
            trajectory, selected = greedy_search(space, evaluate, budgets, V1_MOVES, progress=progress,
                                                 criterion=criterion, recheck=second)
        elif algorithm == "v1-scale+prune":
            trajectory, selected = _v1_scale_prune(space, evaluate, budgets, supernet, progress, criterion)
        elif algorithm == "random":
            trajectory, selected = random_search(space, evaluate, budgets, evaluations, seed, progress, criterion)
        else:
            trajectory, selected = sampler_search(space, evaluate, budgets, evaluations, study, algorithm, seed,
                                                  progress, criterion)
    result = SearchResult(algorithm, list(budgets), selected, trajectory, evaluate.distinct,
                          earlier + time.perf_counter() - started, evaluate.evaluations, study=study.study_name)
    if second is not None:
        result.measured += second[0].evaluations
    return result


def _jsonable(data: Optional[dict]):
    return json.loads(json.dumps(data, sort_keys=True, default=str)) if data is not None else None


def _v1_scale_prune(space, evaluate, budgets, supernet, progress, criterion):
    if supernet is None:
        raise InvalidInputError("v1-scale+prune needs the supernet's weights (magnitude pruning)")
    scores = hidden_channel_scores(supernet)
    loose = [b.loosened(PRUNE_SLACK) for b in budgets]
    trajectory, reached = greedy_search(space, evaluate, loose, V1_MOVES, progress=progress, criterion=criterion)
    selected = {}
    for budget, loose_budget in zip(budgets, loose):
        if loose_budget not in reached:
            continue
        config = reached[loose_budget][0]
        pruned = prune_expansions(space, config, scores, budget, evaluate.objectives.costs)
        if not budget.met(evaluate.objectives.costs(pruned)):  # pruning alone cannot get there
            _, more = greedy_search(space, evaluate, [budget], V1_MOVES, start=pruned, criterion=criterion)
            pruned = more[budget][0] if budget in more else pruned
        metrics = evaluate(pruned)
        trajectory.append(_row(len(trajectory), f"prune to {budget.label}", metrics, None))
        selected[budget] = (pruned, metrics)
    return trajectory, selected
