"""The simulated world and its renderer: determinism, motion, visibility, clipping, occlusion."""
import subprocess
import sys

import numpy as np
import pytest

from perception import geometry
from perception.config import load_rig
from perception.sim import CLASSES, Box3D, World, WorldConfig, render, render_rig, scene_from_boxes
from perception.sim.augment import jitter_extrinsics, photometric
from perception.sim.scene import (
    DEFAULT_LIGHTING,
    FACES,
    Part,
    SceneAssembler,
    Solid,
    SolidTemplate,
    face_normals,
    without_targets,
)
from perception.sim.world import EGO_FOOTPRINT, PERIOD_NS, overlapping_pairs

RIG = load_rig()
FRONT = RIG.camera("front")
EPOCH_NS = 1_700_000_000_123_456_789


@pytest.fixture(scope="module")
def worlds():
    return {seed: World(seed) for seed in (0, 1, 4)}


def _box_tuple(b: Box3D):
    return (b.cls, b.track_id, b.yaw, *b.center.tolist(), *b.size.tolist(), *b.velocity.tolist())


# ------------------------------------------------------------------------------------------------
# determinism

def test_same_seed_same_world_and_images(worlds):
    other = World(1)
    for t in (0, EPOCH_NS, -7 * 10**9):
        a, b = worlds[1].boxes_at(t), other.boxes_at(t)
        assert [_box_tuple(x) for x in a] == [_box_tuple(x) for x in b]
        assert a == b
    # Calls in a different order give the same answers (no state carried between calls).
    other.boxes_at(EPOCH_NS + 10**9)
    sa, sb = worlds[1].scene_at(EPOCH_NS), other.scene_at(EPOCH_NS)
    for cam in (FRONT, RIG.camera("back")):
        assert np.array_equal(render(sa, cam), render(sb, cam))


def test_different_seeds_differ(worlds):
    a, b = worlds[0].boxes_at(EPOCH_NS), worlds[1].boxes_at(EPOCH_NS)
    assert [_box_tuple(x) for x in a] != [_box_tuple(x) for x in b]
    assert not np.array_equal(render(worlds[0].scene_at(EPOCH_NS), FRONT), render(worlds[1].scene_at(EPOCH_NS), FRONT))


