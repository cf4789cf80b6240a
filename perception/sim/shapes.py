"""What things look like: detection targets and distractors as a few convex parts each.

Every builder takes the object's size (length along its heading, width, height) and returns a
`Solid` whose parts fill exactly that box in the solid frame (x forward, y left, z up, origin on
the ground under the box centre), so the ground-truth box is the tight box around what is drawn.
Colours are BGR albedos in 0..255; lighting is applied later.
"""
from __future__ import annotations

import numpy as np

from perception.sim.scene import BACK, BOTTOM, FRONT, LEFT, RIGHT, TOP, Part, Solid

# Typical sizes (length, width, height) in metres; the world jitters them per object.
CLASS_SIZES = {
    0: (4.5, 1.85, 1.55),    # car
    1: (8.0, 2.5, 3.3),      # truck
    2: (0.6, 0.62, 1.75),    # pedestrian (stride x shoulders x height)
    3: (1.75, 0.6, 1.75),    # cyclist
    4: (0.42, 0.42, 0.72),   # traffic cone
}

CAR_COLORS = [(235, 235, 235), (30, 30, 32), (170, 170, 175), (110, 110, 115), (35, 35, 170),
              (150, 70, 30), (90, 40, 20), (50, 110, 40), (40, 190, 230), (150, 180, 200),
              (40, 60, 110), (60, 20, 120), (200, 200, 190)]
CARGO_COLORS = [(235, 235, 235), (200, 200, 205), (60, 60, 180), (160, 100, 40), (40, 150, 60),
                (40, 170, 220), (120, 120, 120)]
CLOTHES = [(40, 40, 40), (140, 70, 30), (200, 200, 200), (60, 60, 160), (50, 120, 60), (30, 130, 220),
           (120, 60, 110), (80, 80, 80), (170, 150, 120), (30, 30, 90), (20, 100, 200), (90, 140, 180)]
SKIN = [(150, 175, 220), (110, 140, 190), (70, 95, 140), (50, 70, 100)]
GLASS = (70, 55, 45)
TYRE = (28, 28, 30)
CONE_ORANGE = (20, 100, 245)
WHITE = (240, 240, 240)


def jitter_color(rng: np.random.Generator, color, amount: float = 0.12) -> np.ndarray:
    """A colour varied in brightness and a little per channel (BGR float)."""
    c = np.asarray(color, dtype=np.float64)
    c = c * rng.uniform(1 - amount, 1 + amount) * rng.uniform(1 - amount / 2, 1 + amount / 2, 3)
    return np.clip(c, 0, 255)


def faces(color, **override) -> np.ndarray:
    """(6, 3) face colours: all `color` except the named faces (front, back, left, right, top,
    bottom; `sides` sets front, back, left and right)."""
    out = np.tile(np.asarray(color, dtype=np.float64), (6, 1))
    names = {"front": [FRONT], "back": [BACK], "left": [LEFT], "right": [RIGHT], "top": [TOP],
             "bottom": [BOTTOM], "sides": [FRONT, BACK, LEFT, RIGHT]}
    for name, c in override.items():
        out[names[name]] = np.asarray(c, dtype=np.float64)
    return out


def box(lo, hi, colors, taper=(1.0, 1.0)) -> Part:
    return Part(np.asarray(lo, float), np.asarray(hi, float), colors, taper)


def _mix(a, b, w):
    return np.asarray(a, float) * (1 - w) + np.asarray(b, float) * w


# ------------------------------------------------------------------------------------------------
# detection targets

