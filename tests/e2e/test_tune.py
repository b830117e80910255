"""`vae tune`: an Optuna study of ordinary run folders, on SQLite and PostgreSQL, and its faults."""

from __future__ import annotations

import json
import math
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import optuna  # a hard dependency: a broken install must fail here, not skip
import pytest
from conftest import metrics_without_timing, run_vae

from vae_cli.commands.trials import TrialReporter
from vae_cli.errors import TrainingPruned
from vae_cli.training.events import EpochEnded, EpochMetrics

TINY_SWEEP = """
[data]
limit = 256
[train]
epochs = {epochs}
batch_size = 64
device = "cpu"
[search]
lr = {{ low = 1e-4, high = 3e-3, log = true }}
hidden_dim = {{ low = 32, high = 96, step = 32 }}
latent_dim = {{ choices = [2, 4] }}
"""


def write_sweep(folder: Path, name: str = "sweep", epochs: int = 2, extra: str = "") -> Path:
    path = folder / f"{name}.toml"
    path.write_text(TINY_SWEEP.format(epochs=epochs) + extra)
    return path


def tune_args(config: Path, runs: Path, data_dir: Path, *extra: object) -> tuple:
    return ("tune", "--config", config, "--runs-dir", runs, "--data-dir", data_dir, *extra)


def load_study(runs: Path, name: str = "sweep") -> optuna.Study:
    return optuna.load_study(study_name=name, storage=f"sqlite:///{runs / name / 'study.db'}")


def best_validation_loss(run: Path) -> float:
    return min(json.loads(line)["val_loss"] for line in (run / "metrics.jsonl").open())


def test_a_sqlite_study_of_run_folders(tmp_path: Path, data_dir: Path) -> None:
    config, runs = write_sweep(tmp_path), tmp_path / "runs"
    result = run_vae(*tune_args(config, runs, data_dir, "--trials", 3, "--seed", 1))
    assert result.code == 0, result.stderr
    study = load_study(runs)
    trials = study.get_trials()
    assert [t.state.name for t in trials] == ["COMPLETE"] * 3
    for trial in trials:
        run = runs / "sweep" / f"trial-{trial.number:04d}"
        assert trial.user_attrs["run_dir"] == str(run.resolve())
        assert trial.value == best_validation_loss(run)  # what best.pt is chosen by
        assert 1e-4 <= trial.params["lr"] <= 3e-3 and trial.params["hidden_dim"] in (32, 64, 96)
        saved = json.loads((run / "status.json").read_text())
        assert saved["status"] == "finished" and trial.user_attrs["epochs"] == 2
    for plot in ("optimization_history.png", "param_importances.png"):
        assert (runs / "sweep" / plot).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    best = min(trials, key=lambda t: t.value)
    assert f"vae train --config {runs.resolve() / 'sweep'}/trial-{best.number:04d}" in (
        result.stdout.replace("\n", "")
    )
    # A second invocation adds to the same study; --summary adds nothing.
    assert run_vae(*tune_args(config, runs, data_dir, "--trials", 1, "--pruner", "none")).code == 0
    summary = run_vae(*tune_args(config, runs, data_dir, "--summary"))
    assert summary.code == 0, summary.stderr
    assert "4 complete" in summary.stdout and "best trials" in summary.stdout
    assert len(load_study(runs).trials) == 4
    assert sorted(p.name for p in (runs / "sweep").glob("trial-*")) == [
        f"trial-{n:04d}" for n in range(4)
    ]


def test_each_epoch_of_each_trial_is_a_line_off_a_terminal(tmp_path: Path, data_dir: Path) -> None:
    config, runs = write_sweep(tmp_path), tmp_path / "runs"
    # A seeded sampler and no pruner: every trial runs both epochs, and the draws are known.
    fixed = ("--trials", 2, "--pruner", "none", "--seed", 1)
    result = run_vae(*tune_args(config, runs, data_dir, *fixed))
    assert result.code == 0, result.stderr
    lines = result.stdout.splitlines()
    for trial in (0, 1):
        epochs = [line for line in lines if line.startswith(f"trial {trial}  epoch")]
        assert [line.split()[3] for line in epochs] == ["1/2", "2/2"], lines
    stacked = run_vae(*tune_args(config, runs, data_dir, *fixed, "--parallel", 2))
    assert stacked.code == 0, stacked.stderr
    # Trials 2 and 3 draw different sizes: two stacks of one, each named as a lone trial is.
    lines = stacked.stdout.splitlines()
    for trial in (2, 3):
        epochs = [line for line in lines if line.startswith(f"trial {trial}  epoch")]
        assert [line.split()[3] for line in epochs] == ["1/2", "2/2"], lines


