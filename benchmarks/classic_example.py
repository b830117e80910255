"""The classic PyTorch example VAE (pytorch/examples vae/main.py), re-run on the same data
for the results table: 784-400-20 with ReLU, Adam 1e-3, batch 128, no clipping, summed BCE +
KL, on continuous pixels as published, or on vae-cli's pixels (--binarize dynamic: a fresh
Bernoulli draw of each training batch, the test set's one fixed draw). Prints the average test
loss per image after each epoch, the number its published log reports (106.66 nats at epoch 7,
continuous).

    python benchmarks/classic_example.py [--data-dir ../shared/data] [--epochs 10] [--seed 1]
        [--binarize none|dynamic]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from vae_cli.data.dataset import load_dataset, prepare_images, to_float
from vae_cli.data.folders import resolve_data_dir


class ClassicVAE(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc1 = nn.Linear(784, 400)
        self.fc21 = nn.Linear(400, 20)
        self.fc22 = nn.Linear(400, 20)
        self.fc3 = nn.Linear(20, 400)
        self.fc4 = nn.Linear(400, 784)

    def forward(self, x: torch.Tensor, generator: torch.Generator) -> tuple[torch.Tensor, ...]:
        h = F.relu(self.fc1(x))
        mu, logvar = self.fc21(h), self.fc22(h)
        z = mu + torch.exp(0.5 * logvar) * torch.randn(mu.shape, generator=generator)
        return self.fc4(F.relu(self.fc3(z))), mu, logvar


def loss_sum(
    x_logits: torch.Tensor, x: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor
) -> torch.Tensor:
    recon = F.binary_cross_entropy_with_logits(x_logits, x, reduction="sum")
    return recon - 0.5 * torch.sum(1 + logvar - mu.pow(2) - logvar.exp())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, default=None)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--seed", type=int, default=1)  # the example's default seed
    parser.add_argument("--binarize", choices=("none", "dynamic"), default="none")
    args = parser.parse_args()
    dataset = load_dataset(resolve_data_dir(args.data_dir))
    pixels = prepare_images(dataset, args.binarize)
    train_x, test_x = to_float(pixels.train), to_float(pixels.test)
    binarize = torch.Generator().manual_seed(args.seed + 1)
    torch.manual_seed(args.seed)
    model = ClassicVAE()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    generator = torch.Generator().manual_seed(args.seed)
    for epoch in range(1, args.epochs + 1):
        order = torch.randperm(len(train_x), generator=generator)
        for start in range(0, len(train_x), 128):
            x = train_x[order[start : start + 128]]
            if args.binarize == "dynamic":
                x = torch.bernoulli(x, generator=binarize)
            x_logits, mu, logvar = model(x, generator)
            optimizer.zero_grad()
            loss_sum(x_logits, x, mu, logvar).backward()
            optimizer.step()
        test = 0.0
        with torch.no_grad():
            for start in range(0, len(test_x), 1000):
                x = test_x[start : start + 1000]
                test += loss_sum_of(model, x, generator)
        print(f"epoch {epoch}: test loss {test / len(test_x):.2f} nats per image", flush=True)


def loss_sum_of(model: ClassicVAE, x: torch.Tensor, generator: torch.Generator) -> float:
    x_logits, mu, logvar = model(x, generator)
    return loss_sum(x_logits, x, mu, logvar).item()


if __name__ == "__main__":
    main()
