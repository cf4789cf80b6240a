"""`perception keys`: create the CurveZMQ key pairs of a rig (docs/security.md)."""
from __future__ import annotations

import argparse
import sys

from perception import config


def build_parser() -> argparse.ArgumentParser:
    from perception.security import DEFAULT_KEYS_DIR

    p = argparse.ArgumentParser(
        prog="perception keys",
        description="Create CurveZMQ key pairs for the fusion node, each camera of the rig and the tools "
                    "(echo, hz, the launcher's summary), the allow-list of client keys the servers accept, "
                    "and endpoints.yaml (which server key a client requires at each endpoint). Existing "
                    "key pairs are kept. Then run the processes with --keys DIR (or PERCEPTION_KEYS=DIR).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--dir", default=str(DEFAULT_KEYS_DIR), help="keys directory (created 0700; secrets 0600)")
    p.add_argument("--rig", default=str(config.DEFAULT_RIG), help="rig YAML: one key pair per camera")
    p.add_argument("--force", action="store_true", help="replace existing key pairs")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from perception import security

    try:
        rig = config.load_rig(args.rig)
    except config.ConfigError as e:
        print(f"perception keys: {e}", file=sys.stderr)
        return 2
    try:
        created = security.rig_keys(args.dir, args.rig, force=args.force)
    except (OSError, security.SecurityError) as e:
        print(f"perception keys: {e}", file=sys.stderr)
        return 1
    kept = len(rig.cameras) + 2 - len(created)
    print(f"{args.dir}: created {len(created)} key pair(s){' (' + ', '.join(created) + ')' if created else ''}, "
          f"kept {kept}; allow-list {args.dir}/{security.ALLOWED_DIR}, endpoints {args.dir}/{security.ENDPOINTS_FILE}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
