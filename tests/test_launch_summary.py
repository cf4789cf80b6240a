"""The launcher's closing line names every engine switch of the run, with its time and reason,
including one the node made after its last status (seen only in the detections)."""
from __future__ import annotations

from types import SimpleNamespace

from perception import topics
from perception.launch import Summary
from perception.v1 import detections_pb2, status_pb2


class FakeSub:
    def __init__(self, messages):
        self.messages = list(messages)

    def recv(self, timeout_ms=0):
        return self.messages.pop(0) if self.messages else None

    def close(self):
        pass


def detections(stamp_s: float, backend: str):
    msg = detections_pb2.Detections(stamp_ns=int(stamp_s * 1e9), backend=backend)
    return SimpleNamespace(topic=topics.DETECTIONS, msg=msg, recv_ns=int(stamp_s * 1e9) + 40_000_000)


def summary_of(messages) -> Summary:
    return Summary("tcp://127.0.0.1:1", sub=FakeSub(messages))


def test_closing_line_names_a_reported_switch_and_one_seen_only_in_detections():
    status = status_pb2.NodeStatus(backend="torch-cpu-inductor")
    status.engine_switches.add(stamp_ns=int(2.6e9), from_backend="torch-cpu", to_backend="torch-cpu-inductor",
                               reason="compiled artifact found in the cache")
    msgs = [detections(1.0, "torch-cpu"), detections(2.0, "torch-cpu"), detections(3.0, "torch-cpu-inductor"),
            SimpleNamespace(topic=topics.FUSION_STATUS, msg=status, recv_ns=int(3.1e9)),
            detections(4.0, "torch-cpu-inductor"), detections(5.0, "onnxruntime-cpu")]
    s = summary_of(msgs)
    s.poll()
    line = s.closing_line(6.0, 0)
    assert "received 5 detection messages" in line
    assert "engine switch at 2.6 s: torch-cpu -> torch-cpu-inductor (compiled artifact found in the cache)" in line
    assert "engine switch by 5.0 s: torch-cpu-inductor -> onnxruntime-cpu (seen in the detections" in line


def test_no_switch_no_switch_text():
    s = summary_of([detections(1.0, "torch-cpu"), detections(2.0, "torch-cpu")])
    s.poll()
    assert "engine switch" not in s.closing_line(3.0, 0)
