"""The table of docs/any_rig.md: a model's metrics on rigs, relative to the nominal rig on the same
test scenes. Usage: python scripts/any_rig_table.py NOMINAL.json RIG.json ... (from `perception eval --json`)."""
from __future__ import annotations

import json
import sys

from perception.config import load_rig
from perception.rigs import rig_summary

CLASSES = ("car", "truck", "pedestrian", "cyclist", "traffic_cone")


def row(report: dict, nominal_map: float) -> str:
    s = rig_summary(load_rig(report["rig"]))
    f, h, p = s["hfov_deg"], s["height_m"], s["pitch_deg"]
    f, h, p = [tuple(round(x, 2) + 0.0 for x in r) for r in (f, h, p)]        # no "-0.0"
    gt = sum(report["per_class"][c]["num_gt"] for c in CLASSES)
    ap = " | ".join(f"{report['per_class'][c]['AP']:.3f}" for c in CLASSES)
    return (f"| {s['name']} | {s['cameras']} | {f[0]:.0f}–{f[1]:.0f}° | {h[0]:.2f}–{h[1]:.2f} m | {p[0]:.1f}–{p[1]:.1f}° "
            f"| {gt} | {report['mAP']:.3f} | {report['NDS']:.3f} | {ap} | {100 * report['mAP'] / nominal_map:.0f} % |")


def main(paths: list[str]) -> None:
    reports = [json.loads(open(p).read()) for p in paths]
    scenes = {(r["scenes"], r["seed"]) for r in reports}
    if len(scenes) != 1:
        raise SystemExit(f"reports differ in (scenes, seed): {scenes}")
    print(f"| rig | cameras | FOV | height | pitch down | truth boxes | mAP | NDS | {' | '.join(CLASSES)} | of nominal mAP |")
    print("| --- " * (10 + len(CLASSES) - 1) + "|")
    for r in reports:
        print(row(r, reports[0]["mAP"]))


if __name__ == "__main__":
    main(sys.argv[1:])
