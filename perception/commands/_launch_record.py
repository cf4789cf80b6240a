"""`perception launch --record OUT.mcap`: a recorder process (the `record` verb) added to a launch
file's processes for one run, connected to the endpoints that launch file's own processes
publish on, so a live pipeline is recorded by one flag (docs/recording.md).

Where the processes publish is read from their own arguments with their own parsers (the
`camera`, `fuse` and `replay` verbs' argparse, so defaults are the verbs' defaults): a camera binds
``--endpoint`` or the default endpoint of its index in ``--rig``; the fusion node binds
``--publish``; a player (`replay` without --offline) ``--camera-endpoints`` or the rig's default
camera endpoints. The rig is the fusion node's ``--rig`` (else a camera's or the player's). Other
commands are not looked into.

The recorder is never restarted (a restart would replace the file: ``respawn=False``) and is not
required (the pipeline runs on if it fails; the launcher then exits 1). Its closing summary
(messages received, written and dropped per topic) is printed after a ``SUMMARY_HEADER`` line into
its log; ``closing_summary`` reads it back for the launcher's own log.
"""
from __future__ import annotations

import argparse
import contextlib
import io
import sys
from dataclasses import dataclass, replace
from pathlib import Path

from perception import config as pconfig
from perception.launch import LaunchConfig, ProcessSpec

RECORDER_NAME = "record"


@dataclass(frozen=True)
class RecordOptions:
    out: str                        # the MCAP file
    foxglove: bool = True           # the Foxglove channels (record --no-foxglove when False)
    foxglove_images: str = "jpeg"   # jpeg, raw or none
    nice: int = 10                  # as the simulated cameras: the fusion node goes first when cores are short
    extra_args: tuple[str, ...] = ()  # more `perception record` arguments (e.g. --queue 512)


def _verb_argv(spec: ProcessSpec) -> list[str] | None:
    """The arguments after `perception.cli` of a process that runs a perception verb, else None."""
    cmd = spec.command
    if len(cmd) >= 4 and cmd[1:3] == ["-m", "perception.cli"]:
        return cmd[3:]
    return None


def _parse(parser: argparse.ArgumentParser, argv: list[str], where: str) -> argparse.Namespace:
    """parse_known_args without exiting or printing: a ConfigError naming the process instead."""
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err):
            args, _ = parser.parse_known_args(argv)
    except SystemExit:
        raise pconfig.ConfigError(f"{where}: cannot read its arguments: {err.getvalue().strip().splitlines()[-1:]}") from None
    return args


@dataclass(frozen=True)
class Publishers:
    rig: str
    endpoints: list[str]            # every endpoint a camera or the fusion node of the launch binds
    keys: str | None                # CurveZMQ keys of the launch (the recorder joins as the tools client)


def publishers(launch: LaunchConfig) -> Publishers:
    """Where the launch's cameras and fusion node publish, and their rig; ConfigError if it has neither."""
    from perception.commands import camera, fuse, replay

    endpoints: list[str] = []
    fusion_rig = camera_rig = None
    for spec in launch.processes:
        argv = _verb_argv(spec)
        if not argv:
            continue
        where = f"process {spec.name!r}"
        if argv[0] == "camera":
            a = _parse(camera.build_parser(), argv[1:], where)
            camera_rig = camera_rig or a.rig
            if a.endpoint:
                endpoints.append(a.endpoint)
            else:
                names = pconfig.load_rig(a.rig).camera_names
                if a.name not in names:
                    raise pconfig.ConfigError(f"{where}: camera {a.name!r} is not in rig {a.rig}")
                endpoints.append(pconfig.camera_endpoint(names.index(a.name)))
        elif argv[0] == "fuse":
            a = _parse(fuse.build_parser(), argv[1:], where)
            fusion_rig = fusion_rig or a.rig
            endpoints.append(a.publish)
        elif argv[0] == "replay":                     # the player publishes on the camera endpoints
            a = _parse(replay.build_parser(), argv[1:], where)
            if a.offline:
                continue
            camera_rig = camera_rig or a.rig
            n = len(pconfig.load_rig(a.rig or pconfig.DEFAULT_RIG).cameras)
            endpoints += list(a.camera_endpoints or [pconfig.camera_endpoint(i) for i in range(n)])
    if not endpoints:
        raise pconfig.ConfigError(f"launch {launch.name!r} has no `camera`, `fuse` or `replay` process: --record does not know "
                                  "where to listen (run `perception record -e ENDPOINT ...` instead)")
    rig_path = fusion_rig or camera_rig or str(pconfig.DEFAULT_RIG)
    return Publishers(rig=str(rig_path), endpoints=list(dict.fromkeys(endpoints)), keys=launch.keys)


def recorder_spec(launch: LaunchConfig, options: RecordOptions) -> ProcessSpec:
    """The recorder process for `launch`: `perception record OUT --rig RIG -e ENDPOINT...`."""
    pubs = publishers(launch)
    argv = ["record", str(Path(options.out).absolute()), "--rig", pubs.rig]
    for ep in pubs.endpoints:
        argv += ["-e", ep]
    if pubs.keys:
        argv += ["--keys", pubs.keys]
    if not options.foxglove:
        argv.append("--no-foxglove")
    else:
        argv += ["--foxglove-images", options.foxglove_images]
    argv += list(options.extra_args)
    name = RECORDER_NAME
    names = {p.name for p in launch.processes}
    while name in names:
        name = f"{name}_"
    return ProcessSpec(name=name, command=[sys.executable, "-m", "perception.cli", *argv], nice=options.nice,
                       required=False, respawn=False)


def with_recorder(launch: LaunchConfig, options: RecordOptions) -> tuple[LaunchConfig, ProcessSpec]:
    """`launch` with the recorder appended to its processes (started last, after the publishers)."""
    spec = recorder_spec(launch, options)
    return replace(launch, processes=[*launch.processes, spec]), spec


def closing_summary(log_path: str | Path, offset: int = 0) -> list[str] | None:
    """The recorder's closing summary lines from its log (written after byte `offset`: this run's
    part of a log that the launcher appends to), or None when it printed none (killed, crashed)."""
    from perception.commands.record import SUMMARY_HEADER

    try:
        with open(log_path, "rb") as f:
            f.seek(offset)
            text = f.read().decode(errors="replace")
    except OSError:
        return None
    lines = text.splitlines()
    starts = [i for i, line in enumerate(lines) if line.strip() == SUMMARY_HEADER]
    if not starts:
        return None
    out = []
    for line in lines[starts[-1] + 1:]:
        if not line.startswith("  "):
            break
        out.append(line.strip())
    return out
