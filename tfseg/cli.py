"""What the command-line tools share: argument types, and user errors reported without a
traceback."""

import argparse
import sys

from tfseg.utils.errors import TfsegError


def parse_size(text, minimum=1):
    """argparse type: "HxW" -> (H, W), both integers >= `minimum`."""
    try:
        height, width = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected HxW such as 360x480, got {text!r}") from None
    if height < minimum or width < minimum:
        raise argparse.ArgumentTypeError(f"{text}: sizes must be at least "
                                         f"{minimum}x{minimum}")
    return height, width


def run_cli(main, argv=None):
    """Runs `main(argv)`; a `TfsegError` becomes `error: ...` on stderr and exit status 2 (or
    the error's own `exit_status`, e.g. 130 after SIGINT)."""
    try:
        return main(argv)
    except TfsegError as error:
        print(f"error: {error}", file=sys.stderr)
        return getattr(error, "exit_status", 2)
