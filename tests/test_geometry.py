"""Rig math: projection round trips, conventions, intrinsics scaling, boxes, transforms."""
import cv2
import numpy as np
import pytest

from perception import geometry
from perception.config import load_rig

RIG = load_rig()


@pytest.mark.parametrize("cam", RIG.cameras, ids=lambda c: c.name)
def test_project_unproject_round_trip(cam):
    T = cam.T_ego_from_camera
    # Points in front of the camera: along its optical axis and off to the side / up / down.
    rng = np.random.default_rng(0)
    P_cam = np.column_stack([rng.uniform(-3, 3, 20), rng.uniform(-1, 1, 20), rng.uniform(5, 40, 20)])
    P = geometry.transform_points(T, P_cam)
    uv, depth = geometry.project_points(P, cam.K, T)
    assert np.all(depth > 0)
    np.testing.assert_allclose(depth, P_cam[:, 2], atol=1e-9)
    on_axis, _ = geometry.project_points(geometry.transform_points(T, np.array([[0.0, 0.0, 10.0]])), cam.K, T)
    np.testing.assert_allclose(on_axis[0], cam.K[:2, 2], atol=1e-9)     # principal point
    inside = (uv[:, 0] >= 0) & (uv[:, 0] <= cam.width - 1) & (uv[:, 1] >= 0) & (uv[:, 1] <= cam.height - 1)
    assert inside.sum() >= 10
    back = geometry.unproject_pixels(uv, depth, cam.K, T)
    assert np.abs(back - P).max() < 1e-6
    # The viewing ray through the pixel points at the point.
    rays = geometry.pixel_rays(uv, cam.K, T)
    to_p = (P - cam.position) / np.linalg.norm(P - cam.position, axis=1, keepdims=True)
    assert np.abs(rays - to_p).max() < 1e-9


@pytest.mark.parametrize("cam", RIG.cameras, ids=lambda c: c.name)
def test_point_behind_camera_has_negative_depth(cam):
    P = geometry.transform_points(cam.T_ego_from_camera, np.array([[0.3, -0.2, -5.0]]))
    _, depth = geometry.project_points(P, cam.K, cam.T_ego_from_camera)
    assert depth[0] == pytest.approx(-5.0)


def test_camera_rotation_conventions():
    R = geometry.camera_rotation(0.0)
    np.testing.assert_allclose(R[:, 2], [1, 0, 0], atol=1e-12)    # optical axis along ego +x
    np.testing.assert_allclose(R[:, 0], [0, -1, 0], atol=1e-12)   # image right = ego right (-y)
    np.testing.assert_allclose(R[:, 1], [0, 0, -1], atol=1e-12)   # image down = ego down
    R = geometry.camera_rotation(np.radians(90))
    np.testing.assert_allclose(R[:, 2], [0, 1, 0], atol=1e-12)    # yaw +90: looks along ego +y (left)
    R = geometry.camera_rotation(0.0, pitch=np.radians(10))
    assert R[2, 2] < 0                                            # pitch down positive
    # The rig file agrees: the left camera looks left, the back camera backwards.
    assert RIG.camera("front_left").T_ego_from_camera[1, 2] > 0.5
    assert RIG.camera("back").T_ego_from_camera[0, 2] < -0.99


@pytest.mark.parametrize("size,interp", [((160, 120), cv2.INTER_AREA), ((480, 360), cv2.INTER_LINEAR),
                                         ((200, 90), cv2.INTER_AREA)])
def test_scale_intrinsics_matches_cv2_resize(size, interp):
    """A blob drawn where a 3D point projects lands, after cv2.resize, where the scaled K projects it."""
    W, H = 320, 240
    K = geometry.intrinsics_from_fov(W, H, 70)
    T = geometry.make_transform(geometry.camera_rotation(0.0), [0, 0, 1.5])
    P = np.array([[20.0, 2.3, 2.1]])
    uv, _ = geometry.project_points(P, K, T)
    u0, v0 = uv[0]
    yy, xx = np.mgrid[0:H, 0:W].astype(np.float64)
    img = np.exp(-((xx - u0) ** 2 + (yy - v0) ** 2) / (2 * 4.0 ** 2)).astype(np.float32)
    small = cv2.resize(img, size, interpolation=interp)
    ys, xs = np.mgrid[0:size[1], 0:size[0]]
    centroid = np.array([(small * xs).sum(), (small * ys).sum()]) / small.sum()
    K2 = geometry.scale_intrinsics(K, size[0] / W, size[1] / H)
    uv2, _ = geometry.project_points(P, K2, T)
    assert np.abs(centroid - uv2[0]).max() < 0.03
    # The naive K * s (no half-pixel shift) is measurably wrong for a 2x resize.
    if size == (160, 120):
        naive = np.diag([0.5, 0.5, 1.0]) @ K
        uv3, _ = geometry.project_points(P, naive, T)
        assert np.abs(centroid - uv3[0]).max() > 0.2


def test_box_corners_dimensions_and_order():
    center, size, yaw = np.array([3.0, -2.0, 0.8]), np.array([4.5, 1.9, 1.6]), 0.7
    c = geometry.box_corners(center, size, yaw)
    assert c.shape == (8, 3)
    np.testing.assert_allclose(c.mean(axis=0), center, atol=1e-12)
    np.testing.assert_allclose(np.linalg.norm(c[0] - c[1]), size[0])     # front-left to back-left: length
    np.testing.assert_allclose(np.linalg.norm(c[0] - c[3]), size[1])     # front-left to front-right: width
    np.testing.assert_allclose(c[4] - c[0], [0, 0, size[2]], atol=1e-12)
    heading = (c[0] - c[1])[:2] / size[0]
    np.testing.assert_allclose(heading, [np.cos(yaw), np.sin(yaw)], atol=1e-12)
    left = (c[0] - c[3])[:2] / size[1]                                   # y left of the heading
    np.testing.assert_allclose(left, [-np.sin(yaw), np.cos(yaw)], atol=1e-12)
    assert np.all(c[:4, 2] == center[2] - size[2] / 2)


def test_invert_transform():
    rng = np.random.default_rng(1)
    for _ in range(5):
        R = geometry.camera_rotation(*rng.uniform(-3, 3, 3))
        T = geometry.make_transform(R, rng.normal(size=3))
        Ti = geometry.invert_transform(T)
        np.testing.assert_allclose(Ti @ T, np.eye(4), atol=1e-12)
        np.testing.assert_allclose(Ti, np.linalg.inv(T), atol=1e-12)
        p = rng.normal(size=(4, 3))
        np.testing.assert_allclose(geometry.transform_points(Ti, geometry.transform_points(T, p)), p, atol=1e-12)


def test_wrap_angle():
    np.testing.assert_allclose(geometry.wrap_angle([0.0, np.pi, -np.pi, 3 * np.pi / 2]),
                               [0, -np.pi, -np.pi, -np.pi / 2])
