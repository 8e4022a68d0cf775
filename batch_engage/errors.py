"""Exceptions the library raises; ``cli`` turns each into a message and an exit code."""

from __future__ import annotations


class BatchEngageError(Exception):
    """Base class: the message is written for the person running the job."""


class UsageError(BatchEngageError):
    """Options or a config file that cannot work together. Nothing was sent."""


class InputFileError(BatchEngageError):
    """The input file as a whole cannot be read or used. Nothing was sent."""
