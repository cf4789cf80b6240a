"""Offline replay of many drives on Ray (`perception fleet`, docs/fleet.md).

A drive is one unit of work: its frames go through one synchronizer in order, so the work is an
actor pool over drive paths (Ray Data `from_items(...).map_batches(ReplayActor, batch_size=1)`),
each actor building its engine once and running OfflineReplay over one drive at a time. Every
drive's outputs land in OUT/drives/<id>/ (detections MCAP, matches npz, metrics JSON, then
done.json, each written to a temporary name and renamed), so a killed run leaves no half-done
drive marked done and a rerun into the same OUT skips the drives already done. The run's metrics
come from the pooled per-class matches of all drives (metrics.pool_matches): the numbers that
evaluating every drive in one process gives, not an average of per-drive mAPs.

Ray is imported only inside run_fleet (the `fleet` extra); everything else here runs without it.
"""
from __future__ import annotations

import glob
import hashlib
import io
import json
import logging
import os
import socket
import time
import warnings
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from perception import config as pconfig
from perception.metrics import DIST_THRESHOLDS, ClassMatches, all_matches, evaluate_matches, pool_matches
from perception.replay import ReplayConfig

log = logging.getLogger("perception.fleet")

FORMAT = 1                          # of done.json / summary.json
MANIFEST_SUFFIXES = (".txt", ".list", ".manifest")
DONE, MATCHES, METRICS, DETECTIONS = "done.json", "matches.npz", "metrics.json", "detections.mcap"


class FleetError(pconfig.ConfigError):
    """A fleet run that cannot start (bad arguments, an OUT folder of another configuration)."""


@dataclass
class FleetConfig:
    """What every worker needs to replay a drive; the same on a laptop and a cluster."""
    replay: ReplayConfig = field(default_factory=ReplayConfig)
    rig: str | None = None              # open_drive's rig (own recordings: default rig when None)
    mapping: str | None = None          # open_drive's mapping (foreign drives)
    write_detections: bool = True

    def to_dict(self) -> dict:
        return asdict(self)

    @staticmethod
    def from_dict(d: dict) -> "FleetConfig":
        return FleetConfig(ReplayConfig(**d["replay"]), d.get("rig"), d.get("mapping"), d.get("write_detections", True))


# ------------------------------------------------------------------------------------------ inputs

@dataclass
class DriveList:
    paths: list[Path]                                   # unique, absolute, in a fixed order
    bad: list[dict] = field(default_factory=list)       # {"path", "error"} of inputs that name no drive


def expand_drives(specs: Iterable[str]) -> DriveList:
    """Drive paths from paths, globs and manifests (a .txt/.list/.manifest file: one path or glob a
    line, # comments, relative to the manifest's folder). Globs are sorted; duplicates are dropped."""
    out = DriveList([])
    seen: set[Path] = set()

    def add(p: Path) -> None:
        p = p.resolve()
        if p not in seen:
            seen.add(p)
            out.paths.append(p)

    def expand(spec: str, base: Path | None, depth: int) -> None:
        spec = spec.strip()
        if not spec:
            return
        path = Path(spec) if base is None or Path(spec).is_absolute() else base / spec
        if glob.has_magic(str(path)):
            hits = sorted(glob.glob(str(path), recursive=True))
            if not hits:
                out.bad.append({"path": str(path), "error": "the glob matches nothing"})
            for h in hits:
                expand(h, None, depth)
            return
        if path.is_file() and path.suffix in MANIFEST_SUFFIXES:
            if depth > 4:
                out.bad.append({"path": str(path), "error": "manifests nested too deep"})
                return
            try:
                lines = path.read_text().splitlines()
            except (OSError, UnicodeDecodeError) as e:
                out.bad.append({"path": str(path), "error": f"unreadable manifest: {e}"})
                return
            for line in lines:
                line = line.split("#", 1)[0]
                expand(line, path.parent, depth + 1)
            return
        if not path.exists():
            out.bad.append({"path": str(path), "error": "does not exist"})
            return
        add(path)

    for s in specs:
        expand(str(s), None, 0)
    return out


