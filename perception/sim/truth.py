"""Ground truth of the simulated world as a protobuf message (topic sim/truth)."""
from __future__ import annotations


def box_to_object(box, score: float = 1.0):
    from perception.v1 import detections_pb2 as d

    return d.Object3D(object_class=int(box.cls) + 1, score=score,
                      center=d.Vector3(x=float(box.center[0]), y=float(box.center[1]), z=float(box.center[2])),
                      size=d.Vector3(x=float(box.size[0]), y=float(box.size[1]), z=float(box.size[2])),
                      yaw=float(box.yaw), velocity=d.Vector3(x=float(box.velocity[0]), y=float(box.velocity[1])),
                      track_id=int(box.track_id))


def ground_truth_message(world, stamp_ns: int, seed: int):
    from perception.v1 import detections_pb2

    return detections_pb2.GroundTruth(stamp_ns=stamp_ns, world_seed=seed,
                                      objects=[box_to_object(b) for b in world.boxes_at(stamp_ns)])
