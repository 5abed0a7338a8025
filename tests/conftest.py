import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
# One intra-op thread per test process (subprocesses inherit it): on a shared 2-core machine two
# spinning OpenMP threads per process slow small ops down by orders of magnitude.
os.environ.setdefault("OMP_NUM_THREADS", "1")
import torch  # noqa: E402

torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))
from search_spaces.runtime import configure_process  # noqa: E402

configure_process()  # the settings every program of the project runs under


def run_nas(*args: str, cwd=None, timeout=600, env=None) -> subprocess.CompletedProcess:
    """The real console entry point in a subprocess (as a user types it)."""
    full_env = dict(os.environ, **(env or {}))
    return subprocess.run([sys.executable, "-m", "nas.cli", *map(str, args)], cwd=cwd or ROOT,
                          capture_output=True, text=True, timeout=timeout, env=full_env)


def nas_main(*args: str) -> subprocess.CompletedProcess:
    """The command line in this process (no interpreter start-up): same parser, handlers and
    exit codes as the console script, for the many bad-input cases."""
    import contextlib
    import io

    from nas.cli import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main([str(a) for a in args])
        except SystemExit as exit_:  # argparse's own errors
            code = exit_.code
    return subprocess.CompletedProcess(["nas", *map(str, args)], code, out.getvalue(), err.getvalue())


def parse_nas_command(command: str):
    """A command line the project printed, read by the real parser: its arguments. A flag that was
    renamed or a value the parser refuses fails the test."""
    import shlex

    from nas.cli import _join_negative_values, build_parser

    words = shlex.split(command)
    assert words[:1] == ["nas"], command
    try:
        return build_parser().parse_args(_join_negative_values(words[1:]))
    except SystemExit:
        pytest.fail(f"the printed command does not parse: {command}")


@pytest.fixture
def nas_cli():
    return run_nas


SMALL_RUN = {
    "space": "efficientformerv2-tiny@32", "max_train_images": 640, "val_split": 256, "epochs": 1,
    "batch_size": 32, "checkpoint_every_steps": 1000, "eval_images": 64, "warmup_epochs": 0.1,
}


def _built_once(tmp_path_factory, worker_id: str, name: str, build) -> Path:
    """A session artifact (a folder ``name`` that ``build`` fills, read-only for the tests): under
    pytest-xdist built by the first worker that needs it, under a file lock, and shared by the others."""
    if worker_id == "master":  # no xdist: this session's own temporary folder
        path = tmp_path_factory.mktemp(name)
        build(path)
        return path
    from filelock import FileLock

    root = tmp_path_factory.getbasetemp().parent  # this session's, shared by its workers
    path, done = root / name, root / f"{name}.done"
    with FileLock(str(root / f"{name}.lock")):
        if not done.exists():
            build(path)
            done.touch()
    return path


@pytest.fixture(scope="session")
def tiny_supernet_run(tmp_path_factory, worker_id):
    """A real (briefly) trained supernet of the tiny space at 32 px, on real Fashion-MNIST images."""
    from supernet.recipe import load_recipe
    from supernet.train import train_supernet

    def build(folder):
        train_supernet(load_recipe("fashion-mnist-tiny").replace(**SMALL_RUN), folder / "run", progress=False)

    return _built_once(tmp_path_factory, worker_id, "supernet", build) / "run"


@pytest.fixture(scope="session")
def tiny_lut(tmp_path_factory, worker_id):
    """A real torch-cpu latency table of the tiny space at 32 px (few runs: fast, still measured)."""
    from latency_lut import Backend, Protocol, build_table

    def build(folder):
        folder.mkdir(parents=True, exist_ok=True)
        build_table("efficientformerv2-tiny@32", Backend("torch-cpu", threads=1), folder / "tiny32.parquet",
                    Protocol(runs=3, warmup=1, rounds=1), progress=False)

    return _built_once(tmp_path_factory, worker_id, "lut", build) / "tiny32.parquet"