def drive_id(path: Path) -> str:
    """The drive's output folder name: its name plus a hash of its absolute path (names repeat across folders)."""
    digest = hashlib.sha256(str(Path(path).resolve()).encode()).hexdigest()[:10]
    stem = "".join(c if c.isalnum() or c in "-_." else "_" for c in Path(path).stem)[:60]
    return f"{stem}-{digest}"


def source_stamp(path: Path) -> dict:
    """Size and modification time: a drive replaced since its outputs were written is done again."""
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file())
        return {"size": sum(p.stat().st_size for p in files), "mtime_ns": max((p.stat().st_mtime_ns for p in files), default=0)}
    st = path.stat()
    return {"size": st.st_size, "mtime_ns": st.st_mtime_ns}


def run_fingerprint(config: FleetConfig) -> dict:
    """What decides a drive's results (not the thread count or where it runs): an OUT folder keeps one."""
    model = Path(config.replay.model)
    files = {}
    if model.is_dir():
        for p in sorted(model.iterdir()):
            if p.is_file() and p.suffix in (".yaml", ".safetensors", ".onnx", ".pt2", ".engine"):
                files[p.name] = p.stat().st_size if p.stat().st_size > 1 << 20 else hashlib.sha256(p.read_bytes()).hexdigest()[:16]
    r = config.replay
    return {"model": str(model.resolve()), "model_files": files, "backend": r.backend, "rig": config.rig, "mapping": config.mapping,
            "max_span_ms": r.max_span_ms, "timeout_ms": r.timeout_ms, "min_cameras": r.min_cameras,
            "score_threshold": r.score_threshold, "tracking": r.tracking, "allow_random_init": r.allow_random_init}


# ------------------------------------------------------------------------------------------ files

def write_atomic(path: Path, data: bytes) -> None:
    """Write to a temporary name in the same folder, then rename: readers never see half a file."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def write_json(path: Path, obj: Any) -> None:
    write_atomic(path, (json.dumps(obj, indent=1, default=_json_default) + "\n").encode())


def _json_default(o: Any) -> Any:
    if isinstance(o, (np.floating, np.integer)):
        return o.item()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"{type(o).__name__} is not JSON serialisable")


def save_matches(path: Path, matches: dict[str, ClassMatches]) -> None:
    arrays: dict[str, np.ndarray] = {}
    for cls, m in matches.items():
        arrays[f"{cls}/scores"] = m.scores
        arrays[f"{cls}/errors"] = m.errors
        arrays[f"{cls}/num_gt"] = np.array(m.num_gt, np.int64)
        for t in DIST_THRESHOLDS:
            arrays[f"{cls}/tp@{t}"] = m.tp[t]
    buf = io.BytesIO()
    np.savez(buf, **arrays)         # type: ignore[arg-type]
    write_atomic(path, buf.getvalue())


def load_matches(path: Path, classes: Iterable[str]) -> dict[str, ClassMatches]:
    """A drive's matches; ValueError when the file lacks a class or is damaged."""
    try:
        with np.load(path) as z:
            return {c: ClassMatches(z[f"{c}/scores"].astype(np.float64), {t: z[f"{c}/tp@{t}"].astype(bool) for t in DIST_THRESHOLDS},
                                    z[f"{c}/errors"].astype(np.float64), int(z[f"{c}/num_gt"])) for c in classes}
    except (KeyError, OSError, EOFError) as e:
        raise ValueError(f"{path}: damaged matches file ({e})") from None


def public_metrics(m: dict) -> dict:
    return {k: v for k, v in m.items() if not k.startswith("_")}


# ------------------------------------------------------------------------------------------ one drive

