"""The ``devloop`` command line: thin click adapters over the library (:mod:`devloop.cli.app`).

Each command parses its options, calls one library function and renders what it returns.
Heavy libraries (polars, duckdb, pyarrow) are imported inside commands, never at module level,
so ``devloop --help`` stays instant; ``devloop run`` beside a running collector does not even
import click (:mod:`devloop.cli.fastrun`).
"""

from __future__ import annotations

import sys

TYPE_CHECKING = False
if TYPE_CHECKING:
    from devloop.cli.app import DevloopGroup, cli

__all__ = ["DevloopGroup", "cli", "main"]


def main() -> None:
    """Console-script entry point."""
    args = sys.argv[1:]
    if args[:1] == ["run"]:
        from devloop.cli.fastrun import fast_run

        code = fast_run(args[1:])
        if code is not None:
            sys.exit(code)
    from devloop.cli.app import cli

    cli(prog_name="devloop")


def __getattr__(name: str) -> object:
    if name in ("cli", "DevloopGroup"):
        from devloop.cli import app

        return getattr(app, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