QUICKSTART_ARGS = ("--eval-images", "64", "--bn-batches", "1", "--evaluations", "8", "--lut-runs", "3",
                   "--no-progress")


@pytest.fixture(scope="session")
def quickstart_run(tmp_path_factory):
    """`nas quickstart` end to end at test size (tiny space at 32 px, few images), as a user runs it."""
    from test_train import small_recipe

    folder = tmp_path_factory.mktemp("quickstart")
    out, recipe = folder / "qs", small_recipe(folder, epochs=1)
    result = run_nas("quickstart", "--out", out, "--recipe", recipe, *QUICKSTART_ARGS)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return out, recipe, result


MAC = {"compute_units": "CPU_AND_NE", "device": "Mac14,2 Apple M2", "os": "macOS 14.5", "coremltools": "9.0"}


def coreml_results(manifest, out, latency=lambda entry: 0.05, context=MAC, rounds=2, runs=200):
    """Results of ``coreml_measure.py`` for an export, made by the script's own functions (hash check,
    rounds, samples, summary) with recorded timings in place of Core ML (no Mac here): each call
    takes ``latency(entry)`` ms inside Core ML and 0.01 ms more on the wall clock."""
    from latency_lut import coreml_measure as script

    entries = script.read_manifest(manifest)
    hashes = script.verify_packages(manifest.parent, entries)
    settings = script.Settings(rounds=rounds, runs=runs, warmup=1)
    samples, failures = (out.with_name(f"{out.stem}.{kind}.csv") for kind in ("samples", "failures"))
    for path in (out, samples, failures):
        path.unlink(missing_ok=True)

    def open_package(package, entry):
        return script.Predictor(lambda: (latency(entry), latency(entry) + 0.01), "NE 0.90 GPU 0.00 CPU 0.10")

    script.measure(entries, manifest.parent, open_package, settings, samples, failures, log=lambda line: None)
    script.write_results(out, script.summarize(entries, hashes, samples, settings, context))
    return out


@pytest.fixture(scope="session")
def postgres_url():
    """A real PostgreSQL server (Debian's ``postgresql``), started in a temporary folder on a local
    socket for the session (as the ``postgres`` user when the tests run as root). Skipped where the
    server or the driver (``pip install .[postgres]``) is missing; ``.ci/run`` installs both."""
    import glob
    import shutil
    import tempfile

    binaries = sorted(glob.glob("/usr/lib/postgresql/*/bin"))
    folder = binaries[-1] if binaries else os.path.dirname(shutil.which("pg_ctl") or "")
    if not folder or not os.path.exists(os.path.join(folder, "initdb")):
        pytest.skip("needs PostgreSQL's server (apt-get install postgresql)")
    pytest.importorskip("psycopg", reason="needs the PostgreSQL driver (pip install .[postgres])")
    base = tempfile.mkdtemp(prefix="nas-pg-")
    as_user = []
    if os.geteuid() == 0:
        import pwd

        user = pwd.getpwnam("postgres")
        os.chown(base, user.pw_uid, user.pw_gid)
        as_user = ["runuser", "-u", "postgres", "--"]
    data, port = os.path.join(base, "data"), "5439"

    def run(*command):
        subprocess.run([*as_user, *command], check=True, capture_output=True, text=True, timeout=120)

    run(os.path.join(folder, "initdb"), "-D", data, "-A", "trust", "-U", "postgres")
    run(os.path.join(folder, "pg_ctl"), "-D", data, "-w", "-l", os.path.join(base, "log"), "-o",
        f"-k {base} -p {port} -c listen_addresses=''", "start")
    try:
        run(os.path.join(folder, "createdb"), "-h", base, "-p", port, "-U", "postgres", "nas")
        yield f"postgresql://postgres@/nas?host={base}&port={port}"
    finally:
        subprocess.run([*as_user, os.path.join(folder, "pg_ctl"), "-D", data, "-m", "immediate", "stop"],
                       capture_output=True, timeout=60)
        shutil.rmtree(base, ignore_errors=True)
