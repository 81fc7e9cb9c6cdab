"""Sub-commands of the ``gpudl`` command line, one module each."""


class CommandError(Exception):
    """A failure to report as one line on stderr with exit code 1."""