class DriveRunner:
    """Replays drives one after another with one engine, built once (a Ray actor holds one)."""

    def __init__(self, config: FleetConfig, engine=None):
        from perception.model.config import load_model_config
        from perception.model.weights import CONFIG_FILE
        from perception.runtime import create_engine

        self.config = config
        self.classes = tuple(load_model_config(Path(config.replay.model) / CONFIG_FILE).classes)
        t0 = time.perf_counter()
        r = config.replay
        self.engine = engine if engine is not None else create_engine(r.backend, r.model, threads=r.threads,
                                                                       allow_random_init=r.allow_random_init)
        self.engine_load_s = time.perf_counter() - t0
        self.host = f"{socket.gethostname()}:{os.getpid()}"

    def process(self, path: str | Path, out_root: str | Path) -> dict:
        """Replay one drive into out_root/drives/<id>/ and return its record; never raises for a bad drive."""
        path = Path(path)
        rec: dict[str, Any] = {"format": FORMAT, "path": str(path), "id": drive_id(path), "status": "failed",
                               "worker": self.host, "engine_load_s": self.engine_load_s}
        t0 = time.perf_counter()
        try:
            self._process(path, Path(out_root) / "drives" / rec["id"], rec)
        except Exception as e:      # a corrupt drive or a bug on one drive: reported, the run goes on
            rec["status"] = "failed"
            rec["error"] = f"{type(e).__name__}: {e}"
            log.warning("%s: skipped: %s", path, rec["error"])
        rec["wall_s"] = time.perf_counter() - t0
        return rec

    def _process(self, path: Path, out: Path, rec: dict) -> None:
        from perception.drives import open_drive
        from perception.replay import OfflineReplay, write_detections

        stamp = source_stamp(path)
        out.mkdir(parents=True, exist_ok=True)
        drive = open_drive(path, mapping=self.config.mapping, rig=self.config.rig)
        tmp_dets = out / f".{DETECTIONS}.{os.getpid()}.tmp"
        writer, write = write_detections(tmp_dets) if self.config.write_detections else (None, None)
        try:
            replay = OfflineReplay(self.config.replay, engine=self.engine, rig=drive.rig)
            summary = replay.run(drive, on_detections=write)
        except BaseException:
            if writer is not None:
                writer.close()
                tmp_dets.unlink(missing_ok=True)
            raise
        finally:
            drive.close()
        if writer is not None:
            writer.close()
            os.replace(tmp_dets, out / DETECTIONS)
        if summary.frames == 0:
            raise ValueError("no camera frames of the rig in the drive")
        rec.update({"source": stamp, "frames": summary.frames, "sets": summary.sets, "partial_sets": summary.partial_sets,
                    "detections": summary.detections, "truth": summary.truth, "replay_s": summary.seconds,
                    "truncated": summary.truncated, "rejected": summary.rejected, "sync_rejected": summary.sync_rejected,
                    "drive_rejected": summary.drive_rejected, "mAP": None, "NDS": None, "paired_sets": len(summary.pairs),
                    "outputs": [DETECTIONS] if writer is not None else []})
        if summary.truth:
            dets = [b for d, _ in summary.pairs for b in d]
            gts = [b for _, g in summary.pairs for b in g]
            matches = all_matches(dets, gts, self.classes)
            metrics = public_metrics(evaluate_matches(matches, self.classes))
            save_matches(out / MATCHES, matches)
            write_json(out / METRICS, {"path": str(path), **metrics})
            rec.update(mAP=metrics["mAP"], NDS=metrics["NDS"])
            rec["outputs"] += [MATCHES, METRICS]
        rec["status"] = "done"
        write_json(out / DONE, rec)     # last: the drive counts as done only with all its outputs in place


def done_record(out_root: Path, path: Path) -> dict | None:
    """The record of a drive already done in out_root with the same source file, else None."""
    f = out_root / "drives" / drive_id(path) / DONE
    try:
        rec = json.loads(f.read_text())
        if rec.get("format") != FORMAT or rec.get("path") != str(path) or rec.get("source") != source_stamp(path):
            return None
        if not all((f.parent / o).is_file() for o in rec.get("outputs", [])):
            return None
        return rec
    except (OSError, ValueError):
        return None


