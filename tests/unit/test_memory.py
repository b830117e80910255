"""The memory check before training: a step that cannot fit is one `Error:` line, not a
kill -9 from the kernel's OOM killer."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch

from vae_cli.config.settings import Config
from vae_cli.errors import UserError
from vae_cli.training import memory

GIB = 2**30


def test_the_default_step_needs_tens_of_megabytes() -> None:
    need = memory.step_bytes(Config(), n_train=60_000)
    # 558,928 parameters x 4 copies (weights, gradient, Adam's two moments) x 4 bytes at least.
    assert 558_928 * 16 < need < 64 * 2**20


def test_importance_samples_and_batch_grow_the_estimate() -> None:
    iwae = Config().replace({"objective": "iwae", "k": 10})
    one, ten = memory.step_bytes(Config(), 60_000), memory.step_bytes(iwae, 60_000)
    assert ten > 5 * (one - memory.step_bytes(Config().replace({"batch_size": 1}), 60_000))
    # A batch larger than the data is the data: 100 images, whatever --batch-size says.
    big = Config().replace({"batch_size": 50_000})
    assert memory.step_bytes(big, 100) == memory.step_bytes(big.replace({"batch_size": 100}), 100)


def test_a_later_phase_with_more_samples_counts() -> None:
    phased = dataclasses.replace(
        Config().replace({"batch_size": 20_000}),
        phases=({"epochs": 1, "objective": "iwae", "k": 1000},),
    )
    assert memory.largest_k(phased) == 1000
    with pytest.raises(UserError, match=r"x k 1000.*lower --batch-size, --k or --hidden-dim"):
        memory.check_step_fits(phased, torch.device("cpu"), 20_000)


def test_the_check_compares_with_the_device(monkeypatch: pytest.MonkeyPatch) -> None:
    config = Config().replace({"hidden_dim": 4096})  # ~0.6 GiB: weights and Adam's moments
    monkeypatch.setattr(memory, "device_memory_bytes", lambda device: 1 * GIB)
    memory.check_step_fits(config, torch.device("cpu"), 60_000)
    monkeypatch.setattr(memory, "device_memory_bytes", lambda device: GIB // 4)
    with pytest.raises(UserError, match=r"needs at least .* GiB .* hidden 4096"):
        memory.check_step_fits(config, torch.device("cpu"), 60_000)


def test_the_budget_is_the_machines_ram_or_the_cards_memory() -> None:
    meminfo = Path("/proc/meminfo")
    if meminfo.is_file():
        total_kb = int(meminfo.read_text().split("MemTotal:")[1].split()[0])
        assert memory.device_memory_bytes(torch.device("cpu")) == total_kb * 1024
    if torch.cuda.is_available():
        cuda = torch.device("cuda")
        assert memory.device_memory_bytes(cuda) == torch.cuda.mem_get_info(cuda)[1]
