"""Weight lineage: does a checkpoint fit a linear blend of candidate parents?"""
from __future__ import annotations

import argparse


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("provenance", help="test whether a checkpoint is a blend of candidate parents")
    p.set_defaults(run=lambda args: p.print_help())