def test_a_trial_config_reproduces_the_trial(tmp_path: Path, data_dir: Path) -> None:
    config, runs = write_sweep(tmp_path), tmp_path / "runs"
    assert run_vae(*tune_args(config, runs, data_dir, "--trials", 1)).code == 0
    trial = runs / "sweep/trial-0000"
    result = run_vae(
        "train", "--config", trial / "config.toml", "--runs-dir", tmp_path, "--name", "again",
        "--data-dir", data_dir, "--quiet",
    )  # fmt: skip
    assert result.code == 0, result.stderr
    assert metrics_without_timing(tmp_path / "again") == metrics_without_timing(trial)
    listed = run_vae("runs", "--runs-dir", runs / "sweep")
    assert "trial-0000" in listed.stdout and "finished" in listed.stdout


def test_two_concurrent_workers_share_one_study(tmp_path: Path, data_dir: Path) -> None:
    config, runs = write_sweep(tmp_path), tmp_path / "runs"
    command = [sys.executable, "-m", "vae_cli", *map(str, tune_args(config, runs, data_dir))]
    workers = [
        subprocess.Popen(
            [*command, "--trials", "2", "--pruner", "none"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        for _ in range(2)
    ]
    for worker in workers:
        _, stderr = worker.communicate(timeout=300)
        assert worker.returncode == 0, stderr.decode()
    trials = load_study(runs).get_trials()
    assert sorted(t.number for t in trials) == [0, 1, 2, 3]
    assert [t.state.name for t in trials] == ["COMPLETE"] * 4
    folders = {t.user_attrs["run_dir"] for t in trials}
    assert len(folders) == 4
    for folder in folders:  # each trial ran once, in its own folder
        assert len(Path(folder, "metrics.jsonl").read_text().splitlines()) == 2


def test_a_poor_trial_is_pruned_in_optuna_and_in_its_status(tmp_path: Path, data_dir: Path) -> None:
    config, runs = write_sweep(tmp_path, epochs=4), tmp_path / "runs"
    (runs / "sweep").mkdir(parents=True)
    study = optuna.create_study(
        study_name="sweep", storage=f"sqlite:///{runs / 'sweep/study.db'}", direction="minimize"
    )
    distribution = optuna.distributions.FloatDistribution(1e-4, 3e-3, log=True)
    for _ in range(3):  # three earlier trials far better than any tiny run
        study.add_trial(
            optuna.trial.create_trial(
                params={"lr": 1e-3},
                distributions={"lr": distribution},
                value=1.0,
                intermediate_values={epoch: 1.0 for epoch in range(1, 5)},
            )
        )
    result = run_vae(*tune_args(config, runs, data_dir, "--trials", 1))
    assert result.code == 0, result.stderr
    trial = load_study(runs).trials[-1]
    assert trial.state.name == "PRUNED" and trial.user_attrs["status"] == "pruned"
    run = Path(trial.user_attrs["run_dir"])
    assert json.loads((run / "status.json").read_text())["status"] == "pruned"
    epochs = len((run / "metrics.jsonl").read_text().splitlines())
    assert 1 <= epochs < 4 and trial.user_attrs["epochs"] == epochs
    # The pruned run is an ordinary resumable run.
    resumed = run_vae("train", "--resume", run, "--data-dir", data_dir, "--quiet")
    assert resumed.code == 0, resumed.stderr


@pytest.mark.parametrize(
    ("search", "fragment"),
    [
        ("lr = { low = 3e-3, high = 1e-4 }", "[search] lr: low 0.003 must be below high"),
        ("lr = { low = 0.0, high = 1e-3, log = true }", "[search] lr: low: expected a number > 0"),
        (
            "beta = { low = 0.0, high = 1.0, log = true }",
            "[search] beta: a log range needs low > 0",
        ),
        ("latent_size = { choices = [2, 4] }", "[search] latent_size: unknown field"),
        ("latent_dim = { choices = [] }", "[search] latent_dim: choices must be a non-empty list"),
        ("hidden_dim = { low = 32.5, high = 64 }", "[search] hidden_dim: low: expected an integer"),
        ('latent_dim = { choices = [2, "8"] }', "[search] latent_dim: expected an integer"),
        ('device = { choices = ["cpu", "cuda"] }', "[search] device: cannot be searched"),
        ("lr = 0.001", "[search] lr: expected a table"),
        ("lr = { low = 1e-4, hi = 1e-3 }", "[search] lr: unknown key hi (did you mean high?)"),
        ("lrr = { low = 1e-4, high = 1e-3 }", "[search] lrr: unknown field (did you mean lr?)"),
        ('objective = { choices = ["iwae"] }\nbeta = { low = 0.5, high = 1.0 }', "[search] beta"),
        (
            'lr_schedule = { choices = ["constant", "cosine"] }\nlr = { low = 1e-5, high = 1e-3 }',
            "can draw lr 1e-05 below final_lr 0.0001",
        ),
    ],
)
def test_a_bad_search_space_is_one_error_and_creates_nothing(
    search: str, fragment: str, tmp_path: Path, data_dir: Path
) -> None:
    config = tmp_path / "bad.toml"
    config.write_text(f"[train]\nepochs = 1\n[search]\n{search}\n")
    result = run_vae(*tune_args(config, tmp_path / "runs", data_dir))
    assert result.code == 2
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("Error: ")
    assert fragment in result.stderr and str(config) in result.stderr
    assert not (tmp_path / "runs").exists()


def test_an_unreachable_storage_is_one_error_with_the_password_masked(
    tmp_path: Path, data_dir: Path
) -> None:
    with socket.socket() as probe:  # a loopback port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    url = f"postgresql+psycopg://vae:hunter2@127.0.0.1:{port}/studies"
    args = tune_args(write_sweep(tmp_path), tmp_path / "runs", data_dir, "--storage", url)
    result = run_vae(*args)
    assert result.code == 2
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("Error: --storage ")
    assert f"vae:***@127.0.0.1:{port}/studies" in result.stderr
    assert "hunter2" not in result.stderr
    assert not (tmp_path / "runs").exists()
    unknown = run_vae(
        *tune_args(write_sweep(tmp_path), tmp_path / "runs", data_dir, "--storage", "nosuchdb://x")
    )
    assert unknown.code == 2 and "Error: --storage nosuchdb://x" in unknown.stderr


def start_worker(
    config: Path, runs: Path, data_dir: Path, trials: int, *extra: object
) -> subprocess.Popen:
    args = list(map(str, tune_args(config, runs, data_dir, "--trials", trials, *extra)))
    script = (
        "import signal, sys\n"
        "signal.signal(signal.SIGINT, signal.default_int_handler)\n"
        "from vae_cli.cli.app import main\n"
        f"sys.exit(main({args!r}))\n"
    )
    return subprocess.Popen(
        [sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def wait_for_epoch(run: Path, process: subprocess.Popen) -> None:
    deadline = time.monotonic() + 120
    while not (run / "metrics.jsonl").is_file():
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline, "the trial never finished an epoch"
        time.sleep(0.05)


SLOW_SWEEP = "\n[search]\nlr = { low = 1e-4, high = 3e-3, log = true }\n"


def slow_sweep(folder: Path) -> Path:
    """One search dimension and 20,000 images in batches of 32: epochs of a few seconds."""
    path = folder / "sweep.toml"
    path.write_text(
        '[data]\nlimit = 20000\n[train]\nepochs = 20\nbatch_size = 32\ndevice = "cpu"\n'
        + SLOW_SWEEP
    )
    return path


def test_ctrl_c_saves_the_trial_as_a_resumable_run(tmp_path: Path, data_dir: Path) -> None:
    runs = tmp_path / "runs"
    worker = start_worker(slow_sweep(tmp_path), runs, data_dir, trials=3)
    try:
        run = runs / "sweep/trial-0000"
        wait_for_epoch(run, worker)
        worker.send_signal(signal.SIGINT)
        _, stderr = worker.communicate(timeout=120)
    finally:
        worker.kill()
    assert worker.returncode == 130, stderr
    assert "Traceback" not in stderr and f"vae train --resume {run}" in stderr
    assert json.loads((run / "status.json").read_text())["status"] == "interrupted"
    (trial,) = load_study(runs).trials  # no further trial was started
    assert trial.state.name == "FAIL" and trial.user_attrs["status"] == "interrupted"


def test_a_killed_worker_does_not_stall_the_study(
    tmp_path: Path, data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    runs, config = tmp_path / "runs", slow_sweep(tmp_path)
    worker = start_worker(config, runs, data_dir, trials=1)
    try:
        wait_for_epoch(runs / "sweep/trial-0000", worker)
    finally:
        worker.kill()
        worker.communicate()
    next_worker_fails_the_killed_trials(runs, config, data_dir, monkeypatch, asked=1)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def postgres_program(name: str) -> str | None:
    """A PostgreSQL server program: on PATH, else where Debian and Ubuntu install it
    (/usr/lib/postgresql/NN/bin, the newest version)."""
    found = shutil.which(name)
    if found is not None:
        return found
    installed = sorted(
        Path("/usr/lib/postgresql").glob(f"*/bin/{name}"),
        key=lambda path: int(path.parts[-3]) if path.parts[-3].isdigit() else 0,
    )
    return str(installed[-1]) if installed else None


@pytest.fixture
def postgres_url() -> str:
    """A throwaway PostgreSQL server on a loopback port, in a temp folder, stopped afterwards."""
    initdb, pg_ctl = postgres_program("initdb"), postgres_program("pg_ctl")
    if initdb is None or pg_ctl is None:
        pytest.skip("PostgreSQL is not installed here (no initdb and pg_ctl)")
    folder = Path(tempfile.mkdtemp(prefix="vae-postgres-"))
    as_server_user: list[str] = []
    if os.geteuid() == 0:  # initdb refuses to run as root
        shutil.chown(folder, "postgres")
        as_server_user = ["runuser", "-u", "postgres", "--"]
    data, port = folder / "data", free_port()

    def server(*command: str) -> None:
        subprocess.run([*as_server_user, *command], check=True, capture_output=True, timeout=120)

    server(initdb, "-D", str(data), "-U", "vae", "--auth=trust", "-E", "UTF8")
    options = f"-p {port} -k {folder} -c listen_addresses=127.0.0.1"
    server(pg_ctl, "-D", str(data), "-l", str(folder / "log"), "-o", options, "-w", "start")
    try:
        yield f"postgresql+psycopg://vae@127.0.0.1:{port}/postgres"
    finally:
        server(pg_ctl, "-D", str(data), "-m", "immediate", "-w", "stop")
        shutil.rmtree(folder, ignore_errors=True)


def test_a_study_on_postgresql(postgres_url: str, tmp_path: Path, data_dir: Path) -> None:
    config = write_sweep(tmp_path)
    for machine in ("a", "b"):  # two workers with their own run folders, one study
        result = run_vae(
            *tune_args(config, tmp_path / machine, data_dir, "--storage", postgres_url),
            *("--trials", 1, "--study", "shared"),
        )
        assert result.code == 0, result.stderr
    study = optuna.load_study(study_name="shared", storage=postgres_url)
    assert [t.state.name for t in study.trials] == ["COMPLETE", "COMPLETE"]
    assert (tmp_path / "a/shared/trial-0000").is_dir() and (
        tmp_path / "b/shared/trial-0001"
    ).is_dir()
    assert all(math.isfinite(t.value) for t in study.trials)
    assert not (tmp_path / "a/shared/study.db").exists()


def test_the_shipped_sweep_searches_lr_beta_and_latent_size() -> None:
    from conftest import REPO

    from vae_cli.config.search import load_tune_config

    config, space = load_tune_config(REPO / "configs/tune.toml")
    assert config.train.epochs == 10
    assert {d.name: d.kind for d in space} == {
        "lr": "float",
        "beta": "float",
        "latent_dim": "choice",
    }


def test_timeout_starts_no_trial_after_it(tmp_path: Path, data_dir: Path) -> None:
    config, runs = write_sweep(tmp_path), tmp_path / "runs"
    result = run_vae(*tune_args(config, runs, data_dir, "--trials", 5, "--timeout", 0.001))
    assert result.code == 0, result.stderr
    assert len(load_study(runs).trials) == 1  # the first trial outlasts 0.06 s
    bad = run_vae(*tune_args(config, tmp_path / "other", data_dir, "--timeout", 0))
    assert bad.code == 2 and "--timeout: expected minutes > 0" in bad.stderr
    assert not (tmp_path / "other").exists()


def test_trial_folders_without_their_study_are_refused(tmp_path: Path, data_dir: Path) -> None:
    config, runs = write_sweep(tmp_path), tmp_path / "runs"
    (runs / "sweep/trial-0000").mkdir(parents=True)
    result = run_vae(*tune_args(config, runs, data_dir))
    assert result.code == 2 and "holds trial folders but no study.db" in result.stderr
    assert sorted(p.name for p in (runs / "sweep").iterdir()) == ["trial-0000"]


def test_trial_folders_of_a_study_in_another_storage_are_refused(
    tmp_path: Path, data_dir: Path
) -> None:
    config, runs = write_sweep(tmp_path, epochs=1), tmp_path / "runs"
    assert run_vae(*tune_args(config, runs, data_dir, "--trials", 1)).code == 0
    before = sorted((runs / "sweep").rglob("*"))
    other = f"sqlite:///{tmp_path / 'other.db'}"  # a new study named "sweep": trial 0 again
    result = run_vae(*tune_args(config, runs, data_dir, "--trials", 1, "--storage", other))
    assert result.code == 2, result.stderr
    assert "trial-0000 is not a trial of study 'sweep' in this storage" in result.stderr
    assert sorted((runs / "sweep").rglob("*")) == before
    assert optuna.load_study(study_name="sweep", storage=other).trials == []


def test_a_study_folder_that_cannot_be_made_is_one_error(tmp_path: Path, data_dir: Path) -> None:
    (tmp_path / "file").write_text("in the way")
    runs = tmp_path / "file" / "runs"
    result = run_vae(*tune_args(write_sweep(tmp_path), runs, data_dir, "--trials", 1))
    assert result.code == 2 and "Traceback" not in result.stderr
    assert result.stderr.startswith(f"Error: {runs / 'sweep'}: cannot create study folder (")
    assert (tmp_path / "file").read_text() == "in the way"


def test_an_empty_study_name_is_refused(tmp_path: Path, data_dir: Path) -> None:
    result = run_vae(*tune_args(write_sweep(tmp_path), tmp_path / "runs", data_dir, "--study", ""))
    assert result.code == 2 and "--study '': use letters" in result.stderr
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize(
    ("message", "retried"),
    [
        ("table studies already exists", True),  # SQLite: two workers created the tables
        ("database is locked", True),
        ("unable to open database file", False),  # a real error: reported at once
    ],
)
def test_workers_that_race_to_create_the_tables_retry(
    message: str, retried: bool, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import sqlalchemy.exc

    from vae_cli.commands import study

    real, calls = optuna.storages.RDBStorage, []

    def first_call_fails(*args: object, **kwargs: object) -> object:
        calls.append(args)
        if len(calls) == 1:
            raise sqlalchemy.exc.OperationalError("CREATE TABLE studies", {}, Exception(message))
        return real(*args, **kwargs)

    monkeypatch.setattr(optuna.storages, "RDBStorage", first_call_fails)
    monkeypatch.setattr(study.time, "sleep", lambda seconds: None)
    url = f"sqlite:///{tmp_path / 'study.db'}"
    if retried:
        assert isinstance(study.open_storage(url), real) and len(calls) == 2
    else:
        with pytest.raises(study.UserError, match=message):
            study.open_storage(url)
        assert len(calls) == 1


def test_a_diverging_trial_fails_and_the_sweep_goes_on(
    tmp_path: Path, data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from conftest import nan_loss, poison_training_losses

    poison_training_losses(monkeypatch, lambda n, parts: nan_loss(parts) if n <= 3 else parts)
    config = write_sweep(tmp_path, extra="")
    config.write_text(config.read_text().replace("[search]", "max_bad_steps = 3\n[search]"))
    result = run_vae(*tune_args(config, tmp_path / "runs", data_dir, "--trials", 2))
    assert result.code == 0, result.stderr
    first, second = load_study(tmp_path / "runs").trials
    assert first.state.name == "FAIL" and first.user_attrs["status"] == "failed"
    assert "non-finite steps in a row" in first.user_attrs["error"]
    assert second.state.name == "COMPLETE"
    assert "Warning: trial 0: skipped" in result.stderr


def epoch_ended(epoch: int, val_loss: float, **bounds: float) -> EpochEnded:
    """The event of an epoch with this validation -ELBO (and `bounds`); every other number,
    the test set's included, is one the reporter must not read."""
    metrics = EpochMetrics(
        epoch=epoch, step=10 * epoch, binarize="dynamic", train_loss=7.0 * epoch,
        train_recon=1.0, train_kl=1.0, test_loss=1.0, test_recon=1.0, test_kl=1.0,
        active_units=1, kl_per_dim=[1.0], clipped_fraction=0.0, mean_grad_norm=1.0,
        bad_steps=0, lr=1e-3, phase=1, chosen_on="validation", val_loss=val_loss,
        val_recon=1.0, val_kl=1.0, timing={"images_per_s": 1.0}, **bounds,
    )  # fmt: skip
    return EpochEnded(0, "", metrics, [], None, None, None, final=False, training=1)  # type: ignore[arg-type]


def test_each_epoch_reports_its_own_validation_bound_and_the_median_pruner_decides() -> None:
    """Values that differ per epoch: the train or test loss, or another epoch's value, would
    show."""
    study = optuna.create_study(
        direction="minimize", pruner=optuna.pruners.MedianPruner(n_startup_trials=1)
    )
    first = study.ask()
    reporter = TrialReporter(first)
    for epoch, val_loss in ((1, 100.0), (2, 90.0), (3, 80.0)):
        reporter.on_epoch(epoch_ended(epoch, val_loss))
    study.tell(first, 80.0)
    assert study.trials[0].intermediate_values == {1: 100.0, 2: 90.0, 3: 80.0}
    second = study.ask()
    reporter = TrialReporter(second)
    reporter.on_epoch(epoch_ended(1, 95.0))  # better: goes on
    with pytest.raises(TrainingPruned):
        reporter.on_epoch(epoch_ended(2, 99.0))  # 99 > 90
    assert study.trials[1].intermediate_values == {1: 95.0, 2: 99.0}
    assert second.user_attrs["epochs"] == 2
    # An IWAE trial is judged by the bound it trains, on the validation split.
    third = study.ask()
    iwae = {"val_iwae": 97.5, "test_iwae": 2.0, "test_iwae_k": 5}
    TrialReporter(third).on_epoch(epoch_ended(1, 120.0, **iwae))
    assert study.trials[2].intermediate_values == {1: 97.5}


@pytest.mark.parametrize(
    ("edits", "message"),
    [
        ({"[train]\n": '[train]\nobjective = "iwae"\nk = 2\nbeta = 0.5\n'}, "--objective iwae"),
        ({"[data]": "[model]\nmin_std = 1000.0\n[data]"}, "not below the largest sigma"),
        (
            {
                "[train]\n": '[train]\nobjective = "iwae"\nk = 1000\n',
                "batch_size = 64": "batch_size = 20000",
                "limit = 256": "limit = 30000",
            },
            "one training step needs",
        ),
    ],
    ids=["iwae-with-beta", "min-std", "memory"],
)
def test_invalid_fixed_settings_create_no_study(
    edits: dict[str, str], message: str, tmp_path: Path, data_dir: Path
) -> None:
    text = TINY_SWEEP.format(epochs=1)
    for old, new in edits.items():
        text = text.replace(old, new)
    config = tmp_path / "sweep.toml"
    config.write_text(text)
    result = run_vae(*tune_args(config, tmp_path / "runs", data_dir, "--trials", 1))
    assert result.code == 2 and message in result.stderr, result.stderr
    assert result.stderr.count("\n") == 1
    assert not (tmp_path / "runs").exists()


PARALLEL_SWEEP = """
[data]
limit = 512
[train]
epochs = 3
batch_size = 64
device = "cpu"
[search]
lr = { low = 1e-7, high = 3e-3, log = true }
hidden_dim = { choices = [32, 64] }
"""


def enqueued_study(runs: Path, config: Path, params: list[dict]) -> None:
    """The study of `config` in its default storage, with trials' parameters queued."""
    (runs / "sweep").mkdir(parents=True)
    study = optuna.create_study(
        study_name="sweep", storage=f"sqlite:///{runs / 'sweep/study.db'}", direction="minimize"
    )
    for values in params:
        study.enqueue_trial(values)


def test_parallel_trials_of_one_shape_train_in_one_stack(
    tmp_path: Path, data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from vae_cli.commands import stack as session

    config, runs = tmp_path / "sweep.toml", tmp_path / "runs"
    config.write_text(PARALLEL_SWEEP)
    enqueued_study(
        runs,
        config,
        [
            {"lr": 1e-3, "hidden_dim": 32},
            {"lr": 2e-3, "hidden_dim": 64},
            {"lr": 5e-4, "hidden_dim": 32},
        ],
    )
    stacks, real = [], session.train_members

    def train_members(members: list, **kwargs: object) -> list:
        stacks.append([member.folder.root.name for member in members])
        return real(members, **kwargs)

    monkeypatch.setattr(session, "train_members", train_members)
    result = run_vae(*tune_args(config, runs, data_dir, "--trials", 3, "--parallel", 3))
    assert result.code == 0, result.stderr
    assert stacks == [["trial-0000", "trial-0002"], ["trial-0001"]]  # hidden 32, then 64
    trials = load_study(runs).trials
    assert [t.state.name for t in trials] == ["COMPLETE"] * 3
    monkeypatch.undo()
    # Each trial is a real run: its config.toml alone reproduces it (to float rounding).
    trial = runs / "sweep/trial-0002"
    alone = run_vae(
        "train", "--config", trial / "config.toml", "--runs-dir", tmp_path, "--name", "alone",
        "--data-dir", data_dir, "--quiet",
    )  # fmt: skip
    assert alone.code == 0, alone.stderr
    together, apart = (metrics_without_timing(p) for p in (trial, tmp_path / "alone"))
    for a, b in zip(together, apart, strict=True):
        assert a["test_loss"] == pytest.approx(b["test_loss"], rel=1e-5)
    assert trials[2].value == pytest.approx(
        min(m["val_loss"] for m in metrics_without_timing(trial))
    )


def test_the_pruner_stops_one_member_of_a_stack_while_the_others_train_on(
    tmp_path: Path, data_dir: Path
) -> None:
    config, runs = tmp_path / "sweep.toml", tmp_path / "runs"
    config.write_text(PARALLEL_SWEEP)
    good = {"lr": 1e-3, "hidden_dim": 32}
    # Three trials finish first; then a stack of a good trial and one that learns nothing.
    enqueued_study(runs, config, [good, good, good, good, {"lr": 1e-7, "hidden_dim": 32}])
    result = run_vae(*tune_args(config, runs, data_dir, "--trials", 5, "--parallel", 3))
    assert result.code == 0, result.stderr
    trials = load_study(runs).trials
    assert [t.state.name for t in trials] == ["COMPLETE"] * 4 + ["PRUNED"]
    pruned, kept = runs / "sweep/trial-0004", runs / "sweep/trial-0003"
    assert json.loads((pruned / "status.json").read_text())["status"] == "pruned"
    assert [m["epoch"] for m in metrics_without_timing(pruned)] == [1]
    assert (pruned / "curves.png").is_file() and (pruned / "samples/epoch_001.png").is_file()
    assert [m["epoch"] for m in metrics_without_timing(kept)] == [1, 2, 3]
    assert trials[4].user_attrs["status"] == "pruned" and trials[4].user_attrs["epochs"] == 1


def next_worker_fails_the_killed_trials(
    runs: Path, config: Path, data_dir: Path, monkeypatch: pytest.MonkeyPatch, asked: int
) -> None:
    """After a kill -9 the `asked` trials stay RUNNING until someone notices: once their
    heartbeats are stale, the next worker fails them and then completes its own trial."""
    from vae_cli.commands import trials as tune

    assert [t.state.name for t in load_study(runs).trials] == ["RUNNING"] * asked
    monkeypatch.setattr(tune, "GRACE_SECONDS", 1)
    time.sleep(1.5)
    config.write_text(config.read_text().replace("limit = 20000", "limit = 256"))
    parallel = ("--parallel", asked) if asked > 1 else ()
    result = run_vae(*tune_args(config, runs, data_dir, "--trials", 1, *parallel))
    assert result.code == 0, result.stderr
    states = [t.state.name for t in load_study(runs).trials]
    assert states == ["FAIL"] * asked + ["COMPLETE"]


def test_a_killed_parallel_worker_does_not_stall_the_study(
    tmp_path: Path, data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    runs, config = tmp_path / "runs", slow_sweep(tmp_path)
    worker = start_worker(config, runs, data_dir, 2, "--parallel", 2)
    try:
        wait_for_epoch(runs / "sweep/trial-0001", worker)
    finally:
        worker.kill()
        worker.communicate()
    next_worker_fails_the_killed_trials(runs, config, data_dir, monkeypatch, asked=2)


TWO_SHAPES = [{"lr": 1e-3, "hidden_dim": 32}, {"lr": 1e-3, "hidden_dim": 64}]  # two stacks


def slow_parallel_sweep(folder: Path) -> Path:
    path = folder / "sweep.toml"
    path.write_text(
        '[data]\nlimit = 20000\n[train]\nepochs = 20\nbatch_size = 32\ndevice = "cpu"\n'
        "[search]\nlr = { low = 1e-4, high = 3e-3, log = true }\n"
        "hidden_dim = { choices = [32, 64] }\n"
    )
    return path


def test_ctrl_c_in_an_earlier_stack_ends_every_trial_asked(tmp_path: Path, data_dir: Path) -> None:
    runs, config = tmp_path / "runs", slow_parallel_sweep(tmp_path)
    enqueued_study(runs, config, TWO_SHAPES)
    worker = start_worker(config, runs, data_dir, 2, "--parallel", 2)
    try:
        wait_for_epoch(runs / "sweep/trial-0000", worker)
        worker.send_signal(signal.SIGINT)
        _, stderr = worker.communicate(timeout=120)
    finally:
        worker.kill()
    assert worker.returncode == 130, stderr
    first, second = load_study(runs).trials
    assert (first.state.name, first.user_attrs["status"]) == ("FAIL", "interrupted")
    assert (second.state.name, second.user_attrs["status"]) == ("FAIL", "not started")
    assert not (runs / "sweep/trial-0001").exists()


def test_a_killed_worker_s_later_stack_is_failed_by_the_next_worker(
    tmp_path: Path, data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    runs, config = tmp_path / "runs", slow_parallel_sweep(tmp_path)
    enqueued_study(runs, config, TWO_SHAPES)
    worker = start_worker(config, runs, data_dir, 2, "--parallel", 2)
    try:
        wait_for_epoch(runs / "sweep/trial-0000", worker)
    finally:
        worker.kill()
        worker.communicate()
    next_worker_fails_the_killed_trials(runs, config, data_dir, monkeypatch, asked=2)


def test_an_error_in_an_earlier_stack_fails_every_trial_asked(
    tmp_path: Path, data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from vae_cli.commands import stack as session

    config, runs = tmp_path / "sweep.toml", tmp_path / "runs"
    config.write_text(PARALLEL_SWEEP)
    enqueued_study(runs, config, TWO_SHAPES)

    def broken(specs: list, **kwargs: object) -> list:
        raise OSError("the disk went away")

    monkeypatch.setattr(session, "train_members", broken)
    with pytest.raises(OSError, match="the disk went away"):  # a bug-like failure: traceback
        run_vae(*tune_args(config, runs, data_dir, "--trials", 2, "--parallel", 2))
    first, second = load_study(runs).trials
    assert (first.state.name, first.user_attrs["status"]) == ("FAIL", "failed")
    assert "the disk went away" in first.user_attrs["error"]
    assert (second.state.name, second.user_attrs["status"]) == ("FAIL", "not started")


def test_the_memory_check_counts_every_trial_of_a_stack(
    tmp_path: Path, data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from vae_cli.config.search import load_tune_config
    from vae_cli.training import memory

    config, runs = tmp_path / "sweep.toml", tmp_path / "runs"
    config.write_text(PARALLEL_SWEEP)
    fixed, _ = load_tune_config(config)
    one = memory.step_bytes(fixed.replace({"hidden_dim": 64}), 512)  # the largest trial
    monkeypatch.setattr(memory, "device_memory_bytes", lambda device: 3 * one)
    assert run_vae(*tune_args(config, runs, data_dir, "--trials", 1, "--parallel", 2)).code == 0
    result = run_vae(*tune_args(config, runs / "b", data_dir, "--trials", 4, "--parallel", 4))
    assert result.code == 2 and result.stderr.startswith("Error: one training step needs")
    assert "x 4 members" in result.stderr and "--parallel" in result.stderr
    assert "--seeds" not in result.stderr
    assert not (runs / "b").exists()  # refused before the study was touched


def test_a_heartbeat_that_hits_a_storage_error_keeps_beating(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from vae_cli.commands import trials as tune

    class FlakyStorage:
        def __init__(self) -> None:
            self.calls: list[int] = []

        def record_heartbeat(self, trial_id: int) -> None:
            self.calls.append(trial_id)
            if len(self.calls) == 1:
                raise RuntimeError("server closed the connection unexpectedly")

    class Trial:
        _trial_id = 7

    monkeypatch.setattr(tune, "HEARTBEAT_SECONDS", 0.01)
    storage = FlakyStorage()
    warned: list[str] = []
    with tune.Heartbeats(storage, [Trial()], warn=warned.append) as beats:  # type: ignore[arg-type]
        deadline = time.monotonic() + 10
        while len(storage.calls) < 3 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert beats.thread.is_alive()
    assert storage.calls[:3] == [7, 7, 7]
    assert len(warned) == 1 and "heartbeat could not be recorded" in warned[0]  # said once


@pytest.mark.filterwarnings("ignore:Heartbeat of storage")
def test_a_trial_another_worker_failed_is_not_told_twice(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from vae_cli.commands.study import open_storage
    from vae_cli.commands.trials import AskedTrials

    storage = open_storage(f"sqlite:///{tmp_path / 'study.db'}")
    study = optuna.create_study(storage=storage, study_name="s")
    trial = study.ask()
    warned: list[str] = []
    with AskedTrials(study, storage, [trial], warn=warned.append) as batch:
        study.tell(trial, state=optuna.trial.TrialState.FAIL)  # as a stale-trial check does
        batch.tell(trial, "finished", value=1.0)
    assert study.trials[0].state.name == "FAIL"
    assert len(warned) == 1 and "already ended by another worker" in warned[0]
