"""Regression replay (docs/recording.md): the Detections of a drive replayed in lock-step through
the fusion node, compared message by message with a stored reference, plus a timing budget on the
engine time the messages report (as openpilot's model replay does).

The reference is one JSON file: the drive it belongs to, the per-field tolerances, the timing
budget and every Detections message (protobuf JSON mapping, so a change shows in a diff). Compared:
every field except the ignored ones (IGNORED: wall-clock timings and frame ages). Integers,
strings, classes and the message/object counts must match exactly; floats within the tolerances
stored with the reference (on the machine that wrote it, eager PyTorch on the CPU reproduces them
exactly; the tolerances are for other CPUs' float rounding).
"""
from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

FORMAT = "perception.regression/1"
IGNORED = ("timings", "frames[].age_ms")     # wall clock: differ on every run


@dataclass
class Tolerances:
    """Absolute tolerances of the float fields (units of the field)."""
    score: float = 1e-4               # detection score
    position_m: float = 1e-3          # center, size
    yaw_rad: float = 1e-3             # yaw (difference wrapped to [-pi, pi])
    velocity_mps: float = 1e-3


@dataclass
class TimingBudget:
    """Engine time (Detections.timings.inference_ms) a run may take; generous: a regression of
    several times, not noise, should fail it."""
    inference_ms_mean: float = 500.0
    inference_ms_max: float = 5000.0


@dataclass
class Difference:
    message: int                       # index in the drive's Detections
    field: str                         # e.g. "objects[3].center.x"
    ref: object
    got: object
    delta: float | None = None         # |got - ref| for numbers


@dataclass
class RegressionReport:
    messages_ref: int = 0
    messages_got: int = 0
    differences: list[Difference] = field(default_factory=list)
    inference_ms_mean: float = 0.0
    inference_ms_max: float = 0.0
    budget: TimingBudget = field(default_factory=TimingBudget)
    over_budget: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return not self.differences and not self.over_budget and self.messages_ref == self.messages_got

    def lines(self, limit: int = 20) -> list[str]:
        out = [f"regression: {self.messages_got} Detections against {self.messages_ref} in the reference: "
               + ("PASS" if self.passed else "FAIL"),
               f"engine time: mean {self.inference_ms_mean:.1f} ms (budget {self.budget.inference_ms_mean:g}), "
               f"max {self.inference_ms_max:.1f} ms (budget {self.budget.inference_ms_max:g})"]
        out += [f"over budget: {o}" for o in self.over_budget]
        if self.differences:
            by_field: dict[str, list[Difference]] = {}
            for d in self.differences:
                key = _generic(d.field)
                by_field.setdefault(key, []).append(d)
            out.append("fields that moved (count, largest change):")
            for key, ds in sorted(by_field.items()):
                deltas = [d.delta for d in ds if d.delta is not None]
                worst = f", max |delta| {max(deltas):.3g}" if deltas else ""
                out.append(f"  {key}: {len(ds)}{worst}")
            out.append(f"first {min(limit, len(self.differences))} of {len(self.differences)}:")
            out += [f"  message {d.message} {d.field}: {d.ref!r} -> {d.got!r}"
                    + (f" (delta {d.delta:.3g})" if d.delta is not None else "") for d in self.differences[:limit]]
        return out


def _generic(path: str) -> str:
    """objects[3].center.x -> objects[].center.x"""
    import re

    return re.sub(r"\[\d+\]", "[]", path)


# ------------------------------------------------------------------------------------------ files

def without_ignored(msg):
    """A copy of a Detections without the IGNORED fields (cleared / zero)."""
    out = type(msg)()
    out.CopyFrom(msg)
    out.ClearField("timings")
    for f in out.frames:
        f.age_ms = 0.0
    return out


def write_reference(path: str | Path, messages: list, *, drive: str = "", tolerances: Tolerances | None = None,
                    budget: TimingBudget | None = None) -> None:
    """Store `messages` (Detections, in recording time; IGNORED fields left out) as the reference;
    checks that the file reads back to the same messages (no precision lost in JSON)."""
    from google.protobuf.json_format import MessageToDict

    messages = [without_ignored(m) for m in messages]
    doc = {"format": FORMAT, "drive": drive, "ignored": list(IGNORED),
           "tolerances": asdict(tolerances or Tolerances()), "budget": asdict(budget or TimingBudget()),
           "detections": [MessageToDict(m, preserving_proto_field_name=True) for m in messages]}
    Path(path).write_text(json.dumps(doc, indent=1, sort_keys=True) + "\n")
    back = read_reference(path)[0]
    if back != list(messages):
        raise ValueError(f"{path}: the reference does not read back to the messages written")