def car(rng: np.random.Generator, size, cj: float = 0.12) -> Solid:
    """Body + cabin with dark windows + two dark axle blocks. The cabin sits towards the back and
    the back face has a red tail-light tint, so the heading is visible."""
    l, w, h = size
    body = jitter_color(rng, CAR_COLORS[rng.integers(len(CAR_COLORS))], cj)
    clear = 0.24 * h                                          # underside: wheels show below the body
    belt = rng.uniform(0.58, 0.66) * h
    glass = jitter_color(rng, GLASS, 2 * cj)
    cab_front, cab_back = rng.uniform(0.12, 0.22) * l, -rng.uniform(0.28, 0.36) * l
    axle = 0.16 * l
    parts = [
        box((-l / 2, -0.49 * w, clear), (l / 2, 0.49 * w, belt),
            faces(body, front=_mix(body, (40, 40, 40), 0.35), back=_mix(body, (30, 30, 200), 0.35))),
        box((cab_back, -0.43 * w, belt), (cab_front, 0.43 * w, h), faces(glass, top=body),
            taper=(rng.uniform(0.6, 0.8), 0.85)),
        box((0.5 * l - 0.28 * l - axle / 2, -w / 2, 0), (0.5 * l - 0.28 * l + axle / 2, w / 2, clear), faces(TYRE)),
        box((-0.5 * l + 0.22 * l - axle / 2, -w / 2, 0), (-0.5 * l + 0.22 * l + axle / 2, w / 2, clear), faces(TYRE)),
    ]
    return Solid(parts)


def truck(rng: np.random.Generator, size, cj: float = 0.12) -> Solid:
    """Cab (lower body + glass upper) in front of a tall cargo box, on three axle blocks."""
    l, w, h = size
    cab_c = jitter_color(rng, CAR_COLORS[rng.integers(len(CAR_COLORS))], cj)
    cargo_c = jitter_color(rng, CARGO_COLORS[rng.integers(len(CARGO_COLORS))], cj)
    glass = jitter_color(rng, GLASS, 2 * cj)
    cab_len = min(2.3, 0.3 * l)
    x_cab = l / 2 - cab_len
    clear = 0.16 * h
    cab_top = rng.uniform(0.72, 0.85) * h
    waist = 0.5 * h
    axle = 0.1 * l
    parts = [
        box((x_cab, -0.48 * w, clear), (l / 2, 0.48 * w, waist), faces(cab_c, front=_mix(cab_c, (40, 40, 40), 0.3))),
        box((x_cab, -0.46 * w, waist), (l / 2 - 0.1, 0.46 * w, cab_top), faces(glass, top=cab_c, back=cab_c),
            taper=(0.85, 0.95)),
        box((-l / 2, -w / 2, clear + 0.05), (x_cab - 0.15, w / 2, h),
            faces(cargo_c, back=_mix(cargo_c, (30, 30, 30), 0.25))),
    ]
    for x in (l / 2 - 0.55 * cab_len, -l / 2 + 0.25 * l, -l / 2 + 0.12 * l):
        parts.append(box((x - axle / 2, -0.47 * w, 0), (x + axle / 2, 0.47 * w, clear), faces(TYRE)))
    return Solid(parts)


def pedestrian(rng: np.random.Generator, size, cj: float = 0.12) -> Solid:
    """Legs (in stride, so they span the length) + torso with arms (spans the width) + head."""
    l, w, h = size
    trousers = jitter_color(rng, CLOTHES[rng.integers(len(CLOTHES))], 2 * cj)
    shirt = jitter_color(rng, CLOTHES[rng.integers(len(CLOTHES))], 2 * cj)
    skin = jitter_color(rng, SKIN[rng.integers(len(SKIN))], cj)
    hip, shoulder, neck = 0.48 * h, 0.82 * h, 0.86 * h
    parts = [
        box((-l / 2, -0.16 * w, 0), (l / 2, 0.16 * w, hip), faces(trousers), taper=(0.35, 1.0)),
        box((-0.22 * l, -w / 2, hip), (0.22 * l, w / 2, shoulder), faces(shirt), taper=(1.0, 0.85)),
        box((-0.16 * l, -0.14 * w, neck), (0.2 * l, 0.14 * w, h), faces(skin, top=_mix(skin, (20, 20, 20), 0.6))),
    ]
    return Solid(parts)


