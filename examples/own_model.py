"""MultiMix in your own training loop, on your own model and data.

    python examples/own_model.py [--epochs 30]

The model below is any nn.Module (here with a residual block); the data are plain tensors (here
scikit-learn's bundled digits). MultiMix only needs the name of the classifier submodule.
"""

from __future__ import annotations

import argparse

import torch
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from torch import nn

from multimix import MultiMix, soft_cross_entropy


class MyNet(nn.Module):
    def __init__(self, d_in: int, num_classes: int, width: int = 128):
        super().__init__()
        self.stem = nn.Linear(d_in, width)
        self.block = nn.Sequential(
            nn.ReLU(), nn.Linear(width, width), nn.ReLU(), nn.Linear(width, width)
        )
        self.head = nn.Linear(width, num_classes)  # the classifier: MultiMix mixes its input

    def forward(self, x):
        h = self.stem(x)
        h = torch.relu(h + self.block(h))
        return self.head(h)


def main(argv: list[str] | None = None) -> float:
    parser = argparse.ArgumentParser()
    parser.add_argument("--epochs", type=int, default=30)
    args = parser.parse_args(argv)
    torch.manual_seed(0)

    digits = load_digits()
    x = torch.tensor(digits.data, dtype=torch.float32) / 16
    y = torch.tensor(digits.target)
    x_train, x_test, y_train, y_test = train_test_split(
        x, y, test_size=0.25, random_state=0, stratify=y
    )

    model = MyNet(64, 10)
    mixer = MultiMix(
        model, classifier="head", num_classes=10, generator=torch.Generator().manual_seed(0)
    )
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    for _ in range(args.epochs):
        model.train()
        for idx in torch.randperm(len(y_train)).split(64):
            logits, targets = mixer(x_train[idx], y_train[idx])  # (1000, 10) each
            loss = soft_cross_entropy(logits, targets)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    model.eval()
    with torch.no_grad():
        accuracy = (model(x_test).argmax(1) == y_test).float().mean().item()
    print(f"test accuracy after {args.epochs} epochs: {100 * accuracy:.1f}%")
    return accuracy


if __name__ == "__main__":
    main()
