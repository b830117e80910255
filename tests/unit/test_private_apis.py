"""The three private APIs vae-cli calls, each isolated in one module with a public fallback: a
library upgrade that removes one fails here loudly, and the fallback gives the same numbers."""

from __future__ import annotations

import pytest
import torch


def test_torch_still_has_its_fused_adam_kernel() -> None:
    assert hasattr(torch, "_fused_adam_"), (
        "torch removed torch._fused_adam_: training now runs training/fused_adam.py's public "
        "fallback (torch.optim.adam.adam), slower to start; look for the kernel's new name"
    )


def adam_written_out(
    params: torch.Tensor,
    grads: torch.Tensor,
    exp_avg: torch.Tensor,
    exp_avg_sq: torch.Tensor,
    *,
    lr: float,
    beta1: float,
    beta2: float,
    eps: float,
    step: int,
) -> torch.Tensor:
    """Kingma & Ba's update with bias correction, the reference both paths must match."""
    first = beta1 * exp_avg + (1 - beta1) * grads
    second = beta2 * exp_avg_sq + (1 - beta2) * grads**2
    first_hat, second_hat = first / (1 - beta1**step), second / (1 - beta2**step)
    return params - lr * first_hat / (second_hat.sqrt() + eps)


@pytest.mark.parametrize("skip", [0.0, 1.0], ids=["update", "skipped"])
@pytest.mark.parametrize("path", ["fused kernel", "public fallback"])
def test_both_adam_paths_make_the_written_out_update(skip: float, path: str) -> None:
    from vae_cli.training import fused_adam

    if path == "fused kernel" and fused_adam.KERNEL is None:
        pytest.fail("torch._fused_adam_ is gone (see the test above)")
    step_function = {
        "fused kernel": fused_adam.fused_adam_step,
        "public fallback": fused_adam.public_adam_step,
    }[path]
    generator = torch.Generator().manual_seed(0)
    params, grads, exp_avg = (torch.randn(50, generator=generator) for _ in range(3))
    exp_avg_sq = torch.rand(50, generator=generator)
    tensors = [t.clone() for t in (params, exp_avg, exp_avg_sq)]
    steps = torch.tensor(4.0)  # already advanced, as MemberAdam does
    step_function(
        [tensors[0]], [grads], [tensors[1]], [tensors[2]], [steps],
        lr=torch.tensor(1e-3, dtype=torch.float64), beta1=0.9, beta2=0.99, eps=1e-8,
        found_inf=torch.tensor(skip),
    )  # fmt: skip
    if skip:
        assert torch.equal(tensors[0], params)  # a skipped step changes nothing
        return
    expected = adam_written_out(
        params, grads, exp_avg, exp_avg_sq, lr=1e-3, beta1=0.9, beta2=0.99, eps=1e-8, step=4
    )
    torch.testing.assert_close(tensors[0], expected, rtol=1e-5, atol=1e-7)
    assert not torch.equal(tensors[0], params)


def test_torch_still_has_the_light_determinism_switch() -> None:
    assert hasattr(torch._C, "_set_deterministic_algorithms"), (
        "torch removed torch._C._set_deterministic_algorithms: training/determinism.py now "
        "falls back to torch.use_deterministic_algorithms (about a second more start-up)"
    )


@pytest.mark.parametrize("private", [True, False], ids=["private", "public fallback"])
def test_determinism_is_switched_on_either_way(
    private: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    from vae_cli.training import determinism

    if not private:
        monkeypatch.setattr(determinism, "PRIVATE_SWITCH", None)
    torch.use_deterministic_algorithms(False)
    determinism.make_deterministic(torch.device("cpu"))
    assert torch.are_deterministic_algorithms_enabled()
    assert not torch.is_deterministic_algorithms_warn_only_enabled()


@pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")
def test_optuna_trials_still_carry_their_storage_id(tmp_path) -> None:
    import optuna

    from vae_cli.commands.optuna_ids import trial_id

    storage = optuna.storages.RDBStorage(f"sqlite:///{tmp_path / 'study.db'}")
    study = optuna.create_study(storage=storage, study_name="ids")
    study.ask()
    trial = study.ask()
    assert isinstance(getattr(trial, "_trial_id", None), int), (
        "Optuna removed Trial._trial_id: commands/optuna_ids.py now looks the id up by study "
        "and trial number, a query per heartbeat"
    )
    private = trial_id(trial, storage)

    class PublicOnly:  # the same trial as an upgrade without the attribute would hand over
        number, study = trial.number, trial.study

    assert trial_id(PublicOnly(), storage) == private