def cyclist(rng: np.random.Generator, size, cj: float = 0.12) -> Solid:
    """Thin dark bike (two wheels and a frame) with a rider (legs, torso, head) on it."""
    l, w, h = size
    bike = jitter_color(rng, [(30, 30, 30), (40, 40, 140), (120, 60, 30), (90, 90, 90)][rng.integers(4)], cj)
    jersey = jitter_color(rng, CLOTHES[rng.integers(len(CLOTHES))], 2 * cj)
    legs = jitter_color(rng, CLOTHES[rng.integers(len(CLOTHES))], 2 * cj)
    skin = jitter_color(rng, SKIN[rng.integers(len(SKIN))], cj)
    wheel = min(0.68, 0.38 * l)
    wheel_h = 0.38 * h
    seat = 0.5 * h
    parts = [
        box((l / 2 - wheel, -0.04, 0), (l / 2, 0.04, wheel_h), faces(TYRE), taper=(0.55, 1.0)),
        box((-l / 2, -0.04, 0), (-l / 2 + wheel, 0.04, wheel_h), faces(TYRE), taper=(0.55, 1.0)),
        box((-l / 2 + wheel, -0.04, 0.18 * h), (l / 2 - wheel, 0.04, seat), faces(bike)),
        box((-0.1 * l, -0.13, 0.22 * h), (0.06 * l, 0.13, seat), faces(legs)),
        box((-0.16 * l, -w / 2, seat), (0.08 * l, w / 2, 0.86 * h), faces(jersey), taper=(1.0, 0.8)),
        box((-0.02 * l, -0.1, 0.87 * h), (0.1 * l, 0.1, h), faces(skin, top=_mix(skin, (20, 20, 20), 0.6))),
    ]
    return Solid(parts)


def traffic_cone(rng: np.random.Generator, size, cj: float = 0.12) -> Solid:
    """Square base plate, then an orange tapered stack with a white reflective band."""
    l, w, h = size
    orange = jitter_color(rng, CONE_ORANGE, cj)
    parts = [
        box((-l / 2, -w / 2, 0), (l / 2, w / 2, 0.05 * h), faces(_mix(orange, (20, 20, 20), 0.5))),
        box((-0.34 * l, -0.34 * w, 0.05 * h), (0.34 * l, 0.34 * w, 0.45 * h), faces(orange), taper=(0.76, 0.76)),
        box((-0.26 * l, -0.26 * w, 0.45 * h), (0.26 * l, 0.26 * w, 0.62 * h), faces(WHITE), taper=(0.8, 0.8)),
        box((-0.21 * l, -0.21 * w, 0.62 * h), (0.21 * l, 0.21 * w, h), faces(orange), taper=(0.3, 0.3)),
    ]
    return Solid(parts)


BUILDERS = (car, truck, pedestrian, cyclist, traffic_cone)   # index = class id


# ------------------------------------------------------------------------------------------------
# distractors (never detection targets)

BUILDING_COLORS = [(170, 185, 200), (60, 80, 150), (200, 200, 200), (120, 130, 140), (150, 165, 180),
                   (110, 140, 170), (170, 150, 120), (90, 100, 110), (200, 210, 220), (80, 110, 170)]


def building(rng: np.random.Generator, l: float, w: float, h: float) -> Solid:
    """A block, sometimes with a setback upper storey; facade darker at street level."""
    wall = jitter_color(rng, BUILDING_COLORS[rng.integers(len(BUILDING_COLORS))], 0.15)
    roof = jitter_color(rng, (90, 90, 95), 0.2)
    parts = [box((-l / 2, -w / 2, 0), (l / 2, w / 2, h), faces(wall, top=roof))]
    if rng.random() < 0.35 and h > 6:
        h2 = rng.uniform(2.5, 6.0)
        parts.append(box((-0.35 * l, -0.35 * w, h), (0.35 * l, 0.35 * w, h + h2),
                         faces(jitter_color(rng, wall, 0.1), top=roof)))
    return Solid(parts, large=True)


