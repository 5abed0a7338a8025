"""Many processes, one search: the configs to score go through a queue in the results store.

A search with workers (``nas search ... --storage URL --workers``) does not score its configs
one after the other. Each batch (a fine-grained step's moves, a random search's samples) goes
into the **score queue** of its evaluation: a study of the storage named ``scores-DIGEST`` (the
digest of what scores depend on: supernet weights, protocol, data), one Optuna trial per config
in state WAITING. Any number of ``nas search-worker --storage URL`` processes, on this machine
or others, and the driver itself take them one at a time (Optuna's storages make WAITING ->
RUNNING atomic: one taker wins), score them, and complete them with the scores as attributes.

A taker stamps a heartbeat on its trial while it works. A RUNNING trial whose heartbeat is
older than ``stale_after`` seconds (its worker was killed) is failed and queued again by
Optuna's ``RetryHeartbeatStaleTrialCallback``, so a killed worker costs at most the config it
held. The driver files the scores in the search's own study exactly as one process does, so
the search's result does not depend on the number of workers.

Storages (``nas.store.get_storage``): SQLite serves one process only (refused here);
``journal:///PATH`` (Optuna's JournalStorage on a file) serves several processes on one
machine; ``postgresql://...`` several machines.
"""
from __future__ import annotations

import hashlib
import json
import os
import platform
import threading
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional, Sequence

from search_spaces import InvalidInputError, SubnetConfig, get_space
from supernet.protocol import Scores

from nas import store

QUEUE_PREFIX = "scores-"
HEARTBEAT = "heartbeat"  # trial system attribute: time.time() of the taker's last sign of life
MAX_RETRY = 3
DEFAULT_STALE_AFTER = 60.0  # seconds (nas search --stale-after)
TAKER = f"{platform.node()}:{os.getpid()}"  # who scores a trial (its system attribute "taker"): host:pid


def queue_name(evaluation_id: dict) -> str:
    """The score queue of an evaluation: ``scores-`` and a digest of what the scores depend on."""
    return QUEUE_PREFIX + hashlib.sha1(json.dumps(evaluation_id, sort_keys=True, default=str).encode()).hexdigest()[:10]


def check_shared_storage(storage: str) -> None:
    """Workers need a storage several processes can write at once; SQLite is refused."""
    if storage.startswith("sqlite"):
        raise InvalidInputError(f"--storage {storage!r}: SQLite serves one process, so a search with workers "
                                "cannot use it; expected journal:///PATH (Optuna's JournalStorage: processes on "
                                "one machine) or postgresql://USER@HOST/DB (several machines)")


@dataclass(frozen=True)
class Claim:
    """A queued config taken by this process: its trial, the config and the config whose prefix the
    taker may reuse (the step's state)."""

    trial_id: int
    config: SubnetConfig
    prefix: Optional[SubnetConfig]


