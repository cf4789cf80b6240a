"""perception.boxes: classes map to the contract by name, and a model the contract cannot carry
is refused before it runs."""
import numpy as np
import pytest

from perception import boxes
from perception.v1 import detections_pb2


def test_classes_map_by_name_both_ways():
    for name in boxes.CLASSES:
        value = boxes.proto_class(name)
        assert detections_pb2.ObjectClass.Name(value) == f"OBJECT_CLASS_{name.upper()}"
        assert boxes.class_name(value) == name
    assert boxes.class_name(detections_pb2.OBJECT_CLASS_UNSPECIFIED) is None
    assert boxes.class_name(999) is None


def test_a_model_in_another_class_order_still_publishes_the_right_enum():
    values = boxes.check_model_classes(("pedestrian", "car"))
    outputs = {"det_boxes": np.zeros((1, 2, 9), np.float32), "det_scores": np.array([[0.9, 0.8]], np.float32),
               "det_labels": np.array([[0, 1]])}
    objects = boxes.objects_from_outputs(outputs, values, score_threshold=0.5)
    assert [o.object_class for o in objects] == [detections_pb2.OBJECT_CLASS_PEDESTRIAN,
                                                 detections_pb2.OBJECT_CLASS_CAR]
    assert [b.cls for b in boxes.metric_boxes(objects, 0, ("car", "pedestrian"))] == ["pedestrian", "car"]


def test_a_class_the_contract_cannot_carry_is_refused_at_start_up():
    from perception.config import load_rig
    from perception.fusion.pipeline import FusionPipeline
    from perception.model.config import ModelConfig, replace_config

    with pytest.raises(boxes.UnknownClass, match="forklift"):
        boxes.check_model_classes(("car", "forklift"))
    cfg = replace_config(ModelConfig(), classes=("car", "forklift"))
    with pytest.raises(boxes.UnknownClass):
        FusionPipeline(load_rig(), engine=None, model_cfg=cfg)


def test_ground_truth_keeps_class_and_visibility():
    from perception.sim.scene import Box3D

    box = Box3D(cls=boxes.CYCLIST, center=(5.0, 1.0, 0.8), size=(1.8, 0.6, 1.6), yaw=0.3, velocity=(1.0, 0.0),
                track_id=7)
    o = boxes.object_from_truth(box, visible=12)
    assert o.object_class == detections_pb2.OBJECT_CLASS_CYCLIST and o.visible_pixels == 12 and o.track_id == 7
