"""Markdown table of ablation or A/B evals, each run relative to the first:

    python -m perception.tools.ablation_table RUNS_DIR NAME... [--per-class] [--extra FILE.json]...

reads RUNS_DIR/NAME/eval.json (written by `perception eval --json`). --per-class puts every
class's AP in the table instead of the car's alone (for changes aimed at some classes). Each
--extra FILE.json (another eval in every run's folder, e.g. on another rig) adds a column with
its mAP."""
from __future__ import annotations

import json
from pathlib import Path


def table(root: Path, names: list[str], per_class: bool = False, extra: tuple[str, ...] = ()) -> str:
    evals = [json.loads((root / name / "eval.json").read_text()) for name in names]
    extras = [[json.loads((root / name / f).read_text())["mAP"] for f in extra] for name in names]
    classes = list(evals[0]["per_class"]) if per_class else ["car"]
    rows = ["| run | mAP | NDS | AP@0.5 | AP@1 | AP@2 | AP@4 | " + " | ".join(f"{c} AP" for c in classes)
            + " | mATE | mAOE | mAP vs baseline |" + "".join(f" mAP {Path(f).stem} |" for f in extra),
            "|" + " --- |" * (10 + len(classes) + len(extra))]
    base = evals[0]["mAP"]
    for name, m, ex in zip(names, evals, extras):
        per = m["per_class"].values()
        ap_at = {t: sum(c[f"AP@{t}"] for c in per) / len(per) for t in ("0.5", "1.0", "2.0", "4.0")}
        rows.append(f"| {name} | {m['mAP']:.3f} | {m['NDS']:.3f} | {ap_at['0.5']:.3f} | {ap_at['1.0']:.3f} | "
                    f"{ap_at['2.0']:.3f} | {ap_at['4.0']:.3f} | "
                    + " | ".join(f"{m['per_class'][c]['AP']:.3f}" for c in classes)
                    + f" | {m['mATE']:.2f} | {m['mAOE']:.2f} | {m['mAP'] / base:.0%} |"
                    + "".join(f" {v:.3f} |" for v in ex))
    return "\n".join(rows)


if __name__ == "__main__":
    import argparse

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("root", type=Path)
    p.add_argument("names", nargs="+")
    p.add_argument("--per-class", action="store_true")
    p.add_argument("--extra", action="append", default=[], metavar="FILE.json")
    a = p.parse_args()
    print(table(a.root, a.names, per_class=a.per_class, extra=tuple(a.extra)))
