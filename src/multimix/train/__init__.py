"""Training: configuration, the loop, checkpoints, and comparisons over methods and seeds."""

from multimix.train.checkpoint import CheckpointError
from multimix.train.config import ConfigError, TrainConfig
from multimix.train.trainer import train

__all__ = ["TrainConfig", "ConfigError", "CheckpointError", "train"]