class ScoreQueue:
    """The score queue of one evaluation in one storage (see the module docstring)."""

    def __init__(self, storage: str, name: str, opened=None, heartbeat: float = 5.0) -> None:
        """``opened``: the storage already opened (one JournalStorage replays its file once, not per queue).
        Seconds of silence before a taker's config is queued again: the queue's ``stale_after``, set by
        the driver (every process judges and beats by the same one)."""
        import optuna

        self.optuna, self.storage_url, self.name = optuna, storage, name
        self.storage = opened if opened is not None else store.get_storage(storage)
        self.study = optuna.load_study(study_name=name, storage=self.storage)
        self.study_id = self.storage.get_study_id_from_name(name)
        attrs = self.study.user_attrs
        self.stale_after = float(attrs.get("stale_after", DEFAULT_STALE_AFTER))
        self.heartbeat = min(heartbeat, self.stale_after / 3)  # beats well inside it
        self.space = get_space(attrs["space"])
        self.evaluation = attrs["evaluation"]
        self.supernet = attrs["supernet"]

    @classmethod
    def create(cls, storage: str, evaluation_id: dict, space: str, supernet: Path,
               stale_after: float = DEFAULT_STALE_AFTER) -> "ScoreQueue":
        """The queue of ``evaluation_id`` (created if new); ``supernet``: the driver's run folder;
        ``stale_after``: this driver's, for every process serving the queue."""
        name = queue_name(evaluation_id)
        evaluation = json.loads(json.dumps(evaluation_id, default=str))
        study = store.open_study(storage, name, ["top1"], directions=("maximize",), metadata={
            "space": space, "evaluation": evaluation, "supernet": str(Path(supernet).resolve()),
            "kind": store.QUEUE_KIND})  # "kind" last: a queue is found only once it is complete
        if study.user_attrs.get("evaluation") != evaluation:
            raise InvalidInputError(f"study {name!r} of {storage!r} is not this evaluation's score queue")
        if study.user_attrs.get("stale_after") != stale_after:
            study.set_user_attr("stale_after", stale_after)
        return cls(storage, name, opened=study._storage)

    @staticmethod
    def names(opened) -> list[str]:
        """The names of the complete score queues of an opened storage."""
        return [s.study_name for s in opened.get_all_studies() if s.study_name.startswith(QUEUE_PREFIX)
                and s.user_attrs.get("kind") == store.QUEUE_KIND]

    @classmethod
    def find(cls, storage: str, name: Optional[str] = None) -> list["ScoreQueue"]:
        """The score queues of a storage (or the one named); a storage without one is an error."""
        try:
            opened = store.get_storage(storage)
            names = cls.names(opened)
        except Exception as error:  # bad URL, missing driver, unreachable server
            raise InvalidInputError(f"cannot open the results storage {storage!r}: {type(error).__name__}: "
                                    f"{str(error).splitlines()[0][:200]}") from None
        if name is not None:
            if name not in names:
                raise InvalidInputError(f"storage {storage!r} has no score queue {name!r}; it has "
                                        f"{', '.join(names) or 'none'} (start the search with --workers first)")
            names = [name]
        if not names:
            raise InvalidInputError(f"storage {storage!r} holds no score queue; expected the storage of a search "
                                    "started with --workers (nas search ... --storage URL --workers)")
        return [cls(storage, n, opened=opened) for n in names]

    # -- trials --------------------------------------------------------------------------------------

    def _trials(self, states=None):
        return self.study.get_trials(deepcopy=False, states=states)

    def _trial_id(self, number: int) -> int:
        return self.storage.get_trial_id_from_study_id_trial_number(self.study_id, number)

    def submit(self, configs: Sequence[SubnetConfig], prefix: Optional[SubnetConfig] = None) -> None:
        """Queue the configs not yet queued, scored or being scored."""
        state = self.optuna.trial.TrialState
        known = {t.user_attrs.get("key") for t in self._trials((state.WAITING, state.RUNNING, state.COMPLETE))}
        for config in configs:
            if config.key in known:
                continue
            known.add(config.key)
            self.study.add_trial(self.optuna.trial.create_trial(state=state.WAITING, user_attrs={
                "key": config.key, "config": config.key, "prefix": prefix.key if prefix is not None else ""}))

    def claim(self) -> Optional[Claim]:
        """Take one WAITING config (None if there is none); the heartbeat starts now."""
        from optuna.exceptions import UpdateFinishedTrialError

        state = self.optuna.trial.TrialState
        for trial in self._trials((state.WAITING,)):
            trial_id = self._trial_id(trial.number)
            try:
                if not self.storage.set_trial_state_values(trial_id, state.RUNNING):
                    continue  # another process took it first
            except UpdateFinishedTrialError:
                continue
            self.storage.set_trial_system_attr(trial_id, HEARTBEAT, time.time())
            self.storage.set_trial_system_attr(trial_id, "taker", TAKER)
            prefix = trial.user_attrs.get("prefix")
            return Claim(trial_id, SubnetConfig.from_key(self.space.name, trial.user_attrs["config"]),
                         SubnetConfig.from_key(self.space.name, prefix) if prefix else None)
        return None

    def score(self, claim: Claim, scorer: Callable[[Claim], Scores]) -> Scores:
        """Score a claimed config with a heartbeat beating, then complete its trial with the scores."""
        stop = threading.Event()

        def beat() -> None:
            while not stop.wait(self.heartbeat):
                self.storage.set_trial_system_attr(claim.trial_id, HEARTBEAT, time.time())

        beating = threading.Thread(target=beat, daemon=True)
        beating.start()
        try:
            scores = scorer(claim)
        finally:
            stop.set()
            beating.join()
        for key, value in (("top1", scores.top1), ("loss", scores.loss), ("kl", scores.kl),
                           ("images", scores.images)):
            self.storage.set_trial_user_attr(claim.trial_id, key, value)
        self.storage.set_trial_state_values(claim.trial_id, self.optuna.trial.TrialState.COMPLETE, [scores.top1])
        return scores

    def fail_stale(self) -> int:
        """Fail the RUNNING trials whose taker went silent and queue each again (at most MAX_RETRY times)."""
        from optuna.exceptions import UpdateFinishedTrialError
        from optuna.storages import RetryHeartbeatStaleTrialCallback

        state = self.optuna.trial.TrialState
        now, failed = time.time(), 0
        for trial in self._trials((state.RUNNING,)):
            last = trial.system_attrs.get(HEARTBEAT) or (trial.datetime_start.timestamp() if trial.datetime_start
                                                          else now)
            if now - last <= self.stale_after:
                continue
            trial_id = self._trial_id(trial.number)
            try:
                self.storage.set_trial_state_values(trial_id, state.FAIL)
            except UpdateFinishedTrialError:
                continue  # completed meanwhile, or failed by another process
            with warnings.catch_warnings():  # experimental in Optuna since 2.8, and stable in use
                warnings.simplefilter("ignore", self.optuna.exceptions.ExperimentalWarning)
                retry = RetryHeartbeatStaleTrialCallback(max_retry=MAX_RETRY)
            retry(self.study, self.storage.get_trial(trial_id))
            failed += 1
        return failed

    def scores(self, keys: Sequence[str]) -> dict[str, Scores]:
        """The scores of those of ``keys`` already scored."""
        wanted, result = set(keys), {}
        for trial in self._trials((self.optuna.trial.TrialState.COMPLETE,)):
            attrs = trial.user_attrs
            if attrs.get("key") in wanted and "top1" in attrs:
                result[attrs["key"]] = Scores(attrs["top1"], attrs["loss"], attrs["kl"], attrs["images"])
        return result

    def gave_up(self, keys: Sequence[str]) -> list[str]:
        """Those of ``keys`` failed MAX_RETRY + 1 times: no process can score them."""
        state = self.optuna.trial.TrialState
        failures: dict[str, int] = {}
        for trial in self._trials((state.FAIL,)):
            failures[trial.user_attrs.get("key")] = failures.get(trial.user_attrs.get("key"), 0) + 1
        open_keys = {t.user_attrs.get("key") for t in self._trials((state.WAITING, state.RUNNING))}
        return [k for k in keys if failures.get(k, 0) > MAX_RETRY and k not in open_keys]

    # -- the driver's side ------------------------------------------------------------------------------

    def run(self, configs: Sequence[SubnetConfig], prefix: Optional[SubnetConfig], scorer: Callable[[Claim], Scores],
            poll: float = 0.2) -> dict[str, Scores]:
        """Queue ``configs``, score queued configs here too, and wait until every one of them is scored."""
        keys = [c.key for c in configs]
        self.submit(configs, prefix)
        while True:
            claim = self.claim()
            if claim is not None:
                self.score(claim, scorer)
                continue
            done = self.scores(keys)
            if len(done) == len(set(keys)):
                return done
            lost = self.gave_up(keys)
            if lost:
                raise InvalidInputError(f"config {lost[0]} failed to be scored {MAX_RETRY + 1} times (workers were "
                                        "killed, or it cannot be scored); expected workers that finish their configs")
            self.fail_stale()
            time.sleep(poll)


