"""torch's fused Adam kernel, called directly: the one private torch API of the step.

Why: torch.optim.Adam runs this same kernel, but constructing or stepping it imports
torch._dynamo, about a second of every command's start-up; and calling the kernel gives each
member of a stack its own learning rate, beta2 and skip flag, which one torch.optim parameter
group cannot. If a torch upgrade removes `torch._fused_adam_`, the public functional Adam
(`torch.optim.adam.adam`) takes over (slower to import, and the skip costs a copy); a test
fails loudly so that the change is seen.
"""

from __future__ import annotations

import torch
from torch import Tensor

KERNEL = getattr(torch, "_fused_adam_", None)


def fused_adam_step(
    params: list[Tensor],
    grads: list[Tensor],
    exp_avgs: list[Tensor],
    exp_avg_sqs: list[Tensor],
    steps: list[Tensor],
    *,
    lr: Tensor,
    beta1: float,
    beta2: float,
    eps: float,
    found_inf: Tensor,
) -> None:
    """One Adam update of `params` in place (torch.optim.Adam's maths, no weight decay), their
    step counts already advanced; where `found_inf` is non-zero nothing changes."""
    if KERNEL is not None:
        KERNEL(
            params, grads, exp_avgs, exp_avg_sqs, [], steps,
            lr=lr, beta1=beta1, beta2=beta2, weight_decay=0.0, eps=eps,
            amsgrad=False, maximize=False, found_inf=found_inf,
        )  # fmt: skip
        return
    public_adam_step(
        params, grads, exp_avgs, exp_avg_sqs, steps,
        lr=lr, beta1=beta1, beta2=beta2, eps=eps, found_inf=found_inf,
    )  # fmt: skip


@torch.no_grad()
def public_adam_step(
    params: list[Tensor],
    grads: list[Tensor],
    exp_avgs: list[Tensor],
    exp_avg_sqs: list[Tensor],
    steps: list[Tensor],
    *,
    lr: Tensor,
    beta1: float,
    beta2: float,
    eps: float,
    found_inf: Tensor,
) -> None:
    """The same update through torch's public functional Adam, on copies kept where the step
    is not skipped (that function has no skip flag, and advances the step count itself)."""
    from torch.optim.adam import adam

    for param, grad, exp_avg, exp_avg_sq, step in zip(
        params, grads, exp_avgs, exp_avg_sqs, steps, strict=True
    ):
        new = [param.clone(), exp_avg.clone(), exp_avg_sq.clone()]
        count = (step - 1).reshape(())
        adam(
            [new[0]], [grad], [new[1]], [new[2]], [], [count],
            foreach=False, capturable=param.device.type == "cuda",
            amsgrad=False, beta1=beta1, beta2=beta2, lr=float(lr), weight_decay=0.0,
            eps=eps, maximize=False,
        )  # fmt: skip
        keep = found_inf == 0
        for target, value in zip((param, exp_avg, exp_avg_sq), new, strict=True):
            target.copy_(torch.where(keep, value, target))
