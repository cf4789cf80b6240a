"""Example integration tests, written as a user of the plugin writes them: a scenario in a
simulator (here the built-in world, through the same client API any simulator uses), stepped in
lock-step through a real fusion node (the `perception_session` fixture of the pytest plugin), with
assertions on what the node detected against what the simulator says is there.

Scenario: world 2 of the built-in simulator, 8 instants 100 ms apart, the default 6-camera rig,
the shipped model on eager PyTorch with one thread. Run with `-rP` (or `-s`) to see the run log.
"""
from __future__ import annotations

import math

import pytest

from perception.sim.bridge import BuiltinWorldBridge
from perception.testing import Region, assert_detected, assert_no_phantoms, describe, truth_objects

pytestmark = pytest.mark.integration

SEED = 2
INSTANTS_NS = [k * 100_000_000 for k in range(8)]
NEAR_M = 20.0            # cars this close ...
CLEAR_PX = 500           # ... and this visible (pixels in the camera that sees most of them, 160x90) must be found
EGO = Region(-3.0, 3.0, -1.5, 1.5)     # the ego vehicle's own footprint: never an object


def log_step(step) -> None:
    r = step.result
    print(f"t={step.t_ns / 1e9:.1f} s  render {1e3 * step.render_s:.0f} ms  wait {1e3 * r.wait_s:.0f} ms  "
          f"missing {r.missing_cameras or '-'}")
    print("  truth:      " + "; ".join(f"{describe(o).replace(' 1.00 at', ' at')} ({o.visible_pixels} px)"
                                        for o in truth_objects(r.truth) if math.hypot(o.center.x, o.center.y) < NEAR_M))
    print("  detections: " + "; ".join(describe(o) for o in r.detections.objects))


def empty_square(truth, size_m: float = 8.0, margin_m: float = 2.0) -> Region:
    """A size_m square within 24 m of the ego with no truth object (of any visibility) within margin_m."""
    for x0 in range(-24, 24, 4):
        for y0 in range(-24, 24, 4):
            r = Region(x0, x0 + size_m, y0, y0 + size_m)
            grown = Region(r.x_min - margin_m, r.x_max + margin_m, r.y_min - margin_m, r.y_max + margin_m)
            if not any(grown.contains(o.center.x, o.center.y) for o in truth.objects) and not r.contains(0, 0):
                return r
    raise AssertionError("the scenario has no empty square")


def test_cars_are_detected_where_the_simulator_put_them(perception_session):
    bridge = BuiltinWorldBridge(perception_session, seed=SEED)
    print(f"scenario: built-in world {SEED}, {len(INSTANTS_NS)} instants, rig {perception_session.rig.name}")
    checked = 0
    for t in INSTANTS_NS:
        step = bridge.step(t)
        log_step(step)
        dets = step.result.detections
        assert dets.stamp_ns == t and not dets.missing_cameras
        for car in truth_objects(step.result.truth, "car", CLEAR_PX):
            if math.hypot(car.center.x, car.center.y) < NEAR_M:
                found = assert_detected(dets, "car", (car.center.x, car.center.y), within_m=2.0, min_score=0.3)
                print(f"  assert car at ({car.center.x:.1f}, {car.center.y:.1f}): found {describe(found, (car.center.x, car.center.y))}")
                checked += 1
    assert checked >= len(INSTANTS_NS), "the scenario should put clearly visible cars near the ego"


def test_no_phantoms_on_the_ego_or_in_empty_space(perception_session):
    bridge = BuiltinWorldBridge(perception_session, seed=SEED)
    for t in INSTANTS_NS[:4]:
        step = bridge.step(t)
        region = empty_square(step.result.truth)
        print(f"t={t / 1e9:.1f} s: no phantom on the ego {EGO} (score >= 0.3) nor in the empty {region} (score >= 0.5)")
        assert_no_phantoms(step.result.detections, EGO, score=0.3)
        assert_no_phantoms(step.result.detections, region, score=0.5)


def test_a_missing_camera_is_masked_and_the_front_car_still_found(perception_session):
    bridge = BuiltinWorldBridge(perception_session, seed=SEED)
    cameras = [n for n in perception_session.rig.camera_names if n != "back"]
    step = bridge.step(INSTANTS_NS[0], cameras=cameras)
    log_step(step)
    assert list(step.result.detections.missing_cameras) == ["back"] and step.result.missing_cameras == ["back"]
    ahead = [o for o in truth_objects(step.result.truth, "car", CLEAR_PX) if o.center.x > 5 and math.hypot(o.center.x, o.center.y) < NEAR_M]
    assert ahead, "the scenario has a car ahead"
    for car in ahead:
        assert_detected(step.result.detections, "car", (car.center.x, car.center.y), within_m=2.0)


def test_the_same_scenario_twice_gives_identical_detections(perception_session):
    def run() -> list:
        bridge = BuiltinWorldBridge(perception_session, seed=SEED)
        out = []
        for t in INSTANTS_NS[:4]:
            d = bridge.step(t).result.detections
            out.append((d.stamp_ns, [(f.camera_name, f.capture_end_ns) for f in d.frames],
                        [o.SerializeToString(deterministic=True) for o in d.objects]))
        return out

    first, second = run(), run()
    print(f"two runs of {len(first)} steps: {sum(len(o) for _, _, o in first)} objects each, identical: {first == second}")
    assert first == second
