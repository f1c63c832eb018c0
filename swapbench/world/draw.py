"""Cartoon animals and savanna backgrounds drawn with PIL.

Each animal is drawn in its own coordinate frame (body length ~1, ground at y=0, y up, facing
+x) through a :class:`Pen` that maps it onto the canvas with a position, scale and mirror.
Scenes are drawn at ``SUPERSAMPLE`` times the output size and downsampled, which anti-aliases
the shapes. Species differ in silhouette *and* colour so that they stay apart at 32 px, where
the near neighbours (donkey/horse, okapi/giraffe/zebra, deer/horse) are the hard cases.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from dataclasses import dataclass

from PIL import Image, ImageDraw

SUPERSAMPLE = 4
RGB = tuple[int, int, int]


def jitter(rng: random.Random, colour: RGB, amount: int) -> RGB:
    return tuple(max(0, min(255, c + rng.randint(-amount, amount))) for c in colour)  # type: ignore[return-value]


@dataclass
class Pen:
    draw: ImageDraw.ImageDraw
    x0: float
    y0: float
    scale: float
    mirror: bool = False

    def pt(self, x: float, y: float) -> tuple[float, float]:
        return (self.x0 + (-x if self.mirror else x) * self.scale, self.y0 - y * self.scale)

    def ellipse(self, cx: float, cy: float, rx: float, ry: float, fill: RGB) -> None:
        (ax, ay), (bx, by) = self.pt(cx - rx, cy + ry), self.pt(cx + rx, cy - ry)
        self.draw.ellipse([min(ax, bx), min(ay, by), max(ax, bx), max(ay, by)], fill=fill)

    def poly(self, points: list[tuple[float, float]], fill: RGB) -> None:
        self.draw.polygon([self.pt(x, y) for x, y in points], fill=fill)

    def line(self, points: list[tuple[float, float]], width: float, fill: RGB) -> None:
        self.draw.line([self.pt(x, y) for x, y in points], fill=fill, width=max(1, round(width * self.scale)))

    def limb(self, x: float, y_top: float, length: float, angle: float, width: float, fill: RGB) -> tuple[float, float]:
        """A straight leg from (x, y_top) swung by ``angle`` radians; returns the foot position."""
        fx, fy = x + length * math.sin(angle), y_top - length * math.cos(angle)
        self.line([(x, y_top), (fx, fy)], width, fill)
        return fx, fy


@dataclass
class Pose:
    stride: float  # leg swing in radians (0 = standing)
    head_down: bool  # grazing / drinking

    @property
    def name(self) -> str:
        return "grazing" if self.head_down else ("walking" if self.stride > 0.2 else "standing")


def _legs(pen: Pen, xs: list[float], top: float, length: float, stride: float, width: float, fill: RGB,
          hoof: RGB | None = None, stripe: Callable[[float, float, float, float], None] | None = None) -> None:
    for i, x in enumerate(xs):
        angle = stride if i % 2 == 0 else -stride
        fx, fy = pen.limb(x, top, length, angle, width, fill)
        if stripe:
            stripe(x, top, fx, fy)
        if hoof:
            pen.line([(fx, fy + 0.04), (fx, fy)], width * 1.1, hoof)


def giraffe(pen: Pen, rng: random.Random, pose: Pose) -> None:
    body = jitter(rng, (232, 182, 72), 14)
    patch = jitter(rng, (140, 78, 30), 12)
    _legs(pen, [-0.3, -0.18, 0.22, 0.34], 0.72, 0.72, pose.stride, 0.07, body, hoof=(70, 50, 30))
    pen.ellipse(0.0, 0.85, 0.45, 0.2, body)
    if pose.head_down:
        neck_top = (0.75, 0.25)
    else:
        neck_top = (0.55, 1.75)
    pen.line([(0.32, 0.92), neck_top], 0.13, body)
    pen.line([(0.3, 0.98), (neck_top[0] - 0.05, neck_top[1] - 0.05)], 0.04, patch)  # mane
    hx, hy = neck_top
    pen.ellipse(hx + 0.1, hy, 0.15, 0.07, body)
    pen.line([(hx, hy + 0.05), (hx - 0.02, hy + 0.16)], 0.03, patch)  # ossicones
    pen.line([(hx + 0.06, hy + 0.05), (hx + 0.06, hy + 0.16)], 0.03, patch)
    for _ in range(9):
        px, py = rng.uniform(-0.35, 0.35), rng.uniform(0.72, 0.98)
        pen.ellipse(px, py, 0.06, 0.05, patch)
    for t in (0.3, 0.55, 0.8):
        nx, ny = 0.32 + (hx - 0.32) * t, 0.92 + (hy - 0.92) * t
        pen.ellipse(nx, ny, 0.045, 0.045, patch)
    pen.line([(-0.44, 0.9), (-0.55, 0.6)], 0.025, body)


def zebra(pen: Pen, rng: random.Random, pose: Pose) -> None:
    white, black = jitter(rng, (245, 245, 245), 6), jitter(rng, (15, 15, 15), 8)

    def leg_stripes(x: float, top: float, fx: float, fy: float) -> None:
        for t in (0.3, 0.6):
            sx, sy = x + (fx - x) * t, top + (fy - top) * t
            pen.line([(sx - 0.06, sy), (sx + 0.06, sy)], 0.06, black)

    _legs(pen, [-0.32, -0.2, 0.2, 0.32], 0.55, 0.55, pose.stride, 0.1, white, hoof=black, stripe=leg_stripes)
    pen.ellipse(0.0, 0.72, 0.47, 0.24, white)
    # Few bold stripes: at 32 px finer ones fall below what an 8x8 latent can carry.
    for x in (-0.3, -0.1, 0.1, 0.3):
        pen.line([(x, 0.95), (x + 0.03, 0.5)], 0.1, black)
    head = (0.78, 0.3) if pose.head_down else (0.72, 1.12)
    pen.line([(0.35, 0.8), head], 0.2, white)
    pen.line([(0.33, 0.93), (head[0] - 0.04, head[1] + 0.1)], 0.06, black)  # mane
    for t in (0.35, 0.65):
        nx, ny = 0.35 + (head[0] - 0.35) * t, 0.8 + (head[1] - 0.8) * t
        pen.line([(nx - 0.1, ny), (nx + 0.1, ny)], 0.06, black)
    pen.ellipse(head[0] + 0.1, head[1] - 0.02, 0.17, 0.08, white)
    pen.ellipse(head[0] + 0.24, head[1] - 0.04, 0.05, 0.05, black)
    pen.line([(-0.46, 0.8), (-0.58, 0.45)], 0.04, black)


def elephant(pen: Pen, rng: random.Random, pose: Pose) -> None:
    grey = jitter(rng, (132, 134, 142), 12)
    dark = tuple(max(0, c - 30) for c in grey)
    _legs(pen, [-0.38, -0.2, 0.2, 0.38], 0.5, 0.5, pose.stride * 0.5, 0.2, grey)
    pen.ellipse(0.0, 0.82, 0.58, 0.42, grey)
    pen.ellipse(0.58, 0.98, 0.26, 0.26, grey)
    pen.ellipse(0.45, 0.92, 0.2, 0.3, dark)  # ear
    tip = (0.9, 0.45) if not pose.head_down else (0.95, 0.1)
    pen.line([(0.78, 0.9), (0.85, 0.65), tip], 0.11, grey)  # trunk
    pen.line([(0.7, 0.78), (0.86, 0.7)], 0.05, (250, 250, 235))  # tusk
    pen.ellipse(0.68, 1.04, 0.03, 0.03, (20, 20, 20))
    pen.line([(-0.56, 0.85), (-0.66, 0.55)], 0.03, grey)


def horse(pen: Pen, rng: random.Random, pose: Pose) -> None:
    coat = jitter(rng, rng.choice([(150, 82, 38), (120, 66, 30), (170, 100, 50)]), 10)
    dark = jitter(rng, (45, 28, 18), 8)
    _legs(pen, [-0.32, -0.2, 0.2, 0.32], 0.58, 0.58, pose.stride, 0.1, coat, hoof=dark)
    pen.ellipse(0.0, 0.75, 0.48, 0.23, coat)
    head = (0.8, 0.3) if pose.head_down else (0.72, 1.2)
    pen.line([(0.35, 0.82), head], 0.2, coat)
    pen.line([(0.3, 0.95), (head[0] - 0.06, head[1] + 0.08)], 0.08, dark)  # mane
    pen.ellipse(head[0] + 0.12, head[1] - 0.03, 0.19, 0.085, coat)
    pen.line([(head[0] - 0.02, head[1] + 0.05), (head[0] - 0.0, head[1] + 0.15)], 0.04, coat)  # short ear
    pen.line([(-0.46, 0.85), (-0.62, 0.42)], 0.09, dark)  # long dark tail


def lion(pen: Pen, rng: random.Random, pose: Pose) -> None:
    fur = jitter(rng, (222, 165, 70), 12)
    mane = jitter(rng, (150, 75, 20), 14)
    _legs(pen, [-0.32, -0.2, 0.22, 0.34], 0.42, 0.42, pose.stride, 0.12, fur)
    pen.ellipse(0.0, 0.58, 0.5, 0.2, fur)
    hy = 0.5 if pose.head_down else 0.8
    pen.ellipse(0.5, hy, 0.3, 0.3, mane)
    pen.ellipse(0.56, hy - 0.02, 0.16, 0.15, fur)
    pen.ellipse(0.66, hy + 0.02, 0.025, 0.025, (30, 20, 10))
    pen.line([(-0.48, 0.6), (-0.68, 0.8), (-0.78, 0.72)], 0.04, fur)
    pen.ellipse(-0.78, 0.72, 0.06, 0.06, mane)


def cow(pen: Pen, rng: random.Random, pose: Pose) -> None:
    white, black = jitter(rng, (240, 238, 232), 8), jitter(rng, (25, 22, 20), 8)
    # Holsteins and brown-patched breeds alike, so "black on white" alone does not mean cow.
    patch = black if rng.random() < 0.5 else jitter(rng, (125, 70, 35), 14)
    _legs(pen, [-0.38, -0.26, 0.26, 0.38], 0.45, 0.45, pose.stride * 0.6, 0.13, white, hoof=black)
    pen.poly([(-0.55, 0.45), (0.5, 0.45), (0.55, 0.95), (-0.55, 0.95)], white)  # boxy body
    for _ in range(3):
        px, py = rng.uniform(-0.4, 0.35), rng.uniform(0.58, 0.85)
        pen.ellipse(px, py, rng.uniform(0.12, 0.18), rng.uniform(0.1, 0.14), patch)
    pen.ellipse(0.05, 0.42, 0.1, 0.06, (240, 160, 170))  # udder
    hy = 0.35 if pose.head_down else 0.88
    pen.ellipse(0.68, hy, 0.17, 0.14, white)
    pen.ellipse(0.8, hy - 0.06, 0.09, 0.07, (240, 160, 170))  # pink nose
    pen.line([(0.6, hy + 0.1), (0.55, hy + 0.2)], 0.035, (230, 225, 200))  # horns
    pen.line([(0.72, hy + 0.1), (0.77, hy + 0.2)], 0.035, (230, 225, 200))
    pen.line([(-0.55, 0.9), (-0.62, 0.5)], 0.03, black)


def donkey(pen: Pen, rng: random.Random, pose: Pose) -> None:
    coat = jitter(rng, (128, 116, 104), 10)
    pale = jitter(rng, (225, 220, 210), 8)
    _legs(pen, [-0.3, -0.18, 0.18, 0.3], 0.45, 0.45, pose.stride, 0.09, coat, hoof=(40, 35, 30))
    pen.ellipse(0.0, 0.6, 0.42, 0.2, coat)
    pen.ellipse(0.0, 0.5, 0.3, 0.08, pale)  # pale belly
    head = (0.68, 0.25) if pose.head_down else (0.62, 0.95)
    pen.line([(0.3, 0.66), head], 0.17, coat)
    pen.ellipse(head[0] + 0.1, head[1] - 0.03, 0.17, 0.09, coat)
    pen.ellipse(head[0] + 0.22, head[1] - 0.05, 0.07, 0.06, pale)  # white muzzle
    pen.line([(head[0] - 0.02, head[1] + 0.05), (head[0] - 0.1, head[1] + 0.38)], 0.06, coat)  # long ears
    pen.line([(head[0] + 0.04, head[1] + 0.05), (head[0] + 0.02, head[1] + 0.38)], 0.06, coat)
    pen.line([(-0.4, 0.65), (-0.5, 0.35)], 0.025, coat)


def deer(pen: Pen, rng: random.Random, pose: Pose) -> None:
    coat = jitter(rng, (150, 92, 55), 10)
    antler = jitter(rng, (235, 225, 200), 10)
    _legs(pen, [-0.26, -0.16, 0.18, 0.28], 0.62, 0.62, pose.stride, 0.06, coat, hoof=(40, 30, 20))
    pen.ellipse(0.0, 0.78, 0.38, 0.17, coat)
    for _ in range(5):
        pen.ellipse(rng.uniform(-0.25, 0.2), rng.uniform(0.8, 0.9), 0.025, 0.025, (250, 245, 235))
    pen.ellipse(0.0, 0.67, 0.28, 0.05, (245, 240, 230))  # pale belly
    pen.ellipse(-0.36, 0.82, 0.09, 0.09, (250, 250, 250))  # white rump
    head = (0.62, 0.3) if pose.head_down else (0.55, 1.15)
    pen.line([(0.28, 0.85), head], 0.1, coat)
    pen.ellipse(head[0] + 0.08, head[1] - 0.02, 0.13, 0.065, coat)
    base = (head[0] - 0.02, head[1] + 0.05)
    for side in (-0.12, 0.1):
        top = (base[0] + side, base[1] + 0.35)
        pen.line([base, top], 0.045, antler)
        pen.line([(base[0] + side * 0.5, base[1] + 0.18), (base[0] + side * 0.5 + 0.14, base[1] + 0.28)], 0.04, antler)


def okapi(pen: Pen, rng: random.Random, pose: Pose) -> None:
    coat = jitter(rng, (78, 36, 34), 10)
    white = jitter(rng, (238, 232, 220), 6)

    def leg_stripes(x: float, top: float, fx: float, fy: float) -> None:
        for t in (0.15, 0.4, 0.65):
            sx, sy = x + (fx - x) * t, top + (fy - top) * t
            pen.line([(sx - 0.07, sy), (sx + 0.07, sy)], 0.06, white)

    _legs(pen, [-0.3, -0.18, 0.2, 0.32], 0.58, 0.58, pose.stride, 0.11, coat, stripe=leg_stripes)
    pen.ellipse(0.0, 0.76, 0.45, 0.21, coat)
    for y in (0.72, 0.82):
        pen.line([(-0.45, y), (-0.28, y)], 0.05, white)  # striped rump
    head = (0.76, 0.28) if pose.head_down else (0.66, 1.25)
    pen.line([(0.33, 0.85), head], 0.14, coat)
    pen.ellipse(head[0] + 0.1, head[1] - 0.02, 0.16, 0.08, white)  # pale face
    pen.line([(head[0] - 0.02, head[1] + 0.05), (head[0] - 0.06, head[1] + 0.2)], 0.05, coat)


ANIMALS: dict[str, Callable[[Pen, random.Random, Pose], None]] = {
    "giraffe": giraffe,
    "zebra": zebra,
    "elephant": elephant,
    "horse": horse,
    "lion": lion,
    "cow": cow,
    "donkey": donkey,
    "deer": deer,
    "okapi": okapi,
}

# Height of each animal relative to its body length, used to keep it inside the frame.
HEIGHTS = {"giraffe": 1.95, "zebra": 1.25, "elephant": 1.3, "horse": 1.3, "lion": 1.1, "cow": 1.1,
           "donkey": 1.35, "deer": 1.6, "okapi": 1.4}

BACKGROUNDS = ("grass", "sand", "sky", "trees")


def background(draw: ImageDraw.ImageDraw, size: int, kind: str, rng: random.Random) -> float:
    """Paint a background; returns the horizon's y position as a share of the height."""
    sky = jitter(rng, (150, 200, 240), 15)
    if kind == "sky":
        horizon = rng.uniform(0.8, 0.9)
    else:
        horizon = rng.uniform(0.35, 0.55)
    ground = {
        "grass": (110, 170, 70),
        "trees": (120, 165, 75),
        "sand": (222, 200, 150),
        "sky": (150, 160, 90),
    }[kind]
    ground = jitter(rng, ground, 15)
    draw.rectangle([0, 0, size, size * horizon], fill=sky)
    draw.rectangle([0, size * horizon, size, size], fill=ground)
    if kind == "sky":
        for _ in range(rng.randint(1, 3)):
            cx, cy = rng.uniform(0, size), rng.uniform(0.1, 0.5) * size
            w = rng.uniform(0.1, 0.2) * size
            draw.ellipse([cx - w, cy - w * 0.4, cx + w, cy + w * 0.4], fill=(248, 248, 250))
    if kind == "trees":
        for _ in range(rng.randint(1, 2)):
            tx = rng.uniform(0.05, 0.95) * size
            ty = size * horizon
            trunk_h = rng.uniform(0.12, 0.2) * size
            draw.line([(tx, ty + 2), (tx, ty - trunk_h)], fill=(90, 60, 35), width=max(2, size // 40))
            w = rng.uniform(0.12, 0.2) * size
            draw.ellipse([tx - w, ty - trunk_h - w * 0.35, tx + w, ty - trunk_h + w * 0.25],
                         fill=jitter(rng, (55, 110, 45), 10))
    return horizon


@dataclass
class Placement:
    concept: str
    x: float  # centre, share of width
    ground: float  # feet line, share of height
    scale: float  # body length, share of width
    mirror: bool
    pose: Pose


def render(placements: list[Placement], kind: str, size: int, rng: random.Random) -> Image.Image:
    big = size * SUPERSAMPLE
    image = Image.new("RGB", (big, big))
    draw = ImageDraw.Draw(image)
    background(draw, big, kind, rng)
    for p in sorted(placements, key=lambda p: p.ground):  # far animals first
        pen = Pen(draw, p.x * big, p.ground * big, p.scale * big, p.mirror)
        ANIMALS[p.concept](pen, rng, p.pose)
    return image.resize((size, size), Image.Resampling.BOX)
