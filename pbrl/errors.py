"""The one exception type for user errors (bad input, unknown ids, missing files).

The CLI prints these as one line and exits with status 2; anything else is a bug and keeps its traceback.
"""


class PbrlError(ValueError):
    """A user-facing error: the message names the file or field and what was expected."""
