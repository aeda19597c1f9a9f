"""The one error family of hiergen: every problem a user can fix raises a HiergenError.

Its message says what is wrong and how to fix it. The command line prints it
as `hiergen: error: <message>` and exits with status 2; from Python, catch
HiergenError (or the specific subclass). Each subclass also derives from the
built-in type that describes it (ValueError for bad inputs, RuntimeError for
a video that cannot be written), so existing `except ValueError` code keeps
working. Exit statuses: 0 success, 2 a HiergenError, 130 interrupted; any
other exit (a traceback, status 1) is a bug to report.
"""
from __future__ import annotations

EXIT_OK, EXIT_ERROR, EXIT_INTERRUPTED = 0, 2, 130


class HiergenError(Exception):
    """A problem the user can fix; the message says how."""


class UsageError(HiergenError, ValueError):
    """Command-line options that are missing or do not go together."""


def as_user_error(e: Exception) -> HiergenError:
    """An error from deeper down (a config out of range, an unreadable file, a failed worker) as the
    user-facing error it is: the CLI prints its message instead of a traceback."""
    return e if isinstance(e, HiergenError) else HiergenError(str(e))
