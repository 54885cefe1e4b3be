"""Argument types shared by the command-line tools."""

import argparse


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
