"""``rio-rt bench ...`` subcommands."""
from __future__ import annotations

import argparse


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("bench", help="benchmarks")
    p.set_defaults(run=lambda args: p.print_help())
