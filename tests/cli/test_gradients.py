"""`vae gradients` on trained runs (one layer, two layers, a VampPrior): the JSON report, the
table, the picture, reproducibility by seed, and bad values. Synthetic data, no MNIST."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import TINY, png_size, run_vae, snapshot, train_args

SMALL = ("--latent-dim", 4, "--hidden-dim", 32)
KINDS = {
    "normal": SMALL,
    "two layers": (*SMALL, "--stochastic-layers", 2, "--latent2-dim", 3, "--hidden2-dim", 16),
    "vamp": (*SMALL, "--prior", "vamp", "--pseudo-inputs", 5),
}


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory, data_dir: Path) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("runs")
    made = {}
    for kind, flags in KINDS.items():
        name = kind.replace(" ", "-")
        result = run_vae(*train_args(folder, data_dir, *TINY, *flags, name=name))
        assert result.code == 0, result.stderr
        made[kind] = folder / name
    return made


def gradients_json(run: Path, *flags: object) -> dict:
    result = run_vae("gradients", "--checkpoint", run, "--json", *flags)
    assert result.code == 0, result.stderr
    return json.loads(result.stdout)


def without_timing(report: dict) -> dict:
    for row in report["estimators"].values():
        row.pop("seconds_per_sample")
    return report


def test_the_json_report_has_every_estimator_per_dimension(runs: dict[str, Path]) -> None:
    report = gradients_json(runs["normal"], "--samples", 400, "--k", "4,1", "--index", 3)
    assert (report["index"], report["samples"], report["latent_dim"]) == (3, 400, 4)
    assert (report["layer"], report["kl"]) == ("z", "analytic")
    assert set(report["estimators"]) == {"reparam", "score", "score_baseline", "stl"}
    for name, row in report["estimators"].items():
        for key in ("mean_mu", "std_mu", "mean_logvar", "std_logvar"):
            assert len(row[key]) == 4, (name, key)
        assert all(std > 0 for std in row["std_mu"] + row["std_logvar"]), name
        assert 0 < row["seconds_per_sample"] < 0.1
    reparam, score = report["estimators"]["reparam"], report["estimators"]["score"]
    assert reparam["variance_vs_reparam"] == 1.0
    assert score["variance_vs_reparam"] > 10  # the lesson: the score function is far noisier
    assert report["estimators"]["score_baseline"]["variance_vs_reparam"] > 1
    assert report["naive"] == {"grad_mu": [0.0] * 4, "grad_logvar": [0.0] * 4}
    # --k sizes sorted; the largest is the headline.
    assert list(report["encoder_snr_per_k"]) == ["1", "4"]
    assert report["encoder_snr"] == report["encoder_snr_per_k"]["4"]
    assert report["snr_draws"] == 400
    for values in report["encoder_snr_per_k"].values():
        assert set(values) == {"iwae", "dreg"} and all(v > 0 for v in values.values())
    assert png_size(runs["normal"] / "gradients.png") == (1400, 450)  # three panels


def test_each_stage_of_a_long_measurement_says_when_it_is_done(runs: dict[str, Path]) -> None:
    result = run_vae("gradients", "--checkpoint", runs["normal"], "--samples", 40, "--k", "1,2")
    assert result.code == 0, result.stderr
    stages = [line for line in result.stdout.splitlines()
              if line.startswith(("estimators:", "encoder SNR"))]  # fmt: skip
    assert stages[0] == "estimators: reparam, score, score_baseline, stl and naive, 40 draws each"
    assert [line.split(":")[0] for line in stages[1:]] == ["encoder SNR k=1", "encoder SNR k=2"]


def test_the_same_seed_gives_the_same_numbers(runs: dict[str, Path]) -> None:
    first, again = (gradients_json(runs["normal"], "--samples", 50, "--seed", 7) for _ in "ab")
    other = gradients_json(runs["normal"], "--samples", 50, "--seed", 8)
    assert without_timing(first) == without_timing(again)
    assert without_timing(other)["estimators"] != first["estimators"]
    assert "encoder_snr" not in first  # only with --k


def test_other_images_have_other_gradients(runs: dict[str, Path]) -> None:
    image_0, image_1 = (gradients_json(runs["normal"], "--samples", 50, "--index", i)
                        for i in (0, 1))  # fmt: skip
    assert image_0["estimators"]["reparam"] != image_1["estimators"]["reparam"]


@pytest.mark.parametrize("kind", ["two layers", "vamp"])
def test_a_two_layer_or_vamp_run_is_measured_with_the_sampled_kl(
    runs: dict[str, Path], kind: str
) -> None:
    report = gradients_json(runs[kind], "--samples", 300, "--k", 2)
    assert report["kl"] == "sampled" and report["latent_dim"] == 4
    assert report["layer"] == ("z1" if kind == "two layers" else "z")
    assert report["estimators"]["score"]["variance_vs_reparam"] > 1
    assert report["naive"]["grad_mu"] == [0.0] * 4
    assert set(report["encoder_snr"]) == {"iwae", "dreg"}


def test_the_table_says_how_much_noisier_the_score_function_is(
    runs: dict[str, Path], tmp_path: Path
) -> None:
    out = tmp_path / "g.png"
    run = runs["two layers"]
    result = run_vae("gradients", "--checkpoint", run, "--samples", 200, "--out", out)
    assert result.code == 0, result.stderr
    for name in ("reparam", "score_baseline", "stl", "naive", "of z1"):
        assert name in result.stdout, name
    said = " ".join(result.stdout.split())
    assert "flows through z to mu and log sigma² (reparam, what training uses)" in said
    assert "the score function, which needs no path through z, is" in said
    assert "naive: the data term's gradient through a z drawn outside the graph" in said
    assert "encoder gradient SNR" not in result.stdout  # no --k
    assert f"wrote {out}" in " ".join(result.stdout.split())
    assert png_size(out) == (1400, 450)  # two panels at the same size


def test_the_lesson_is_wrapped_between_words_at_80_columns(
    runs: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COLUMNS", "80")
    out = tmp_path / "g.png"
    result = run_vae("gradients", "--checkpoint", runs["normal"], "--samples", 50, "--out", out)
    assert result.code == 0, result.stderr
    lines = [line for line in result.stdout.splitlines() if not line.startswith("wrote ")]
    assert max(len(line) for line in lines) <= 80, lines
    # Broken between words: the sentence reads whole once the lines are joined with spaces.
    said = " ".join(" ".join(lines).split())
    assert "so the ELBO's gradient flows through z to mu and log sigma² (reparam," in said


@pytest.mark.parametrize(
    ("flags", "fragment"),
    [
        (("--samples", 1), "--samples"),
        (("--samples", 0), "--samples"),
        (("--samples", 2_000_000), "--samples"),
        (("--index", -1), "--index"),
        (("--index", 99_999), "--index 99999"),
        (("--k", 0), "--k"),
        (("--k", "1,x"), "--k"),
        (("--k", 20_000), "--k"),
        (("--out", "g.jpg"), ".png"),
    ],
)
def test_bad_values_are_one_error_line_and_change_nothing(
    runs: dict[str, Path], flags: tuple, fragment: str
) -> None:
    run = runs["vamp"]
    (run / "gradients.png").unlink(missing_ok=True)  # another test's
    before = snapshot(run)
    result = run_vae("gradients", "--checkpoint", run, "--samples", 20, *flags)
    assert result.code == 2, (result.stdout, result.stderr)
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: ") and fragment in lines[0], lines
    assert "Traceback" not in result.stdout + result.stderr
    assert snapshot(run) == before and not (run / "gradients.png").exists()


def test_every_panel_of_the_gradients_picture_has_its_legend(runs: dict[str, Path]) -> None:
    from vae_cli.pictures.plots import gradients_figure

    report = gradients_json(runs["normal"], "--samples", 50, "--k", "1,2")
    figure = gradients_figure(report)
    assert len(figure.axes) == 3
    assert all(axis.get_legend() is not None for axis in figure.axes)
