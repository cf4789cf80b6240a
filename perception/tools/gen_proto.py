"""Generate the Python message code in perception/v1 from proto/perception/v1/*.proto.

    python -m perception.tools.gen_proto            # regenerate in place
    python -m perception.tools.gen_proto --check    # exit 1 if the committed code is stale

Uses the protoc bundled with grpcio-tools (the `dev` extra), so no system protoc is needed.
"""
from __future__ import annotations

import argparse
import filecmp
import sys
import tempfile
from pathlib import Path

from perception.config import REPO_ROOT

PROTO_ROOT = REPO_ROOT / "proto"
OUT_DIR = REPO_ROOT / "perception" / "v1"


def proto_files() -> list[Path]:
    return sorted((PROTO_ROOT / "perception" / "v1").glob("*.proto"))


def generate(out_root: Path) -> list[Path]:
    """Run protoc into out_root (which receives perception/v1/*_pb2.py); returns the files."""
    try:
        from grpc_tools import protoc
    except ImportError:
        sys.exit("grpcio-tools is not installed: pip install -e '.[dev]'")
    import grpc_tools

    include = Path(grpc_tools.__file__).parent / "_proto"
    files = [str(p.relative_to(PROTO_ROOT)) for p in proto_files()]
    args = ["protoc", f"-I{PROTO_ROOT}", f"-I{include}", f"--python_out={out_root}", f"--pyi_out={out_root}", *files]
    if protoc.main(args) != 0:
        raise RuntimeError("protoc failed: " + " ".join(args))
    return sorted((out_root / "perception" / "v1").glob("*_pb2.py*"))


def stale_files() -> list[str]:
    """Names of generated files that differ from what protoc makes now (or are missing/extra)."""
    with tempfile.TemporaryDirectory() as tmp:
        fresh = {p.name: p for p in generate(Path(tmp))}
        committed = {p.name: p for p in OUT_DIR.glob("*_pb2.py*")}
        names = sorted(set(fresh) | set(committed))
        return [n for n in names if n not in fresh or n not in committed
                or not filecmp.cmp(fresh[n], committed[n], shallow=False)]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m perception.tools.gen_proto", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--check", action="store_true", help="only check that perception/v1 is up to date")
    args = p.parse_args(argv)
    if args.check:
        stale = stale_files()
        if stale:
            print("generated code is out of date: " + ", ".join(stale)
                  + "\nrun: python -m perception.tools.gen_proto", file=sys.stderr)
            return 1
        print("perception/v1 is up to date with proto/")
        return 0
    for f in generate(REPO_ROOT):
        print("wrote", f.relative_to(REPO_ROOT))
    return 0


if __name__ == "__main__":
    sys.exit(main())