def street_light(rng: np.random.Generator, h: float) -> Solid:
    """Thin pole with a lamp arm reaching towards +x (towards the road when posed)."""
    grey = jitter_color(rng, (110, 115, 120), 0.2)
    arm = rng.uniform(1.0, 2.0)
    return Solid([box((-0.09, -0.09, 0), (0.09, 0.09, h - 0.2), faces(grey)),
                  box((-0.09, -0.12, h - 0.2), (arm, 0.12, h), faces(grey, bottom=(220, 240, 250)))])


def tree(rng: np.random.Generator, max_radius: float = 2.5) -> Solid:
    """Trunk and a tapered two-tier canopy (trunk taller than a person, so people pass under)."""
    trunk_h = rng.uniform(2.3, 3.2)
    r = rng.uniform(0.6, 1.0) * max_radius
    crown = rng.uniform(2.5, 5.0)
    green = jitter_color(rng, [(40, 110, 60), (50, 130, 90), (30, 90, 50), (60, 120, 110)][rng.integers(4)], 0.2)
    bark = jitter_color(rng, (40, 60, 80), 0.2)
    t = rng.uniform(0.12, 0.2)
    return Solid([
        box((-t, -t, 0), (t, t, trunk_h), faces(bark)),
        box((-r, -r, trunk_h), (r, r, trunk_h + 0.55 * crown), faces(green), taper=(0.9, 0.9)),
        box((-0.8 * r, -0.8 * r, trunk_h + 0.55 * crown), (0.8 * r, 0.8 * r, trunk_h + crown),
            faces(jitter_color(rng, green, 0.1)), taper=(0.45, 0.45)),
    ])


def sign(rng: np.random.Generator) -> Solid:
    """A pole with a plate facing +x: person-height clutter next to the sidewalk."""
    h = rng.uniform(2.0, 2.8)
    plate = [(40, 40, 200), (170, 90, 20), (230, 230, 230), (30, 200, 230), (50, 130, 40)][rng.integers(5)]
    s = rng.uniform(0.5, 0.8)
    return Solid([box((-0.04, -0.04, 0), (0.04, 0.04, h - s), faces((150, 150, 150))),
                  box((-0.03, -s / 2, h - s), (0.03, s / 2, h), faces((200, 200, 200), front=plate))])


def bin_or_bollard(rng: np.random.Generator) -> Solid:
    """Small street furniture, some of it orange or red (not everything orange is a cone)."""
    color = jitter_color(rng, [(40, 90, 40), (90, 90, 90), (160, 90, 30), (30, 90, 230), (40, 40, 190),
                               (30, 200, 230), (40, 40, 40)][rng.integers(7)], 0.15)
    if rng.random() < 0.5:   # bin with a lid
        s, h = rng.uniform(0.45, 0.7), rng.uniform(0.8, 1.15)
        return Solid([box((-s / 2, -s / 2, 0), (s / 2, s / 2, h - 0.08), faces(color)),
                      box((-s / 2 - 0.03, -s / 2 - 0.03, h - 0.08), (s / 2 + 0.03, s / 2 + 0.03, h),
                          faces(_mix(color, (20, 20, 20), 0.4)))])
    s, h = rng.uniform(0.12, 0.25), rng.uniform(0.6, 1.1)   # bollard
    return Solid([box((-s / 2, -s / 2, 0), (s / 2, s / 2, h), faces(color, top=(210, 210, 210)))])


def barrier(rng: np.random.Generator, length: float) -> Solid:
    """Jersey barrier: concrete grey, or red / white plastic."""
    color = jitter_color(rng, [(170, 170, 165), (200, 200, 200), (40, 40, 200), (235, 235, 235)][rng.integers(4)], 0.1)
    h, w = rng.uniform(0.75, 1.0), rng.uniform(0.45, 0.65)
    return Solid([box((-length / 2, -w / 2, 0), (length / 2, w / 2, h), faces(color), taper=(1.0, 0.45))])
