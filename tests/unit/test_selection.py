"""best.pt is the epoch with the lowest test value of the bound being trained."""

from vae_cli.runs.best import best_epoch, phases


def epoch(number: int, test_loss: float, iwae: float | None = None, k: int = 5) -> dict:
    line = {"epoch": number, "test_loss": test_loss}
    if iwae is not None:
        line |= {"test_iwae": iwae, "test_iwae_k": k}
    return line


def test_elbo_runs_pick_the_lowest_test_loss_and_skip_non_finite_epochs() -> None:
    history = [epoch(1, 100.0), epoch(2, 90.0), epoch(3, float("nan")), epoch(4, 95.0)]
    assert best_epoch(history)["epoch"] == 2
    assert best_epoch([]) is None
    assert best_epoch([epoch(1, float("inf"))]) is None


def test_iwae_epochs_are_compared_by_their_bound_and_only_with_each_other() -> None:
    history = [
        epoch(1, 80.0),  # a lower -ELBO, but measured by another criterion
        epoch(2, 91.0, iwae=88.0),
        epoch(3, 92.0, iwae=87.5),  # worse -ELBO, better IWAE bound: the best
        epoch(4, 90.0, iwae=87.9),
    ]
    assert best_epoch(history)["epoch"] == 3
    # A later change of k is another criterion again.
    assert best_epoch([*history, epoch(5, 93.0, iwae=89.0, k=10)])["epoch"] == 5


def test_only_the_latest_phase_counts_after_switching_back() -> None:
    history = [
        epoch(1, 80.0),  # ELBO phase 1: its best lives on as best-elbo.pt, not best.pt
        epoch(2, 91.0, iwae=88.0),
        epoch(3, 95.0),
        epoch(4, 94.0),
    ]
    assert best_epoch(history)["epoch"] == 4
    assert [(name, len(epochs)) for name, epochs in phases(history)] == [
        ("elbo", 1),
        ("iwae-5", 1),
        ("elbo", 2),
    ]
