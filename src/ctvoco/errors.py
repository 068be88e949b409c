"""Exceptions that separate a user's mistake from a bug.

A :class:`UserError` is something the user can fix: a missing data directory, an unknown
backbone name, a malformed ``train.csv``. The command-line tools print it as one sentence
and exit with status 2, without a traceback. Every other exception is a bug and keeps its
traceback.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Iterable


class UserError(Exception):
    """A mistake the user can fix; the message says what to change."""


class DataError(UserError, ValueError):
    """Bad input data; the message names the file, row or key."""


class ArgumentError(UserError, ValueError):
    """A value the library cannot take for one of its arguments; the message starts with it.

    The library names only its own argument (``pooling``); a caller that knows where the
    value came from places it there with :meth:`within` (the command line turns
    ``pooling`` into the config key ``model.module.pooling``).

    Args:
        argument: The argument's name, with the sections above it (``preprocess.windows``).
        detail: The rest of the message, written right after the name
            (``" must be one of avg, flatten; got 'x'"`` or ``"=0 must be ..."``).
    """

    def __init__(self, argument: str, detail: str) -> None:
        super().__init__(f"{argument}{detail}")
        self.argument = argument
        self.detail = detail

    def within(self, section: str) -> ArgumentError:
        """The same error for the argument inside ``section`` (``model.module``)."""
        return ArgumentError(
            f"{section}.{self.argument}" if section else self.argument, self.detail
        )


def look_up_option(name: str, value: object, options: Iterable[str]) -> str:
    """Return ``value`` when it is one of ``options``; otherwise refuse it, with a suggestion.

    Args:
        name: The argument the value was given for, named in the error (``pooling``).
        value: What the caller passed.
        options: The accepted spellings.

    Returns:
        ``value``, known to be one of ``options``.

    Raises:
        ArgumentError: Naming the argument, the value, the options and the closest option.
    """
    choices = tuple(options)
    if isinstance(value, str) and value in choices:
        return value
    close = difflib.get_close_matches(str(value), choices, n=1)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    raise ArgumentError(name, f" must be one of {', '.join(choices)}; got {value!r}{hint}")


def is_finite_number(value: object) -> bool:
    """A finite int or float (not a bool)."""
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def is_whole_number(value: object) -> bool:
    """An int (not a bool)."""
    return isinstance(value, int) and not isinstance(value, bool)
