"""What the Foxglove channels cost in a recording (docs/recording.md): the perception.v1 messages of
IN.mcap recorded again through perception.record.Recorder without Foxglove channels, with JPEG
images and with raw images; prints file size, bytes per camera frame and the writer's time.

    python scripts/recording_size.py drive.mcap [--jpeg-quality 90] [--noise 2]
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from perception.foxglove import FoxgloveConfig
from perception.record import RECORDED_FRAME_TYPE, Recorder, read_messages


def with_noise(messages, sigma: float, seed: int = 0):
    """The frames with Gaussian pixel noise of `sigma` grey levels added: the simulator's flat-shaded
    images compress far better than a real camera's, whose noise zstd cannot remove."""
    import numpy as np

    rng = np.random.default_rng(seed)
    out = []
    for m in messages:
        if m.msg.DESCRIPTOR.full_name == RECORDED_FRAME_TYPE:
            px = np.frombuffer(m.msg.pixels, np.uint8)
            noisy = np.clip(px + rng.normal(0, sigma, px.shape), 0, 255).astype(np.uint8)
            msg = type(m.msg)()
            msg.CopyFrom(m.msg)
            msg.pixels = noisy.tobytes()
            m = type(m)(m.topic, m.log_time_ns, m.publish_time_ns, msg)
        out.append(m)
    return out


def rerecord(messages, out: Path, fox: FoxgloveConfig | None) -> tuple[int, float, Recorder]:
    """-> (file bytes, seconds from the first offer to the finished file, recorder)."""
    t0 = time.perf_counter()
    # a queue never half full: the recorder never leaves images out for being behind
    with Recorder(out, queue_size=2 * len(messages) + 2, foxglove=fox) as rec:
        for m in messages:
            if m.msg.DESCRIPTOR.full_name == RECORDED_FRAME_TYPE:
                rec.offer(m.topic, m.msg.header, m.msg.pixels, m.log_time_ns)
            else:
                rec.offer(m.topic, m.msg, None, m.log_time_ns)
    return out.stat().st_size, time.perf_counter() - t0, rec


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("input", help="a recording made by `perception record`")
    p.add_argument("--jpeg-quality", type=int, default=90)
    p.add_argument("--noise", type=float, default=0.0, metavar="SIGMA",
                   help="add Gaussian pixel noise (grey levels) to every frame first, as a real camera has")
    args = p.parse_args()
    messages = [m for m in read_messages(args.input) if not m.topic.startswith("/foxglove/")]
    if args.noise > 0:
        messages = with_noise(messages, args.noise)
    frames = sum(m.msg.DESCRIPTOR.full_name == RECORDED_FRAME_TYPE for m in messages)
    print(f"{args.input}: {len(messages)} messages, {frames} camera frames" + (f", noise sigma {args.noise}" if args.noise else ""))
    base = None
    with tempfile.TemporaryDirectory() as tmp:
        for label, fox in [("no Foxglove channels", None),
                           (f"Foxglove, JPEG q{args.jpeg_quality}", FoxgloveConfig("jpeg", args.jpeg_quality)),
                           ("Foxglove, raw images", FoxgloveConfig("raw")),
                           ("Foxglove, no images", FoxgloveConfig("none"))]:
            size, seconds, rec = rerecord(messages, Path(tmp) / "x.mcap", fox)
            base = size if base is None else base
            skipped = f", left out {rec.foxglove.skipped}" if rec.foxglove is not None and rec.foxglove.skipped else ""
            print(f"{label:28s} {size / 1e6:8.2f} MB  ({size / base:5.2f}x, {size / frames / 1e3:6.1f} kB per frame)  "
                  f"writer {seconds / frames * 1e3:5.2f} ms per frame{skipped}")


if __name__ == "__main__":
    main()
