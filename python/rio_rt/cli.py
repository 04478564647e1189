"""The ``rio-rt`` command line. Each subcommand lives in its own module and registers itself here."""
from __future__ import annotations

import argparse
import sys


def build_parser() -> argparse.ArgumentParser:
    from rio_rt import __version__
    from rio_rt.bench import cli as bench_cli
    from rio_rt import cli_generate, demo, info, provenance

    parser = argparse.ArgumentParser(prog="rio-rt", description="rio_rt: MoE inference with latent reasoning")
    parser.add_argument("--version", action="version", version=f"rio_rt {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    demo.add_parser(sub)
    cli_generate.add_parser(sub)
    info.add_parser(sub)
    bench_cli.add_parser(sub)
    provenance.add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.run(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
