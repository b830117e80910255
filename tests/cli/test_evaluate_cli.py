"""Evaluation of a trained run through the real CLI, on the synthetic dataset."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import dataset_name, run_vae, train_tiny

from vae_cli.commands.load import load_model
from vae_cli.data.dataset import load_dataset, to_float
from vae_cli.model.evaluate import evaluate_elbo, importance_weighted_nll


def test_iw_bound_tightens_with_k_on_a_trained_model(trained_run: Path, data_dir: Path) -> None:
    loaded = load_model(trained_run / "checkpoints/best.pt", "cpu")
    x = to_float(load_dataset(data_dir, dataset_name(data_dir), limit=300).test_images)
    negative_elbo = evaluate_elbo(loaded.model, x).loss
    nll = [importance_weighted_nll(loaded.model, x, k).nll for k in (1, 10, 100)]
    assert nll[2] < nll[1] < nll[0]
    assert nll[2] <= negative_elbo  # NLL_IW <= -ELBO


def test_eval_on_the_validation_split_scores_the_images_the_run_held_out(
    tmp_path: Path, data_dir: Path
) -> None:
    run = train_tiny(tmp_path, "v", data_dir, "--validation", 100, "--binarize", "dynamic")
    epochs = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    report = run_vae("eval", "--checkpoint", run, "--split", "validation", "--json")
    assert report.code == 0, report.stderr
    scored = json.loads(report.stdout)
    assert (scored["split"], scored["images"]) == ("validation", 100)
    best = next(row for row in epochs if row["epoch"] == scored["epoch"])  # best.pt's epoch
    assert scored["loss"] == pytest.approx(best["val_loss"], rel=1e-6)  # the epoch's own pass
    assert scored["loss"] != pytest.approx(best["test_loss"], rel=1e-6)
    first = json.loads(
        run_vae(
            "eval", "--checkpoint", run, "--split", "validation", "--limit", 10, "--json"
        ).stdout
    )
    assert first["images"] == 10


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (("--split", "valid"), "Error: --split 'valid': expected test or validation"),
        (("--split", "validation"), "held out no validation images (train with --validation N)"),
    ],
)
def test_a_split_the_run_has_not_is_refused(
    trained_run: Path, flags: tuple[str, ...], message: str
) -> None:
    result = run_vae("eval", "--checkpoint", trained_run, *flags)
    assert result.code == 2
    assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1
