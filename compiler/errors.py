"""User-facing errors: one line that names the problem and the fix."""


class SqueezeError(Exception):
    """An error caused by the user's input; the CLI prints it without a traceback."""
