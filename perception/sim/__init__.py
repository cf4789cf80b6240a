"""The built-in simulated world (the model's training data) and its renderer."""
from perception.sim.render import render, render_rig
from perception.sim.scene import CLASSES, Box3D, Scene
from perception.sim.world import World, WorldConfig, scene_from_boxes

__all__ = ["CLASSES", "Box3D", "World", "WorldConfig", "render", "render_rig", "Scene", "scene_from_boxes"]
