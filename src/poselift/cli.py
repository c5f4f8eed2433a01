"""The ``poselift`` command line: one entry point, one module per subcommand in ``poselift.commands``."""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading

from poselift import __version__
from poselift.commands import (baseline, crops, demo, detect, evaluate, import_checkpoint, import_detections, info,
                               metrics, prepare, render, report, sync, train)
from poselift.errors import InputError

COMMANDS = (prepare, import_detections, info, render, crops, detect, baseline, metrics, train, evaluate, import_checkpoint,
            report, demo, sync)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="poselift",
        description="Monocular 3D human pose estimation: prepare datasets, detect 2D keypoints, lift them to 3D, evaluate.")
    parser.add_argument("--version", action="version", version=f"poselift {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in COMMANDS:
        module.add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    # OpenMP threads that spin while idle slow torch down 100x or more when cores are shared (parallel
    # Snakemake jobs, a busy CI machine); passive waiting costs nothing measurable on an idle machine.
    # Set before any command imports torch; an explicit setting in the environment wins.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    args = build_parser().parse_args(argv)
    # SIGTERM (Snakemake cancelling a job, Slurm's scancel, a pre-empted node) unwinds like Ctrl-C, so
    # temporary outputs are removed and worker processes stopped; Python's default would kill on the spot.
    previous = signal.signal(signal.SIGTERM, _terminated) if _main_thread() else None
    try:
        return int(args.run(args) or 0)
    except InputError as e:
        print(f"poselift: error: {e}", file=sys.stderr)
        return 2
    except Terminated:
        print("poselift: terminated", file=sys.stderr)
        return 143
    except KeyboardInterrupt:
        print("poselift: interrupted", file=sys.stderr)
        return 130
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


class Terminated(BaseException):
    """Raised in the main thread by SIGTERM (a BaseException, like KeyboardInterrupt: never caught as an error)."""


def _terminated(signum, frame):
    raise Terminated()


def _main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


if __name__ == "__main__":
    sys.exit(main())
