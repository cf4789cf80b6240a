"""Writes the regression drive tests/data/sim_drive.mcap (3 s of simulated world 11 in the default
6-camera rig at 10 Hz, with ground truth; docs/recording.md). Run from the repository root:

    python scripts/make_regression_drive.py            # then regenerate the reference:
    perception fuse --backend torch --threads 1 &
    perception replay tests/data/sim_drive.mcap --lockstep --ref tests/data/sim_drive_ref.json --update-ref
"""
from __future__ import annotations

import sys
from pathlib import Path

from perception.sim.drive import write_sim_drive

if __name__ == "__main__":
    out = Path(sys.argv[1]) if len(sys.argv) > 1 else Path("tests/data/sim_drive.mcap")
    out.parent.mkdir(parents=True, exist_ok=True)
    info = write_sim_drive(out, seconds=3.0, rate_hz=10.0, seed=11)
    print(f"wrote {out}: {info['frames']} frames, {info['truth']} ground truth, {out.stat().st_size} bytes")