def test_independent_process_sees_the_same_world(worlds):
    """Two processes with the same seed rendering different cameras agree on the world."""
    code = ("import hashlib, numpy as np\n"
            "from perception.sim import World, render\n"
            "from perception.config import load_rig\n"
            f"s = World(4).scene_at({EPOCH_NS})\n"
            "print(repr([(b.track_id, b.cls, b.center.tolist(), b.yaw) for b in s.boxes]))\n"
            "print(hashlib.sha1(render(s, load_rig().camera('back_left')).tobytes()).hexdigest())\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60)
    boxes_line, digest = out.stdout.strip().splitlines()
    import hashlib

    scene = worlds[4].scene_at(EPOCH_NS)
    assert boxes_line == repr([(b.track_id, b.cls, b.center.tolist(), b.yaw) for b in scene.boxes])
    assert digest == hashlib.sha1(render(scene, RIG.camera("back_left")).tobytes()).hexdigest()


# ------------------------------------------------------------------------------------------------
# the world's content

def test_boxes_move_with_their_velocity(worlds):
    for world in worlds.values():
        dt_s = 0.05
        b0 = {b.track_id: b for b in world.boxes_at(EPOCH_NS)}
        b1 = {b.track_id: b for b in world.boxes_at(EPOCH_NS + int(dt_s * 1e9))}
        common = [k for k in b0 if k in b1]
        moving = [k for k in common if np.linalg.norm(b0[k].velocity) > 0.05]
        static = [k for k in common if np.linalg.norm(b0[k].velocity) == 0]
        assert len(moving) >= 5 and len(static) >= 1
        errors = [np.linalg.norm(b0[k].center[:2] + b0[k].velocity * dt_s - b1[k].center[:2]) for k in moving]
        # Epoch-sized times keep full precision; only an object wrapping round or turning back
        # in these 50 ms may disagree.
        assert sum(e < 1e-6 for e in errors) >= len(moving) - 1
        for k in moving:
            heading = np.array([np.cos(b0[k].yaw), np.sin(b0[k].yaw)])
            assert heading @ b0[k].velocity / np.linalg.norm(b0[k].velocity) > 0.999
        for k in static:
            assert np.array_equal(b0[k].center, b1[k].center)


def test_motion_is_seamless_across_the_time_period(worlds):
    w = worlds[0]
    a = {b.track_id: b for b in w.boxes_at(PERIOD_NS - 1)}
    b = {b.track_id: b for b in w.boxes_at(5 * PERIOD_NS)}
    jumps = [np.linalg.norm(a[k].center - b[k].center) for k in a if k in b]
    assert sum(j < 1e-6 for j in jumps) >= len(jumps) - 1


def test_scene_content_is_plausible():
    """Objects on the ground, never overlapping each other or the ego, a busy street around the ego,
    and every class present across a few seeds."""
    x0, x1, y0, y1 = EGO_FOOTPRINT
    ego = np.array([[x1, y1], [x0, y1], [x0, y0], [x1, y0]])
    seen = set()
    near_counts = []
    for seed in range(6):
        w = World(seed)
        for t in (EPOCH_NS, EPOCH_NS + 13 * 10**9):
            boxes = w.boxes_at(t)
            corners = np.array([b.corners()[:4, :2] for b in boxes])
            assert overlapping_pairs(np.concatenate([ego[None], corners])) == []
            for b in boxes:
                assert b.center[2] == pytest.approx(b.size[2] / 2)
                assert np.all(b.size > 0.1)
                seen.add(b.cls)
            near_counts.append(sum(abs(b.center[0]) < 32 and abs(b.center[1]) < 32 for b in boxes))
    assert seen == set(range(len(CLASSES)))
    assert min(near_counts) >= 5 and 10 <= np.median(near_counts) <= 35


def test_world_config_validates():
    with pytest.raises(ValueError):
        WorldConfig(vehicle_speed_mps=(5.0, 1.0))
    quiet = World(3, WorldConfig(pedestrians=(0, 0), crossing_pedestrians=(0, 0), cyclists=(0, 0)))
    assert all(b.class_name not in ("pedestrian", "cyclist") for b in quiet.boxes_at(0))


# ------------------------------------------------------------------------------------------------
# the renderer

def test_render_output_format(worlds):
    scene = worlds[0].scene_at(EPOCH_NS)
    images = render_rig(scene, RIG)
    assert len(images) == len(RIG.cameras)
    for img, cam in zip(images, RIG.cameras):
        assert img.shape == (cam.height, cam.width, 3) and img.dtype == np.uint8
        assert img.flags["C_CONTIGUOUS"]
        assert img.std() > 10                     # not a blank frame
    small = RIG.resized(176, 96)
    img = render(scene, small.cameras[3])
    assert img.shape == (96, 176, 3) and img.flags["C_CONTIGUOUS"]


def test_face_winding_is_outward():
    part = Part(np.array([-1.0, -0.5, 0.0]), np.array([2.0, 0.7, 1.3]), np.zeros((6, 3)), taper=(0.4, 0.6))
    v = part.vertices()[None]
    n = face_normals(v)[0]
    centre = v[0].mean(axis=0)
    for f in range(6):
        assert n[f] @ (v[0, FACES[f]].mean(axis=0) - centre) > 0


def _segment_blocked(scene, solid, C, X) -> bool:
    """Does the segment C -> X cross the bounding box of `solid`?"""
    o, yaw = scene.solid_origin[solid], scene.solid_yaw[solid]
    c, s = np.cos(yaw), np.sin(yaw)

    def local(p):
        r = p - o
        return np.array([c * r[0] + s * r[1], -s * r[0] + c * r[1], r[2]])

    a, d = local(C), local(X) - local(C)
    lo, hi = scene.solid_lo[solid], scene.solid_hi[solid]
    t0, t1 = 0.0, 1.0
    for k in range(3):
        if abs(d[k]) < 1e-12:
            if not lo[k] <= a[k] <= hi[k]:
                return False
            continue
        ta, tb = (lo[k] - a[k]) / d[k], (hi[k] - a[k]) / d[k]
        t0, t1 = max(t0, min(ta, tb)), min(t1, max(ta, tb))
    return t0 <= t1


def test_visible_boxes_show_up_in_the_image(worlds):
    """Where the centre of an unoccluded ground-truth box projects, the image differs from the same
    scene without any detection target."""
    checked = 0
    for seed in (0, 4):
        scene = worlds[seed].scene_at(EPOCH_NS)
        empty = without_targets(scene)
        assert empty.boxes == () and len(empty.part_vertices) < len(scene.part_vertices)
        for cam in RIG.cameras:
            full_img, empty_img = render(scene, cam), render(empty, cam)
            for k, box in enumerate(scene.boxes):
                uv, depth = geometry.project_points(box.center[None], cam.K, cam.T_ego_from_camera)
                u, v = np.rint(uv[0]).astype(int)
                if not (1.0 < depth[0] < 30 and 1 <= u < cam.width - 1 and 1 <= v < cam.height - 1):
                    continue
                own = np.flatnonzero(scene.solid_box == k)[0]
                if any(_segment_blocked(scene, s, cam.position, box.center)
                       for s in range(scene.solid_count) if s != own):
                    continue
                assert np.any(full_img[v, u] != empty_img[v, u]), (seed, cam.name, box)
                checked += 1
    assert checked >= 15


def _building_scene(x0: float, x1: float):
    """A single plain box (y 1..4 m, 3 m tall) spanning x0..x1, on a plain ground."""
    asm = SceneAssembler(DEFAULT_LIGHTING)
    asm.add_ground(np.array([[500, 500], [-500, 500], [-500, -500], [500, -500]]), (90, 110, 100))
    colors = np.array([[200, 60, 60], [60, 200, 60], [60, 60, 200], [200, 200, 60], [200, 60, 200], [90, 90, 90]])
    part = Part(np.array([x0, 1.0, 0.0]), np.array([x1, 4.0, 3.0]), colors.astype(float))
    asm.add_solid(SolidTemplate(Solid([part], large=True)), (0.0, 0.0, 0.0), 0.0, shadow=False)
    return asm.build(0, ())


def test_near_plane_clipping():
    """A box straddling the camera plane renders exactly like the same box cut just in front of the
    camera (its faces are clipped, not dropped or inverted into garbage)."""
    cam_x = FRONT.position[0]
    straddling = render(_building_scene(cam_x - 6.0, cam_x + 5.0), FRONT)
    cut = render(_building_scene(cam_x + 0.06, cam_x + 5.0), FRONT)
    nothing = render(_building_scene(500.0, 501.0), FRONT)
    changed = np.any(straddling != nothing, axis=2)
    assert changed[:, :100].mean() > 0.5                      # the box fills the left of the view
    assert not changed[:, 200:].any()                         # and nothing leaks to the right
    # Same pixels up to one grey level (distance haze is computed from each part's centre).
    differ = np.abs(straddling.astype(int) - cut).max(axis=2) > 1
    assert differ.mean() < 0.002
    # A person walking through the camera plane right beside the camera: no error, sane image.
    person = Box3D(cls=2, center=(cam_x + 0.15, 0.45, 0.87), size=(0.6, 0.6, 1.75), yaw=0.3, velocity=(0, 0),
                   track_id=1)
    img = render(scene_from_boxes([person]), FRONT)
    base = render(scene_from_boxes([]), FRONT)
    assert 0 < np.any(img != base, axis=2).mean() < 0.6


def test_occlusion_near_object_hides_far_one():
    near = Box3D(cls=0, center=(10.0, 0.0, 0.78), size=(4.5, 1.9, 1.55), yaw=0.2, velocity=(0, 0), track_id=1)
    far = Box3D(cls=1, center=(24.0, 0.3, 1.7), size=(8.0, 2.5, 3.4), yaw=-0.4, velocity=(0, 0), track_id=2)
    both = render(scene_from_boxes([far, near]), FRONT)
    assert np.array_equal(both, render(scene_from_boxes([near, far]), FRONT))     # list order is irrelevant
    near_only = render(scene_from_boxes([near]), FRONT)
    far_only = render(scene_from_boxes([far]), FRONT)
    uv, _ = geometry.project_points(np.array([[24.0, 0.3, 1.0]]), FRONT.K, FRONT.T_ego_from_camera)
    u, v = np.rint(uv[0]).astype(int)
    assert np.array_equal(both[v, u], near_only[v, u])
    assert not np.array_equal(both[v, u], far_only[v, u])
    # The top of the far truck shows above the near car.
    uv, _ = geometry.project_points(np.array([[24.0, 0.3, 3.0]]), FRONT.K, FRONT.T_ego_from_camera)
    u, v = np.rint(uv[0]).astype(int)
    assert np.array_equal(both[v, u], far_only[v, u])


def test_class_shapes_fill_their_box():
    """Parts of each class fill exactly the ground-truth box (tight boxes)."""
    from perception.sim import shapes

    rng = np.random.default_rng(0)
    for cls, size in shapes.CLASS_SIZES.items():
        tpl = SolidTemplate(shapes.BUILDERS[cls](rng, np.array(size)))
        lo, hi = tpl.local.reshape(-1, 3).min(0), tpl.local.reshape(-1, 3).max(0)
        np.testing.assert_allclose(hi - lo, size, atol=1e-9, err_msg=CLASSES[cls])
        np.testing.assert_allclose((lo + hi)[:2], 0, atol=1e-9)
        assert lo[2] == 0


# ------------------------------------------------------------------------------------------------
# augmentation

def test_photometric_is_deterministic_and_bounded(worlds):
    img = render(worlds[0].scene_at(0), FRONT)
    a = photometric(img, np.random.default_rng(5))
    b = photometric(img, np.random.default_rng(5))
    c = photometric(img, np.random.default_rng(6))
    assert a.dtype == np.uint8 and a.shape == img.shape
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    same = photometric(img, np.random.default_rng(0), exposure=(1, 1), noise_std=(0, 0), blur_sigma=(0, 0))
    assert np.array_equal(same, img)
    bright = photometric(img, np.random.default_rng(0), exposure=(1.3, 1.3), noise_std=(0, 0), blur_sigma=(0, 0))
    assert bright.mean() > img.mean()


def test_jitter_extrinsics_is_deterministic_and_small():
    a = jitter_extrinsics(FRONT, np.random.default_rng(3))
    b = jitter_extrinsics(FRONT, np.random.default_rng(3))
    c = jitter_extrinsics(FRONT, np.random.default_rng(4))
    assert np.array_equal(a.T_ego_from_camera, b.T_ego_from_camera)
    assert not np.array_equal(a.T_ego_from_camera, c.T_ego_from_camera)
    assert np.array_equal(a.K, FRONT.K) and a.calibration_id != FRONT.calibration_id
    R = a.T_ego_from_camera[:3, :3]
    np.testing.assert_allclose(R @ R.T, np.eye(3), atol=1e-12)
    angle = np.degrees(np.arccos(np.clip((np.trace(FRONT.T_ego_from_camera[:3, :3].T @ R) - 1) / 2, -1, 1)))
    assert 0 < angle <= 1.5 * np.sqrt(3) + 1e-9
    assert np.abs(a.position - FRONT.position).max() <= 0.05


# ------------------------------------------------------------------------------------------------
# the CLI

def test_cli_writes_mosaic_and_benches(tmp_path, capsys):
    import cv2

    from perception.commands import render as cli

    out = tmp_path / "deep" / "frames.png"
    assert cli.main(["--seed", "2", "--time-s", "1700000000.5", "--overlay", "--out", str(out)]) == 0
    img = cv2.imread(str(out))
    assert img is not None and img.shape[0] == 2 * FRONT.height and img.shape[1] > 3 * FRONT.width
    assert cli.main(["--bench", "2"]) == 0
    assert "frame sets/s" in capsys.readouterr().out
    with pytest.raises(SystemExit) as e:
        cli.main(["--help"])
    assert e.value.code == 0
    assert cli.main(["--rig", str(tmp_path / "missing.yaml")]) == 2


def test_visible_pixels_count_occlusion():
    from perception.sim.render import visible_pixels
    from perception.sim.truth import MIN_VISIBLE_PX, ground_truth_message
    from perception.sim.truth import visible_pixels as rig_visible

    van = Box3D(cls=1, center=(8.0, 0.0, 1.5), size=(6.0, 2.4, 3.0), yaw=0.0, velocity=(0, 0), track_id=1)
    hidden = Box3D(cls=2, center=(14.0, 0.0, 0.87), size=(0.6, 0.6, 1.75), yaw=0.0, velocity=(0, 0), track_id=2)
    beside = Box3D(cls=2, center=(14.0, 5.0, 0.87), size=(0.6, 0.6, 1.75), yaw=0.0, velocity=(0, 0), track_id=3)
    behind_ego = Box3D(cls=4, center=(-12.0, 0.0, 0.35), size=(0.4, 0.4, 0.7), yaw=0.0, velocity=(0, 0), track_id=4)
    scene = scene_from_boxes([van, hidden, beside, behind_ego])
    front = visible_pixels(scene, FRONT)
    assert front[0] > 1000 and front[1] == 0 and front[2] > 50 and front[3] == 0
    # Without the van the pedestrian shows; the whole rig sees the cone through the back camera.
    assert visible_pixels(scene_from_boxes([hidden]), FRONT)[0] > 50
    rig = rig_visible(scene, RIG)
    assert rig[1] < MIN_VISIBLE_PX <= min(rig[0], rig[2], rig[3])

    class StillWorld:          # ground_truth_message needs only scene_at
        def scene_at(self, t_ns):
            return scene

    msg = ground_truth_message(StillWorld(), 123, 7, RIG)
    assert [o.visible_pixels for o in msg.objects] == rig.tolist()
