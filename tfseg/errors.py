"""User-facing errors and the CLI wrapper that reports them without a traceback."""

import sys


class TfsegError(Exception):
    """A problem with the user's input (config, data, files): reported in one line, exit 2."""


class ConfigError(TfsegError):
    """A configuration file or override that does not match the schema."""


def run_cli(main, argv=None):
    """Runs `main(argv)`; a `TfsegError` becomes `error: ...` on stderr and exit status 2 (or
    the error's own `exit_status`, e.g. 130 after SIGINT)."""
    try:
        return main(argv)
    except TfsegError as error:
        print(f"error: {error}", file=sys.stderr)
        return getattr(error, "exit_status", 2)