class ReplayActor:
    """Ray Data map_batches callable: one per worker, engine built in __init__ and reused."""

    def __init__(self, config: dict, out: str, log_level: str = "WARNING"):
        logging.basicConfig(level=log_level, format="%(asctime)s %(name)s %(levelname)s: %(message)s")
        self.out = out
        self.runner = DriveRunner(FleetConfig.from_dict(config))

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        records = [json.dumps(self.runner.process(str(p), self.out), default=_json_default) for p in batch["path"]]
        return {"record": np.array(records, dtype=object)}


# ------------------------------------------------------------------------------------------ the run

@dataclass
class Progress:
    total: int
    done: int = 0
    failed: int = 0
    sets: int = 0
    t0: float = field(default_factory=time.perf_counter)

    def add(self, rec: dict) -> None:
        self.done += 1
        self.failed += rec.get("status") != "done"
        self.sets += int(rec.get("sets", 0))

    def line(self) -> str:
        el = time.perf_counter() - self.t0
        rate = self.sets / el if el > 0 else 0.0
        eta = (self.total - self.done) * el / self.done if self.done else float("nan")
        return (f"drives {self.done}/{self.total} ({self.failed} failed), {rate:.1f} frame sets/s, "
                f"elapsed {el:.0f} s, ETA {eta:.0f} s")


@dataclass
class RayOptions:
    address: str | None = None          # None: start a local Ray on this machine; "auto" or "ray://host:10001": join a cluster
    workers: int = 2                    # actors (engines) in the pool
    cpus_per_worker: float = 1.0
    gpus_per_worker: float = 0.0
    num_cpus: int | None = None         # local Ray only: CPUs it may use (default: this machine's)
    object_store_mb: int = 256          # local Ray only
    max_task_retries: int = 3           # a drive whose worker died is retried this often


def replay_one_by_one(paths: Iterable[Path], config: ReplayConfig, engine=None) -> tuple[dict, list]:
    """The single-process reference a fleet run must equal: every drive through OfflineReplay (one
    engine, a fresh sync per drive) and ONE evaluation over all their frames.
    -> (public metrics, [ReplaySummary per drive])."""
    from perception.metrics import evaluate
    from perception.replay import OfflineReplay

    engine = engine if engine is not None else OfflineReplay(config).engine
    dets: list = []
    gts: list = []
    summaries = []
    frame0 = 0
    classes: tuple[str, ...] = ()
    for p in paths:
        replay = OfflineReplay(config, engine=engine)
        s = replay.run(p)
        summaries.append(s)
        for d, g in s.pairs:
            for b in d + g:
                b.frame += frame0       # frames of different drives never pair
            dets += d
            gts += g
        frame0 += len(s.pairs) + 1
        classes = tuple(replay.model_cfg.classes)
    return public_metrics(evaluate(dets, gts, classes)), summaries


def prepare_out(out: Path, config: FleetConfig) -> None:
    """Create OUT; refuse one that holds a run of another configuration (its drives would be skipped as done)."""
    out.mkdir(parents=True, exist_ok=True)
    run_file = out / "run.json"
    fp = run_fingerprint(config)
    if run_file.exists():
        try:
            old = json.loads(run_file.read_text()).get("fingerprint")
        except (OSError, ValueError) as e:
            raise FleetError(f"{run_file}: unreadable ({e}); use another --out") from None
        if old != fp:
            diff = sorted(k for k in set(fp) | set(old or {}) if (old or {}).get(k) != fp.get(k))
            raise FleetError(f"{out} holds a run with other settings ({', '.join(diff)}): use another --out")
    write_json(run_file, {"format": FORMAT, "fingerprint": fp, "config": config.to_dict()})


