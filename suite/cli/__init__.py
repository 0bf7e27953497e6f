"""The click commands: parse options, build a spec, call the library, print."""

from mtbench.cli.main import main

__all__ = ["main"]
