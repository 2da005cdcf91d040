"""Shared fixtures: small models with named layers, including a residual (non-sequential) one."""

from __future__ import annotations

import pytest
import torch
from hypothesis import HealthCheck, settings
from torch import nn

# Property tests run many small tensor ops; a wall-clock deadline would only measure machine load.
settings.register_profile("multimix", deadline=None, max_examples=40, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("multimix")

torch.set_num_threads(2)


class Encoder(nn.Module):
    """A two-layer MLP encoder."""

    def __init__(self, d_in: int = 6, d: int = 16) -> None:
        super().__init__()
        self.layer1 = nn.Linear(d_in, d)
        self.act = nn.ReLU()
        self.layer2 = nn.Linear(d, d)

    def forward(self, x):
        return self.layer2(self.act(self.layer1(x)))


class MLPNet(nn.Module):
    """encoder -> classifier ``fc``."""

    def __init__(self, d_in: int = 6, d: int = 16, k: int = 4) -> None:
        super().__init__()
        self.encoder = Encoder(d_in, d)
        self.fc = nn.Linear(d, k)

    def forward(self, x):
        return self.fc(self.encoder(x))


class ResidualNet(nn.Module):
    """Non-sequential: a skip connection around ``block`` and a functional ReLU between."""

    def __init__(self, d_in: int = 6, d: int = 16, k: int = 4) -> None:
        super().__init__()
        self.stem = nn.Linear(d_in, d)
        self.block = nn.Sequential(nn.Linear(d, d), nn.ReLU(), nn.Linear(d, d))
        self.head = nn.Linear(d, k)

    def forward(self, x):
        h = self.stem(x)
        h = torch.relu(h + self.block(h))
        return self.head(h)


@pytest.fixture
def mlp() -> MLPNet:
    torch.manual_seed(0)
    return MLPNet()


@pytest.fixture
def resnet() -> ResidualNet:
    torch.manual_seed(0)
    return ResidualNet()


@pytest.fixture(scope="session", autouse=True)
def _private_cache(tmp_path_factory):
    """Generated datasets go to a per-session cache (subprocesses inherit it), never the user's."""
    import os

    os.environ["MULTIMIX_CACHE"] = str(tmp_path_factory.mktemp("cache"))
    yield
