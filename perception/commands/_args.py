"""Argument plumbing the commands share: the log-level option, building a typed config from parsed
arguments, and the topic tools' endpoint options."""
from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
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


def add_security_args(p: argparse.ArgumentParser) -> None:
    """--keys/--create-keys/--insecure (docs/security.md)."""
    p.add_argument("--keys", metavar="DIR", default=None,
                   help="CurveZMQ keys directory made by `perception keys`: encrypt and authenticate every "
                        "socket (default: $PERCEPTION_KEYS; unset = security off, loopback endpoints only)")
    p.add_argument("--create-keys", action="store_true",
                   help="create the keys directory for --rig first if it holds no keys (development setups)")
    p.add_argument("--insecure", action="store_true",
                   help="allow endpoints other than loopback without --keys (anyone on the network can read "
                        "frames and publish as a camera)")


def apply_security(args: argparse.Namespace, identity: str, prog: str) -> bool:
    """Turn on what the security options ask for, before any socket is made. False (after printing
    why) when the keys cannot be used."""
    from perception import security, transport

    transport.allow_insecure(bool(getattr(args, "insecure", False)))
    directory = security.keys_dir_from(args.keys)
    try:
        if directory is not None and getattr(args, "create_keys", False):
            security.ensure_keys(directory, getattr(args, "rig", None))
        security.install(directory, identity)
    except (security.SecurityError, OSError) as e:
        print(f"{prog}: {e}", file=sys.stderr)
        return False
    return True


def open_topic(args: argparse.Namespace, prog: str, rcvhwm: int):
    """The topic tools' start: endpoints for args.topic, security, a Subscriber with a receive
    queue of `rcvhwm`. -> (subscriber, endpoints), or None after printing why (exit code 2)."""
    from perception import security, topics
    from perception.transport import Subscriber, TransportError

    try:
        endpoints = topics.resolve_endpoints(args.topic, args.endpoint, args.rig)
    except (topics.UnknownTopic, ValueError) as e:
        print(f"{prog}: {e}", file=sys.stderr)
        return None
    if not apply_security(args, security.TOOLS, prog):
        return None
    try:
        return Subscriber(endpoints, [args.topic], rcvhwm=rcvhwm), endpoints
    except TransportError as e:
        print(f"{prog}: {e}", file=sys.stderr)
        return None


@contextmanager
def reading(sub) -> Iterator[None]:
    """Around a topic tool's read loop: Ctrl-C and a closed pipe (`| head`) end it quietly (the
    caller's code after the block runs), and the subscriber is closed either way."""
    try:
        yield
    except KeyboardInterrupt:
        pass
    except BrokenPipeError:
        quiet_broken_pipe()
    finally:
        sub.close()
