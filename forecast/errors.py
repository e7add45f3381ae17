"""The one exception type for mistakes a user can fix."""


class ForecastError(Exception):
    """A problem with the user's files or options, explained in one line.

    The CLI prints the message without a traceback and exits non-zero; anything else that escapes is a bug.
    """


class IncompatibleWeights(ForecastError):
    """A saved model's weights do not fit the network that its configuration builds now, so training cannot continue
    from them (a retrain trains a fresh candidate instead)."""


class ResumeRefused(ForecastError):
    """An interrupted run's checkpoint cannot be continued as asked; the checkpoint itself is left as it was."""
