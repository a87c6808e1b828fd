"""The one error type for user mistakes.

The CLI prints its message as a single line on stderr and exits with code 2; any other exception
is our bug and keeps its traceback. Messages name the file, and the row or column, at fault.
"""


class RmpipeError(Exception):
    """A mistake in the user's input or settings (not a bug in rmpipe)."""

    def __init__(self, message: str):
        super().__init__(" ".join(str(message).split()))
