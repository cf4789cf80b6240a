"""The `perception` command. Each verb lives in its own module under perception/commands/ and owns
its arguments; this file only maps verbs to modules, so `perception --help` stays cheap (no torch
import)."""
from __future__ import annotations

import importlib
import sys

# verb -> (module, one-line help). The module's main(argv) parses its own arguments.
VERBS: dict[str, tuple[str, str]] = {
    "launch": ("perception.commands.launch", "start the processes of a launch file and watch them (default launch/sim.yaml)"),
    "camera": ("perception.commands.camera", "run one camera reader: sim, video or images source"),
    "fuse": ("perception.commands.fuse", "run the fusion node: sync cameras, run the model, publish detections"),
    "echo": ("perception.commands.echo", "print the messages of a topic (--json for one JSON object per line)"),
    "hz": ("perception.commands.hz", "measure the rate of a topic"),
    "keys": ("perception.commands.keys", "create CurveZMQ key pairs (node, cameras, tools) and the allow-list: run with --keys DIR"),
    "train": ("perception.commands.train", "train the BEV ViT on the simulated world (checkpoints, resume)"),
    "eval": ("perception.commands.eval", "nuScenes-style metrics of a model on simulated test scenes"),
    "rigs": ("perception.commands.rigs", "camera rigs of the any-rig distribution: generate held-out rigs, check rigs, show training rigs"),
    "render": ("perception.commands.render", "render the simulated world into the rig's cameras (PNG) and time the renderer"),
    "export": ("perception.commands.export", "export the model to ONNX (static shapes, checked against TensorRT's native ops)"),
    "build-engine": ("perception.commands.build_engine", "build or reuse the cached compiled engine: Inductor package (CPU) or TensorRT (GPU)"),
    "record": ("perception.commands.record", "record cameras, ground truth, detections and status to an MCAP file"),
    "replay": ("perception.commands.replay", "replay a recording to the camera topics (--rate, --lockstep), or --offline"),
    "view": ("perception.commands.view", "live view in the Rerun viewer: cameras with projected boxes, BEV, latency (docs/live_view.md)"),
    "fleet": ("perception.commands.fleet", "offline replay of many drives on Ray (local or a cluster), pooled metrics, --compare two runs"),
    "bench": ("perception.commands.bench", "time each engine backend, the fusion step and a resolution sweep (JSON + plot)"),
}


def usage() -> str:
    width = max(map(len, VERBS))
    lines = ["usage: perception VERB [options]   (perception VERB --help for a verb's options)", "", "verbs:"]
    lines += [f"  {verb:<{width}}  {help_}" for verb, (_, help_) in VERBS.items()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(usage())
        return 0
    if argv[0] in ("-V", "--version"):
        from perception import __version__

        print(f"perception {__version__}")
        return 0
    verb, rest = argv[0], argv[1:]
    if verb not in VERBS:
        print(f"perception: unknown verb {verb!r}\n\n{usage()}", file=sys.stderr)
        return 2
    module = importlib.import_module(VERBS[verb][0])
    return int(module.main(rest) or 0)


if __name__ == "__main__":
    sys.exit(main())
