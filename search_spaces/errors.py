"""The one exception type for bad input anywhere in the project.

Library code raises :class:`InvalidInputError` with a message that names the
offending value and what was expected; the command line prints that message and
exits with status 2, never a traceback.
"""


class InvalidInputError(ValueError):
    """A value given by the user (config, file, option, budget) is not acceptable."""
