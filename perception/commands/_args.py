"""Argument plumbing the commands share: the log-level option, building a typed config from parsed
arguments, and the topic tools' endpoint options."""
from __future__ import annotations

import argparse
import os
import sys
from dataclasses import fields
from typing import TypeVar

T = TypeVar("T")


def add_log_level(p: argparse.ArgumentParser) -> None:
    p.add_argument("--log-level", default="INFO")


def config_from_args(cls: type[T], args: argparse.Namespace, **values) -> T:
    """An instance of the dataclass `cls` from the parsed arguments of the same names; `values`
    are given explicitly (arguments whose name or form differs from the field's)."""
    return cls(**{f.name: getattr(args, f.name) for f in fields(cls) if f.name not in values and hasattr(args, f.name)},
               **values)


def add_endpoint_args(p: argparse.ArgumentParser) -> None:
    """--endpoint/-e and --rig of the topic tools (echo, hz)."""
    from perception import config

    p.add_argument("--endpoint", "-e", action="append", metavar="E",
                   help="ZeroMQ endpoint to connect to, e.g. tcp://127.0.0.1:5560 or ipc:///tmp/x "
                        "(repeat for several; default: where launch/sim.yaml publishes TOPIC)")
    p.add_argument("--rig", default=str(config.DEFAULT_RIG),
                   help="rig file used to find a camera's default endpoint (default: %(default)s)")


def quiet_broken_pipe() -> None:
    """After `... | head` closed our stdout: stop writing, and keep the interpreter's final
    flush from printing a traceback."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except OSError:
        pass
