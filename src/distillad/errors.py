"""Errors the library raises on bad input; the CLI prints them without a stack trace."""

from __future__ import annotations

__all__ = ["DistilladError", "DataError", "CheckpointError", "TeacherWeightsError", "ConfigError", "TrainingError",
           "OutputError"]


class DistilladError(Exception):
    """Base class: a problem with the user's input, explained in the message."""


class DataError(DistilladError, ValueError):
    """An image, mask or folder cannot be used; the message names the file and the problem."""


class CheckpointError(DistilladError):
    """A run folder or checkpoint is missing, tampered with, or from an incompatible version."""


class TeacherWeightsError(DistilladError):
    """Genuine pretrained teacher weights are not available or do not match their known hash."""


class ConfigError(DistilladError, ValueError):
    """An option has a value the method does not accept."""


class TrainingError(DistilladError):
    """Training cannot go on (the loss or the model's outputs became NaN/inf)."""


class OutputError(DistilladError):
    """An output path cannot be used: not writable, full, or it would overwrite an input or a run's files."""
