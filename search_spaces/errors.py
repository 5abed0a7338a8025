"""The exception types users see.

Library code raises :class:`NasError` (usually its subclass :class:`InvalidInputError`)
with a message that names the offending value and what was expected; the command
line prints that message and exits with status 2, never a traceback.
"""


class NasError(Exception):
    """A failure the user can act on, explained in one message."""


class InvalidInputError(NasError, ValueError):
    """A value given by the user (config, file, option, budget) is not acceptable."""