def run_worker(storage: str, queue: Optional[str] = None, supernet: Optional[Path] = None,
               data_dir: Optional[str] = None, idle_exit: float = 60.0, poll: float = 0.5,
               rescan: float = 5.0, log: Callable[[str], None] = print) -> int:
    """Score queued configs of ``storage``'s score queues (or the one named ``queue``) until none has come
    for ``idle_exit`` seconds (0: forever); queues created meanwhile (a search's recheck slice, another
    search) are found every ``rescan`` seconds, and one this worker cannot serve (its supernet is not
    here) is skipped with a message. ``supernet``: this machine's copy of the driver's supernet run
    (default: the path the driver recorded); its weights must be the driver's. Returns how many configs
    it scored."""
    found = ScoreQueue.find(storage, queue)
    queues = {q.name: q for q in found}
    scorers = _Scorers(supernet, data_dir)
    for q in found:
        scorers.of(q)  # a wrong supernet is refused before any work
    opened, skipped = found[0].storage, set()
    scored, idle_since, scanned = 0, time.monotonic(), time.monotonic()
    log(f"worker: {len(queues)} score queue(s) in {storage}")
    while True:
        worked = False
        for q in list(queues.values()):
            claim = q.claim()
            if claim is None:
                q.fail_stale()
                continue
            q.score(claim, lambda c, accuracy=scorers.of(q): prepared_score(accuracy, c))
            scored, worked = scored + 1, True
        if queue is None and time.monotonic() - scanned > rescan:
            for name in ScoreQueue.names(opened):
                if name in queues or name in skipped:
                    continue
                q = ScoreQueue(storage, name, opened=opened)
                try:
                    scorers.of(q)
                except InvalidInputError as error:
                    skipped.add(name)
                    log(f"worker: skipping score queue {name}: {error}")
                    continue
                queues[name] = q
                log(f"worker: new score queue {name}")
            scanned = time.monotonic()
        if worked:
            idle_since = time.monotonic()
        elif idle_exit and time.monotonic() - idle_since > idle_exit:
            log(f"worker: no work for {idle_exit:.0f} s; {scored} configs scored")
            return scored
        else:
            time.sleep(poll)


