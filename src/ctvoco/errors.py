"""Exceptions that separate a user's mistake from a bug.

A :class:`UserError` is something the user can fix: a missing data directory, an unknown
backbone name, a malformed ``train.csv``. The command-line tools print it as one sentence
and exit with status 2, without a traceback. Every other exception is a bug and keeps its
traceback.
"""

from __future__ import annotations


class UserError(Exception):
    """A mistake the user can fix; the message says what to change."""


class DataError(UserError, ValueError):
    """Bad input data; the message names the file, row or key."""