def run_fleet(drives: DriveList, out: str | Path, config: FleetConfig, ray_opts: RayOptions,
              on_progress: Callable[[Progress, dict], None] | None = None, worst: int = 10) -> dict:
    """Replay `drives` on Ray into `out`, skip the ones already done there, and write OUT/summary.json
    (pooled metrics, worst drives, failures, throughput). Returns the summary."""
    out = Path(out).resolve()
    prepare_out(out, config)
    t_start = time.perf_counter()
    records: dict[str, dict] = {}
    resumed = 0
    todo = []
    for p in drives.paths:
        rec = done_record(out, p)
        if rec is not None:
            records[str(p)] = rec
            resumed += 1
        else:
            todo.append(p)
    progress = Progress(total=len(todo))
    run_error = None
    if todo:
        run_error = _run_on_ray(todo, out, config, ray_opts, progress, records, on_progress)
    for p in todo:
        if str(p) not in records:       # the Ray run stopped before this drive came back
            records[str(p)] = {"path": str(p), "id": drive_id(p), "status": "failed",
                               "error": f"not completed: {run_error or 'no result from Ray'}"}
    wall = time.perf_counter() - t_start
    summary = summarize(out, drives, records, config, worst=worst)
    summary["run"].update(resumed=resumed, replayed=len(todo), wall_s=wall, ray_error=run_error,
                          frame_sets_per_s=progress.sets / wall if wall > 0 else 0.0, new_frame_sets=progress.sets,
                          workers=ray_opts.workers, address=ray_opts.address or "local")
    write_json(out / "summary.json", summary)
    return summary


def _run_on_ray(todo: list[Path], out: Path, config: FleetConfig, opts: RayOptions, progress: Progress,
                records: dict[str, dict], on_progress) -> str | None:
    """The drives through a Ray Data actor pool; records filled as they come back. The error that
    stopped the run, if any (the drives done before it keep their outputs)."""
    import ray

    started = False
    try:
        if opts.address:
            ray.init(address=opts.address, log_to_driver=False)
        else:
            ray.init(num_cpus=opts.num_cpus or os.cpu_count(), object_store_memory=opts.object_store_mb << 20,
                     include_dashboard=False, log_to_driver=False)
        started = True
        ctx = ray.data.DataContext.get_current()
        ctx.enable_progress_bars = False
        ctx.execution_options.preserve_order = False
        ctx.print_on_execution_start = False
        items = [{"path": str(p)} for p in todo]
        with warnings.catch_warnings():     # max_restarts/max_task_retries have no named parameter in Ray 2.60 (pinned)
            warnings.filterwarnings("ignore", message=".*ray_remote_args.*is deprecated", category=DeprecationWarning)
            ds = ray.data.from_items(items, override_num_blocks=len(items)).map_batches(
                ReplayActor, fn_constructor_kwargs={"config": config.to_dict(), "out": str(out),
                                                    "log_level": logging.getLevelName(log.getEffectiveLevel())},
                batch_size=1, batch_format="numpy", compute=ray.data.ActorPoolStrategy(size=max(1, min(opts.workers, len(todo)))),
                num_cpus=opts.cpus_per_worker, num_gpus=opts.gpus_per_worker or None,
                max_restarts=-1, max_task_retries=opts.max_task_retries)
        for row in ds.iter_rows():
            rec = json.loads(row["record"])
            records[rec["path"]] = rec
            progress.add(rec)
            if on_progress is not None:
                on_progress(progress, rec)
        return None
    except Exception as e:      # Ray gave up (a drive killed its worker more than max_task_retries times, the cluster went away)
        log.error("the Ray run stopped: %s", e)
        return f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
    finally:
        if started:
            ray.shutdown()