class _Scorers:
    """A worker's scorer per queue; the queues of one supernet share its loaded weights."""

    def __init__(self, supernet: Optional[Path], data_dir: Optional[str]) -> None:
        self.supernet, self.data_dir = supernet, data_dir
        self.scorers: dict = {}
        self.loaded: dict = {}

    def of(self, q: ScoreQueue):
        if q.name in self.scorers:
            return self.scorers[q.name]
        from nas.objectives import SupernetAccuracy
        from search_spaces.io import file_digest
        from supernet.checkpoint import CHECKPOINT, load_supernet, scoring_device
        from supernet.protocol import EvalProtocol

        run = Path(self.supernet) if self.supernet is not None else Path(q.supernet)
        checkpoint = run / CHECKPOINT if run.is_dir() else run
        if not checkpoint.is_file():
            raise InvalidInputError(f"no supernet checkpoint at {str(checkpoint)!r} for queue {q.name!r}; expected "
                                    "the driver's supernet run on this machine (--supernet RUN)")
        digest = file_digest(checkpoint)
        if digest != q.evaluation["supernet_sha1"]:
            raise InvalidInputError(f"the supernet {str(checkpoint)!r} (SHA-1 {digest[:12]}...) is not the one the "
                                    f"search scores with ({q.evaluation['supernet_sha1'][:12]}...); expected the "
                                    "driver's checkpoint, copied unchanged")
        if digest not in self.loaded:
            self.loaded[digest] = load_supernet(checkpoint.parent, scoring_device())
        protocol = EvalProtocol(**q.evaluation["protocol"])
        self.scorers[q.name] = SupernetAccuracy(checkpoint.parent, protocol, loaded=self.loaded[digest],
                                                data_dir=self.data_dir or q.evaluation.get("data_dir"))
        return self.scorers[q.name]


def prepared_score(accuracy, claim: Claim) -> Scores:
    """A claimed config's scores, reusing its prefix (the step's state) where the accuracy can: the
    prefix is computed once for all the configs of a step this process takes (``prepare`` does
    nothing for the config already prepared)."""
    if claim.prefix is not None and hasattr(accuracy, "prepare"):
        accuracy.prepare(claim.prefix)
    return accuracy(claim.config)


class DriverLease:
    """One driver per search study: while a driver runs, its lease (a study attribute) is renewed every
    few seconds; a second driver finding a lease renewed within ``stale_after`` seconds is refused."""

    ATTR = "driver"

    def __init__(self, study, stale_after: float = DEFAULT_STALE_AFTER, renew: float = 5.0) -> None:
        import uuid

        self.study, self.stale_after, self.renew = study, stale_after, min(renew, stale_after / 3)
        self.me = {"id": uuid.uuid4().hex, "host": platform.node(), "pid": os.getpid()}
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None

    def _stamp(self, active: bool = True) -> None:
        self.study.set_user_attr(self.ATTR, {**self.me, "beat": time.time(), "active": active})

    def __enter__(self) -> "DriverLease":
        held = self.study.user_attrs.get(self.ATTR)
        if held and held.get("active") and held.get("id") != self.me["id"] \
                and time.time() - held.get("beat", 0) <= self.stale_after:
            raise InvalidInputError(f"study {self.study.study_name!r} is driven by another nas search (host "
                                    f"{held.get('host')}, pid {held.get('pid')}, seen "
                                    f"{time.time() - held['beat']:.0f} s ago); expected one driver per search: start "
                                    "workers with nas search-worker instead")
        self._stamp()

        def renew() -> None:
            while not self._stop.wait(self.renew):
                self._stamp()

        self._thread = threading.Thread(target=renew, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self._stamp(active=False)
