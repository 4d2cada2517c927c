"""The one exception type that the CLI turns into a single line on stderr and exit code 2.

Raise :class:`GanforgeError` for anything a user can fix (a bad argument, file, config or
checkpoint). Everything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class GanforgeError(Exception):
    """A problem with user input, described in one line."""


class ConfigError(GanforgeError):
    """A config key, value or file that cannot be used."""


class DataError(GanforgeError):
    """A dataset name or data file that cannot be used."""


class CheckpointError(GanforgeError):
    """A run folder or checkpoint that cannot be loaded."""


class WriteError(GanforgeError, OSError):
    """A file could not be written for a reason the user can fix (disk full, no permission).

    Also an OSError, so code that catches OSError around writes keeps working."""


class GanforgeWarning(UserWarning):
    """Something the user should know that did not stop the work; the CLI prints it as one line."""


def suggest(name: str, choices: Iterable[str]) -> str:
    """' (did you mean X?)' when a close match exists, else ''."""
    close = difflib.get_close_matches(name, list(choices), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""
