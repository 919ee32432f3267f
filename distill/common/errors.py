"""User-facing errors: the CLI prints these as one line and exits non-zero, no traceback."""


class DistillError(Exception):
    """A mistake in the user's input or environment, with a message that says what to do."""
