"""The one exception type for mistakes a user can make (bad file, bad option, bad checkpoint).

The CLI prints its message as a single line and exits non-zero; anything else is a bug and keeps
its traceback.
"""


class GenieError(Exception):
    """A user-facing error: the message names the problem and, where there is one, the fix."""
