"""What a new user meets in the first hour: the files a run says it wrote, one bar per
population in epochs, pictures with labels and marks, a runs table that fits 80 columns, one
help style, progress on long commands."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import run_vae, train_args

TINY = ("--limit", 256, "--batch-size", 64, "--epochs", 1, "--hidden-dims", 32)


def test_training_says_every_file_and_folder_it_wrote(tmp_path: Path, data_dir: Path) -> None:
    result = run_vae(*train_args(tmp_path, data_dir, *TINY, "--prior", "vamp",
                                 "--pseudo-inputs", 5, name="r"))  # fmt: skip
    assert result.code == 0, result.stderr
    said = [line.removeprefix("wrote ") for line in result.stdout.splitlines()
            if line.startswith("wrote ")]  # fmt: skip
    run = tmp_path / "r"
    expected = ["config.toml", "checkpoints/last.pt", "checkpoints/best.pt", "metrics.jsonl",
                "curves.png", "pseudo_inputs.png", "samples/", "reconstructions/"]  # fmt: skip
    assert said == [f"{run}/{name}" for name in expected]
    for name in expected:
        assert (run / name.rstrip("/")).exists(), name


def test_a_population_has_one_bar_of_epochs(tmp_path: Path, data_dir: Path) -> None:
    """The epochs bar counts epochs, not member-epochs: 3 members for 2 epochs end at 2/2."""
    import re

    from conftest import run_in_terminal

    args = train_args(tmp_path, data_dir, *TINY[:-4], "--epochs", 2, "--hidden-dims", 32,
                      "--seeds", "0-2", name="pop")  # fmt: skip
    shown = run_in_terminal(*args)
    assert shown.code == 0, shown.stdout[-2000:]
    counters = set(re.findall(r"epochs:[^\r\n]*?(\d+/\d+|\d+it) \[", shown.stdout))
    assert counters == {"0/2", "1/2", "2/2"}  # never "3it": a member-epoch past the total


def test_the_runs_table_fits_80_columns(
    tmp_path: Path, data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """At 80 columns no line is longer, and a member's name (NAME/seed-S), the time and a
    status are never cut or wrapped: only the model's words wrap."""
    import json

    flags = (*TINY[:-2], "--hidden-dims", 8)
    assert run_vae(*train_args(tmp_path, data_dir, *flags, "--seeds", "0-1",
                               name="20261206-235044")).code == 0  # fmt: skip
    long_model = ("--latent-dims", "100,50,25", "--wiring", "ladder", "--block", "gated",
                  "--prior", "vamp", "--pseudo-inputs", 5)  # fmt: skip
    assert run_vae(*train_args(tmp_path, data_dir, *flags, *long_model, name="deep")).code == 0
    stopped = tmp_path / "20261206-235044/seed-1/status.json"
    stopped.write_text(json.dumps({"status": "interrupted", "epoch": 1}))
    monkeypatch.setenv("COLUMNS", "80")
    shown = run_vae("runs", "--runs-dir", tmp_path).stdout
    assert max(len(line) for line in shown.splitlines()) <= 80
    rows = {line.split()[0]: line.split() for line in shown.splitlines() if line.split()}
    member = rows["20261206-235044/seed-1"]
    assert member[1].count(":") == 1 and member[2] == "1/1" and member[-1] == "interrupted"
    assert rows["deep"][-1] == "finished" and "VampPrior K=5" in " ".join(shown.split())


def test_help_lists_the_commands_in_the_order_a_user_meets_them_one_line_each(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("COLUMNS", "80")
    shown = run_vae("--help").stdout.splitlines()
    start = next(i for i, line in enumerate(shown) if "Commands" in line)
    rows = [line.strip("│ ").split()[0] for line in shown[start + 1 :] if line.startswith("│")]
    listed = [row for row in rows if row.isalpha()]
    assert listed[:4] == ["train", "eval", "sample", "reconstruct"]
    assert listed[-3:] == ["runs", "export", "tune"]
    assert len(rows) == len(listed)  # no summary runs onto a second line


@pytest.mark.parametrize("command", ["train", "tune", "eval", "sample", "gradients", "export"])
def test_every_help_writes_defaults_and_ranges_one_way(
    command: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COLUMNS", "200")
    shown = run_vae(command, "--help").stdout
    assert "(default:" not in shown and "At most" not in shown
    assert shown.count("[default: ") >= 2
    if command == "train":
        assert "[default: 10]" in shown and "[default: a timestamp]" in shown
        assert "[1<=x<=4096]" in shown and "[x>0]" in shown  # --latent-dim, --lr
