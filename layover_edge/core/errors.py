"""The one exception type the CLI turns into a one-line message instead of a traceback, and the
exit codes of every verb: what a script calling ``layover-edge`` can tell apart."""
from __future__ import annotations

import errno

EXIT_BAD_INPUT = 2       # a LayoverError or an argument argparse refused
EXIT_OS_ERROR = 3        # the operating system refused: no such file, not a directory, read-only, ...
EXIT_NO_SPACE = 4        # the disk (or quota) is full: free space and run again; train and features resume
EXIT_SERVER_FAILED = 5   # serve: tritonserver did not start, or it or a model stopped while serving
EXIT_INTERRUPTED = 130   # Ctrl-C (128 + SIGINT)
EXIT_BROKEN_PIPE = 141   # the reader of stdout went away (128 + SIGPIPE, as `cmd | head` expects)

NO_SPACE = (errno.ENOSPC, errno.EDQUOT)


class LayoverError(Exception):
    """A user-facing problem: bad input, a mismatched file, an unknown name."""

    exit_code = EXIT_BAD_INPUT


class ServerFailed(LayoverError):
    """The server, not its input, failed: a supervisor may restart it."""

    exit_code = EXIT_SERVER_FAILED


class NotFound(LayoverError):
    """A file or folder the user named does not exist: exit 3, the operating system's "no such file"."""

    exit_code = EXIT_OS_ERROR


def os_error_text(e: OSError) -> str:
    """One line for an OSError: what the system said and the path it said it about."""
    what = e.strerror or str(e) or type(e).__name__
    where = " -> ".join(str(f) for f in (e.filename, e.filename2) if f is not None)
    hint = " (free some space and run again: train and features resume where they stopped)" \
        if e.errno in NO_SPACE else ""
    return f"{what}: {where}{hint}" if where else f"{what}{hint}"


def os_exit_code(e: OSError) -> int:
    return EXIT_NO_SPACE if e.errno in NO_SPACE else EXIT_OS_ERROR