def summarize(out: Path, drives: DriveList, records: dict[str, dict], config: FleetConfig, worst: int = 10) -> dict:
    """The run's summary from the drives' records and matches files, pooled in the drive list's order."""
    from perception.model.config import load_model_config
    from perception.model.weights import CONFIG_FILE

    classes = tuple(load_model_config(Path(config.replay.model) / CONFIG_FILE).classes)
    t0 = time.perf_counter()
    per_class: dict[str, list[ClassMatches]] = {c: [] for c in classes}
    failed = list(drives.bad)
    rows = []
    for p in drives.paths:
        rec = records.get(str(p), {"path": str(p), "status": "failed", "error": "no record"})
        if rec.get("status") != "done":
            failed.append({"path": str(p), "error": rec.get("error", "failed")})
            continue
        if rec.get("truth"):
            try:
                m = load_matches(out / "drives" / rec["id"] / MATCHES, classes)
            except ValueError as e:
                failed.append({"path": str(p), "error": str(e)})
                continue
            for c in classes:
                per_class[c].append(m[c])
        rows.append({k: rec.get(k) for k in ("path", "id", "mAP", "NDS", "sets", "detections", "truth", "truncated", "replay_s", "worker")})
    with_truth = [r for r in rows if r["mAP"] is not None]
    metrics = public_metrics(evaluate_matches({c: pool_matches(v) for c, v in per_class.items()}, classes)) if with_truth else None
    agg_s = time.perf_counter() - t0
    loads = sorted({(r.get("worker"), r.get("engine_load_s")) for r in records.values() if r.get("engine_load_s") is not None})
    return {
        "format": FORMAT,
        "out": str(out),
        "classes": list(classes),
        "drives": {"listed": len(drives.paths) + len(drives.bad), "done": len(rows), "with_truth": len(with_truth),
                   "failed": len(failed), "truncated": sum(bool(r["truncated"]) for r in rows)},
        "metrics": metrics,
        "frame_sets": sum(r["sets"] or 0 for r in rows),
        "worst": sorted(with_truth, key=lambda r: float(r["mAP"] or 0.0))[:worst],
        "failed": failed,
        "per_drive": rows,
        "aggregation_s": agg_s,
        "engine_load_s": {w: s for w, s in loads},
        "run": {"config": config.to_dict()},
    }


# ------------------------------------------------------------------------------------------ compare

OVERALL = ("mAP", "NDS", "mATE", "mASE", "mAOE", "mAVE")


def load_summary(run: str | Path) -> dict:
    path = Path(run)
    path = path / "summary.json" if path.is_dir() else path
    try:
        s = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise FleetError(f"{path}: not a fleet run summary ({e})") from None
    if not isinstance(s, dict) or s.get("format") != FORMAT or "per_drive" not in s:
        raise FleetError(f"{path}: not a fleet run summary (format {FORMAT})")
    return s


def compare_runs(a: dict, b: dict, top: int = 10) -> dict:
    """B minus A: overall and per-class metric deltas, and the drives (matched by path) whose mAP fell most."""
    ma, mb = a.get("metrics") or {}, b.get("metrics") or {}
    overall = {k: {"a": ma.get(k), "b": mb.get(k), "delta": _delta(ma.get(k), mb.get(k))} for k in OVERALL}
    per_class = {}
    for c in sorted(set(ma.get("per_class", {})) | set(mb.get("per_class", {}))):
        ca, cb = ma.get("per_class", {}).get(c, {}), mb.get("per_class", {}).get(c, {})
        per_class[c] = {k: {"a": ca.get(k), "b": cb.get(k), "delta": _delta(ca.get(k), cb.get(k))}
                        for k in ("AP", "ATE", "ASE", "AOE", "AVE", "num_gt")}
    da = {r["path"]: r for r in a["per_drive"]}
    db = {r["path"]: r for r in b["per_drive"]}
    both = [p for p in da if p in db and da[p].get("mAP") is not None and db[p].get("mAP") is not None]
    drives = sorted(({"path": p, "a": da[p]["mAP"], "b": db[p]["mAP"], "delta": db[p]["mAP"] - da[p]["mAP"]} for p in both),
                    key=lambda r: r["delta"])
    return {"a": a.get("out"), "b": b.get("out"), "overall": overall, "per_class": per_class,
            "drives_compared": len(both), "only_in_a": sorted(set(da) - set(db)), "only_in_b": sorted(set(db) - set(da)),
            "regressed": [r for r in drives if r["delta"] < 0][:top],
            "improved": [r for r in reversed(drives) if r["delta"] > 0][:top]}


def _delta(x: Any, y: Any) -> float | None:
    return None if x is None or y is None else float(y) - float(x)
