"""The MuJoCo bridge's geometry and ground truth (perception/bridges/mujoco_world.py): a rig camera
renders where its K and T_ego_from_camera project, the truth boxes are the rendered objects, the
simulation moves them at their velocity, and the scene is a function of the seed. Skipped with the
reason when mujoco or offscreen EGL rendering is unavailable."""
from __future__ import annotations

import numpy as np
import pytest

from perception import geometry
from perception.config import ConfigError, load_rig

mw = pytest.importorskip("perception.bridges.mujoco_world")
_reason = mw.rendering_unavailable_reason()
pytestmark = pytest.mark.skipif(_reason is not None, reason=_reason or "")


@pytest.fixture(scope="module")
def rig():
    return load_rig()


@pytest.fixture(scope="module")
def street(rig):
    with mw.MujocoStreet(seed=0, rig=rig, config=mw.StreetConfig(fog=False)) as s:
        yield s


def test_a_known_point_renders_where_the_rig_projects_it(rig):
    """Small spheres at known ego-frame points, seen by every rig camera placed with camera_element:
    the centroid of each sphere's pixels is within half a pixel of its projection by K and T."""
    import mujoco

    rng = np.random.default_rng(0)
    for cam in rig.cameras:
        pts = []
        while len(pts) < 4:                        # points well inside this camera's view, 6..20 m away
            uv = rng.uniform([40, 30], [cam.width - 40, cam.height - 30])
            p = geometry.unproject_pixels(uv[None], np.array([rng.uniform(6, 20)]), cam.K, cam.T_ego_from_camera)[0]
            pts.append((p, 3.0 * np.linalg.norm(p - cam.position) / cam.K[0, 0]))    # about 3 px across
        spheres = "".join(f'<geom name="p{i}" type="sphere" size="{r}" pos="{p[0]} {p[1]} {p[2]}"/>' for i, (p, r) in enumerate(pts))
        xml = (f'<mujoco><visual><global offwidth="{cam.width}" offheight="{cam.height}"/></visual><worldbody>{spheres}'
               f'<body name="ego">{mw.camera_element(mujoco, cam)}</body></worldbody></mujoco>')
        model = mujoco.MjModel.from_xml_string(xml)
        data = mujoco.MjData(model)
        mujoco.mj_forward(model, data)
        r = mujoco.Renderer(model, cam.height, cam.width)
        try:
            r.enable_segmentation_rendering()
            r.update_scene(data, camera=cam.name)
            seg = r.render()[:, :, 0]
        finally:
            r.close()
        uv_expected, depth = geometry.project_points(np.array([p for p, _ in pts]), cam.K, cam.T_ego_from_camera)
        for i in range(len(pts)):
            v, u = np.nonzero(seg == model.geom(f"p{i}").id)
            assert len(u) > 0, f"camera {cam.name}: sphere {i} at {pts[i][0]} not rendered (expected at {uv_expected[i]})"
            got = np.array([u.mean(), v.mean()])
            assert np.abs(got - uv_expected[i]).max() < 0.5, \
                f"camera {cam.name}: point {pts[i][0]} rendered at {got}, K/T put it at {uv_expected[i]}"


def test_truth_boxes_contain_what_is_rendered(street, rig):
    """Every target's pixels in the full-size segmentation render lie inside the projection of its
    ground-truth box (the box is the object, in the ego frame), for each camera."""
    boxes = street.boxes()
    checked = 0
    for cam in rig.cameras:
        tgt = street.target_image(cam.name)
        for k in np.unique(tgt[tgt >= 0]):
            b = boxes[k]
            uv, depth = geometry.project_points(b.corners(), cam.K, cam.T_ego_from_camera)
            if depth.min() < 0.5:
                continue                            # box crosses the image plane: its projection is unbounded
            v, u = np.nonzero(tgt == k)
            lo, hi = uv.min(0) - 1.5, uv.max(0) + 1.5
            assert u.min() >= lo[0] and u.max() <= hi[0] and v.min() >= lo[1] and v.max() <= hi[1], (
                f"camera {cam.name}: {b} rendered in u {u.min()}..{u.max()} v {v.min()}..{v.max()}, "
                f"its box projects to u {lo[0]:.1f}..{hi[0]:.1f} v {lo[1]:.1f}..{hi[1]:.1f}")
            checked += 1
    assert checked >= 5


def test_truth_sizes_classes_and_visibility(street):
    boxes = street.boxes()
    vis = street.visible_pixels()
    assert len(boxes) == len(vis) > 0
    typical = {k: np.array(v) for k, v in mw.CLASS_SIZES.items()}
    for b in boxes:
        assert np.all(np.abs(b.size / typical[b.cls] - 1) < 0.2), f"{b}: size far from the class's {typical[b.cls]}"
        assert abs(b.center[2] - b.size[2] / 2) < 0.05, f"{b}: not standing on the ground"
    assert (vis >= mw.MIN_VISIBLE_PX).sum() >= 3
    truth = street.ground_truth(123)
    assert truth.stamp_ns == 123 and len(truth.objects) == len(boxes)
    assert [o.visible_pixels for o in truth.objects] == vis.tolist()


def test_movers_move_at_their_velocity(rig):
    with mw.MujocoStreet(seed=1, rig=rig) as s:
        before = s.boxes()
        s.advance(0.5)
        after = s.boxes()
    moving = [(a, b) for a, b in zip(before, after) if np.linalg.norm(a.velocity) > 0.1]
    assert moving, "seed 1 has moving targets"
    for a, b in moving:
        np.testing.assert_allclose(b.center[:2], a.center[:2] + 0.5 * a.velocity, atol=1e-6)
    still = [(a, b) for a, b in zip(before, after) if np.linalg.norm(a.velocity) == 0]
    for a, b in still:
        np.testing.assert_array_equal(a.center, b.center)


def test_same_seed_same_street_and_pixels(rig):
    with mw.MujocoStreet(seed=5, rig=rig) as a, mw.MujocoStreet(seed=5, rig=rig) as b:
        assert a.xml == b.xml
        ia, ib = a.render_camera("front"), b.render_camera("front")
        assert ia.shape == (180, 320, 3) and ia.dtype == np.uint8
        np.testing.assert_array_equal(ia, ib)
    with mw.MujocoStreet(seed=6, rig=rig) as c:
        assert c.xml != a.xml


def test_camera_mujoco_cannot_render_is_refused(rig):
    from dataclasses import replace

    cam = rig.cameras[0]
    K = cam.K.copy()
    K[0, 2] += 7
    bad = replace(rig, cameras=(replace(cam, K=K),) + rig.cameras[1:])
    with pytest.raises(ConfigError, match="principal point"):
        mw.MujocoStreet(seed=0, rig=bad)
