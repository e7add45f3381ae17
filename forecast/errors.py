"""The one exception type for mistakes a user can fix."""


class ForecastError(Exception):
    """A problem with the user's files or options, explained in one line.

    The CLI prints the message without a traceback and exits non-zero; anything else that escapes is a bug.
    """
