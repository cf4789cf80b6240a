"""Instants of the simulated world rendered into every camera of a rig, for tests that need frames."""
from __future__ import annotations

import numpy as np


def sim_instants(rig, seed: int, t0_ns: int, period_ns: int, count: int = 3, truth: bool = False) -> list:
    """[(t_ns, {camera: BGR pixels})] or, with truth, [(t_ns, {camera: pixels}, GroundTruth)]."""
    from perception.sim import World, render
    from perception.sim.truth import ground_truth_message

    world = World(seed)
    out: list = []
    for k in range(count):
        t = t0_ns + k * period_ns
        scene = world.scene_at(t)
        images = {cam.name: np.ascontiguousarray(render(scene, cam)) for cam in rig.cameras}
        out.append((t, images, ground_truth_message(world, t, seed, rig)) if truth else (t, images))
    return out
