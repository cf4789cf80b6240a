"""Markdown table of ablation evals: python -m perception.tools.ablation_table RUNS_DIR NAME..."""
from __future__ import annotations

import json
import sys
from pathlib import Path


def table(root: Path, names: list[str]) -> str:
    rows = ["| run | mAP | NDS | AP@0.5 | AP@1 | AP@2 | AP@4 | car AP | mATE | mAOE | mAP vs baseline |",
            "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    base = None
    for name in names:
        m = json.loads((root / name / "eval.json").read_text())
        per = m["per_class"].values()
        ap_at = {t: sum(c[f"AP@{t}"] for c in per) / len(per) for t in ("0.5", "1.0", "2.0", "4.0")}
        base = m["mAP"] if base is None else base
        rows.append(f"| {name} | {m['mAP']:.3f} | {m['NDS']:.3f} | {ap_at['0.5']:.3f} | {ap_at['1.0']:.3f} | "
                    f"{ap_at['2.0']:.3f} | {ap_at['4.0']:.3f} | {m['per_class']['car']['AP']:.3f} | "
                    f"{m['mATE']:.2f} | {m['mAOE']:.2f} | "
                    f"{m['mAP'] / base:.0%} |")
    return "\n".join(rows)


if __name__ == "__main__":
    print(table(Path(sys.argv[1]), sys.argv[2:]))