def read_reference(path: str | Path, max_messages: int = 1_000_000) -> tuple[list, Tolerances, TimingBudget]:
    """(Detections, tolerances, budget) of a reference file; ValueError naming what is wrong."""
    from google.protobuf.json_format import ParseDict, ParseError

    from perception.v1 import detections_pb2

    try:
        doc = json.loads(Path(path).read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: not JSON ({e})") from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT or not isinstance(doc.get("detections"), list):
        raise ValueError(f"{path}: not a regression reference (format {FORMAT})")
    if len(doc["detections"]) > max_messages:
        raise ValueError(f"{path}: {len(doc['detections'])} messages (at most {max_messages})")
    try:
        tol = Tolerances(**{k: float(v) for k, v in (doc.get("tolerances") or {}).items()})
        budget = TimingBudget(**{k: float(v) for k, v in (doc.get("budget") or {}).items()})
        msgs = [ParseDict(d, detections_pb2.Detections()) for d in doc["detections"]]
    except (TypeError, ValueError, ParseError) as e:
        raise ValueError(f"{path}: {e}") from None
    for name, v in {**asdict(tol), **asdict(budget)}.items():
        if not (math.isfinite(v) and v >= 0):
            raise ValueError(f"{path}: {name} must be a finite number >= 0, got {v}")
    return msgs, tol, budget


# ------------------------------------------------------------------------------------------ compare

def compare(ref: list, got: list, tolerances: Tolerances | None = None,
            budget: TimingBudget | None = None) -> RegressionReport:
    """Message by message (in order), field by field, except IGNORED."""
    tol = tolerances or Tolerances()
    report = RegressionReport(messages_ref=len(ref), messages_got=len(got), budget=budget or TimingBudget())
    diffs = report.differences
    if len(ref) != len(got):
        diffs.append(Difference(min(len(ref), len(got)), "message count", len(ref), len(got), None))
    for i, (r, g) in enumerate(zip(ref, got)):
        for name in ("stamp_ns", "sequence", "model_name", "backend"):
            if getattr(r, name) != getattr(g, name):
                diffs.append(Difference(i, name, getattr(r, name), getattr(g, name), None))
        if list(r.missing_cameras) != list(g.missing_cameras):
            diffs.append(Difference(i, "missing_cameras", list(r.missing_cameras), list(g.missing_cameras), None))
        rf = [(f.camera_name, f.sequence, f.capture_end_ns) for f in r.frames]
        gf = [(f.camera_name, f.sequence, f.capture_end_ns) for f in g.frames]
        if rf != gf:
            diffs.append(Difference(i, "frames", rf, gf, None))
        if len(r.objects) != len(g.objects):
            diffs.append(Difference(i, "objects (count)", len(r.objects), len(g.objects), None))
        for j, (a, b) in enumerate(zip(r.objects, g.objects)):
            p = f"objects[{j}]"
            for name in ("object_class", "track_id", "visible_pixels"):
                if getattr(a, name) != getattr(b, name):
                    diffs.append(Difference(i, f"{p}.{name}", getattr(a, name), getattr(b, name), None))
            checks = [("score", a.score, b.score, tol.score),
                      ("yaw", 0.0, math.remainder(b.yaw - a.yaw, 2 * math.pi), tol.yaw_rad)]
            for vec, t in (("center", tol.position_m), ("size", tol.position_m), ("velocity", tol.velocity_mps)):
                for axis in "xyz":
                    checks.append((f"{vec}.{axis}", getattr(getattr(a, vec), axis), getattr(getattr(b, vec), axis), t))
            for name, x, y, t in checks:
                delta = abs(y - x)
                if not delta <= t:                # NaN fails too
                    ref_v = a.yaw if name == "yaw" else x
                    got_v = b.yaw if name == "yaw" else y
                    diffs.append(Difference(i, f"{p}.{name}", ref_v, got_v, delta))
    times = [m.timings.inference_ms for m in got]
    if times:
        report.inference_ms_mean = sum(times) / len(times)
        report.inference_ms_max = max(times)
    b = report.budget
    if report.inference_ms_mean > b.inference_ms_mean:
        report.over_budget.append(f"mean engine time {report.inference_ms_mean:.1f} ms > {b.inference_ms_mean:g} ms")
    if report.inference_ms_max > b.inference_ms_max:
        report.over_budget.append(f"max engine time {report.inference_ms_max:.1f} ms > {b.inference_ms_max:g} ms")
    return report
