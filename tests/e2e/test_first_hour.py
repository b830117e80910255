"""What a new user meets in the first hour: the files a run says it wrote, one bar per
population in epochs, pictures with labels and marks, a runs table that fits 80 columns, one
help style, progress on long commands."""

from __future__ import annotations

from pathlib import Path

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
