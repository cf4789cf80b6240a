"""The built-in simulated world driven through the client API (perception/client.py), as any other
simulator would be: render World(seed) at time t into every rig camera, send the frame set with the
world's ground truth through Session.step(), get its Detections back. The camera process
(perception/cameras/process.py) stays for the live pipeline; this is the lock-step path for tests
and simulators, and an example of the API."""
from __future__ import annotations

import time
from dataclasses import dataclass

from perception.client import Session, StepResult


@dataclass
class BridgeStep:
    result: StepResult              # the client's answer (detections in world time, wait_s, truth)
    render_s: float                 # rendering every camera and the ground truth, seconds
    t_ns: int                       # world time of the step


class BuiltinWorldBridge:
    """World(seed) of the built-in simulator rendered into `session.rig` and stepped through the client."""

    def __init__(self, session: Session, seed: int = 0):
        from perception.sim import World

        self.session = session
        self.seed = int(seed)
        self.world = World(self.seed)

    def render(self, t_ns: int, cameras: list[str] | None = None) -> dict:
        """{camera: BGR image} of the world at t_ns, for `cameras` (default: every rig camera)."""
        from perception.sim import render

        scene = self.world.scene_at(t_ns)
        wanted = self.session.rig.camera_names if cameras is None else cameras
        return {c.name: render(scene, c) for c in self.session.rig.cameras if c.name in wanted}

    def truth(self, t_ns: int):
        """perception.v1.GroundTruth at t_ns: every target with its visible pixels in the rig."""
        from perception.sim.truth import ground_truth_message

        return ground_truth_message(self.world, t_ns, self.seed, self.session.rig)

    def step(self, t_ns: int, cameras: list[str] | None = None, timeout_s: float = 10.0) -> BridgeStep:
        """Render t_ns, send it with its truth, wait for its Detections. `cameras` left out are masked."""
        t0 = time.perf_counter()
        images = self.render(t_ns, cameras)
        truth = self.truth(t_ns)
        render_s = time.perf_counter() - t0
        return BridgeStep(self.session.step(images, t_ns, truth=truth, timeout_s=timeout_s), render_s, t_ns)
