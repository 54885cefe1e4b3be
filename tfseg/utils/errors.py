"""User-facing errors: reported in one line without a traceback (`tfseg.cli.run_cli`)."""


class TfsegError(Exception):
    """A problem with the user's input (config, data, files): reported in one line, exit 2."""


class ConfigError(TfsegError):
    """A configuration file or override that does not match the schema."""
