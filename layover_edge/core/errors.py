"""The one exception type the CLI turns into a one-line message instead of a traceback."""


class LayoverError(Exception):
    """A user-facing problem: bad input, a mismatched file, an unknown name."""
