"""The built-in toy faces: synthetic faces with labels, rendered on demand, so that training, FID and
attribute editing can all be tried without downloading anything.

Each face is a function of (seed, index): a face oval with ears and neck, hair behind and a fringe in front,
eyes with irises, brows, a nose and a mouth whose curve sets the expression, sometimes glasses.
"""
import types
from typing import NamedTuple

import numpy as np
import torch

TOYFACES = "toyfaces"
TOY_ATTRIBUTES = ("smile", "glasses", "blond")

# Palettes (RGB) for the toy faces; a colour is picked, then jittered.
SKIN = np.array([[255, 224, 196], [241, 194, 125], [224, 172, 105], [198, 134, 66], [141, 85, 36],
                 [255, 205, 178]], np.float32)
HAIR = np.array([[35, 28, 24], [105, 66, 38], [232, 198, 110], [170, 72, 32], [165, 165, 170]], np.float32)
BLOND = 2  # row of HAIR
IRIS = np.array([[92, 56, 28], [60, 110, 170], [70, 120, 70], [40, 30, 25]], np.float32)
NUM_UNIFORMS = 40  # random numbers drawn per face; fixed so that adding a feature never reshuffles others
# What each of a face's uniforms decides, in the order they are drawn, with how many it takes. A new
# feature goes at the end (within NUM_UNIFORMS), so every existing face keeps its looks.
DRAWS = (("background", 3), ("head_x", 1), ("head_y", 1), ("head_width", 1), ("head_length", 1),
         ("skin", 1), ("skin_shade", 1), ("hair", 1), ("hair_shade", 1), ("shirt", 3),
         ("long_hair", 1), ("hair_length", 1), ("hair_width", 1), ("hairline", 1), ("fringe_wave", 1),
         ("eye_spacing", 1), ("eye_height", 1), ("eye_width", 1), ("eye_openness", 1),
         ("iris", 1), ("iris_shade", 1), ("gaze", 1), ("brow_height", 1), ("brow_tilt", 1),
         ("glasses", 1), ("brow_thickness", 1),
         ("smile", 1), ("mouth_curve", 1), ("mouth_height", 1), ("mouth_width", 1), ("lips", 3),
         ("lip_thickness", 1))


class Head(NamedTuple):
    """Per-face centre, radii and colours of the head, which every feature is placed and tinted by."""
    cx: np.ndarray
    cy: np.ndarray
    rx: np.ndarray
    ry: np.ndarray
    skin: np.ndarray
    hair: np.ndarray


def _draws(indices, seed):
    """Each face's uniforms by name (DRAWS): a (B,) row per name, (k, B) rows for a name drawn k times.

    A face's uniforms are a function of (seed, index) alone: any subset renders the same faces.
    """
    u = np.stack([np.random.default_rng([seed, int(i)]).random(NUM_UNIFORMS) for i in indices]).astype(np.float32).T
    rows, start = {}, 0
    for name, count in DRAWS:
        rows[name] = u[start] if count == 1 else u[start:start + count]
        start += count
    return types.SimpleNamespace(**rows)


def _lerp(u, lo, hi):
    return lo + (hi - lo) * u


def _palette_row(palette, u):
    """Which row of the palette u in [0, 1) picks."""
    return np.minimum((u * len(palette)).astype(int), len(palette) - 1)


def _pick(palette, u, jitter_u, spread):
    """A palette row per face chosen by u, plus a per-face brightness jitter of +-spread."""
    return np.clip(palette[_palette_row(palette, u)] * _lerp(jitter_u, 1 - spread, 1 + spread)[:, None], 0, 255)


class _Canvas:
    """A batch of images being painted with antialiased shapes, coordinates in [-1, 1] (y pointing down)."""

    def __init__(self, background, res):
        self.res = res
        self.img = torch.from_numpy(background.astype(np.float32))[:, None, None, :].repeat(1, res, res, 1)
        axis = (np.arange(res, dtype=np.float32) + 0.5) / res * 2 - 1
        self.y = axis[None, :, None]
        self.x = axis[None, None, :]

    def grey(self, level):
        """The same grey for every face."""
        return np.full((len(self.img), 3), level)

    def coverage(self, distance):
        """Signed distance (negative inside, in [-1, 1] units) -> coverage in [0, 1] with a one-pixel soft edge."""
        return np.clip(0.5 - distance * (self.res / 2), 0, 1)

    def ellipse_distance(self, cx, cy, rx, ry):
        dx = (self.x - cx[:, None, None]) / rx[:, None, None]
        dy = (self.y - cy[:, None, None]) / ry[:, None, None]
        # The distance in radii times the smaller radius: close to the true distance near the edge.
        return (np.sqrt(dx * dx + dy * dy) - 1) * np.minimum(rx, ry)[:, None, None]

    def curve_distance(self, cx, cy, half_width, lift, thickness):
        """Distance to a parabola y = cy - lift*(dx/half_width)^2 for |dx| <= half_width, minus thickness."""
        dx = self.x - cx[:, None, None]
        t = np.clip(dx / half_width[:, None, None], -1, 1)
        on_curve_y = cy[:, None, None] - lift[:, None, None] * t * t
        along = np.abs(dx) - half_width[:, None, None]
        return np.maximum(np.abs(self.y - on_curve_y), np.maximum(along, 0)) - thickness[:, None, None]

    def paint(self, alpha, colour, where=None):
        """Blend a colour (per face) over the picture where alpha (B, H, W) is set, optionally only on `where`."""
        if where is not None:
            alpha = alpha * where
        # Rows and columns the shape touches in any face: small features then cost little.
        rows, cols = np.flatnonzero(alpha.any(axis=(0, 2))), np.flatnonzero(alpha.any(axis=(0, 1)))
        if len(rows) == 0:
            return
        window = np.s_[:, rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1]
        colour = torch.from_numpy(colour.astype(np.float32))[:, None, None, :]
        weight = torch.from_numpy(np.ascontiguousarray(alpha[window], dtype=np.float32))[..., None]
        self.img[window].lerp_(colour, weight)

    def fill(self, distance, colour, where=None):
        """Paint the inside of a shape given by its signed distance."""
        self.paint(self.coverage(distance), colour, where)

    def to_uint8(self):
        return self.img.add_(0.5).clamp_(0, 255).to(torch.uint8).numpy()


def _head(draws):
    cx, cy = _lerp(draws.head_x, -0.08, 0.08), _lerp(draws.head_y, -0.02, 0.12)
    rx = _lerp(draws.head_width, 0.42, 0.56)
    ry = rx * _lerp(draws.head_length, 1.15, 1.38)
    return Head(cx, cy, rx, ry, skin=_pick(SKIN, draws.skin, draws.skin_shade, 0.08),
                hair=_pick(HAIR, draws.hair, draws.hair_shade, 0.12))


def _paint_head(canvas, draws, head):
    """Hair behind the head (long hair reaches the shoulders), shoulders, neck, ears and the face oval."""
    cx, cy, rx, ry = head.cx, head.cy, head.rx, head.ry
    hair_ry = ry * np.where(draws.long_hair < 0.5, _lerp(draws.hair_length, 1.25, 1.45),
                            _lerp(draws.hair_length, 1.05, 1.12))
    hair_cy = cy - ry * 0.08 + (hair_ry - ry) * 0.6
    canvas.fill(canvas.ellipse_distance(cx, hair_cy, rx * _lerp(draws.hair_width, 1.12, 1.3), hair_ry), head.hair)
    n = len(cx)
    canvas.fill(canvas.ellipse_distance(cx, cy + ry + 0.55, np.full(n, 0.95), np.full(n, 0.5)),
                _lerp(draws.shirt.T, 20, 220))
    neck = np.maximum(np.abs(canvas.x - cx[:, None, None]) - rx[:, None, None] * 0.45,
                      cy[:, None, None] - canvas.y)
    canvas.fill(neck, head.skin * 0.85)
    for side in (-1, 1):
        canvas.fill(canvas.ellipse_distance(cx + side * rx * 0.98, cy, rx * 0.16, ry * 0.2), head.skin * 0.93)
    canvas.fill(canvas.ellipse_distance(cx, cy, rx, ry), head.skin)


def _paint_fringe(canvas, draws, head):
    """The hair cap in front of the face, above a wavy hairline that varies per face."""
    cx, cy, rx, ry = head.cx, head.cy, head.rx, head.ry
    hairline = cy - ry * _lerp(draws.hairline, 0.38, 0.62)
    cap = canvas.ellipse_distance(cx, cy - ry * 0.06, rx * 1.06, ry * 1.02)
    wave = 0.04 * np.sin(canvas.x * 9 + draws.fringe_wave[:, None, None] * 6)
    canvas.fill(cap, head.hair, where=canvas.coverage(canvas.y - hairline[:, None, None] - wave))


def _paint_eyes(canvas, draws, head):
    """Eyes (white, iris, pupil), brows tilted to vary the expression, and glasses on some faces.
    Returns the glasses label of each face."""
    cx, cy, rx, ry = head.cx, head.cy, head.rx, head.ry
    eye_dx, eye_y = rx * _lerp(draws.eye_spacing, 0.32, 0.42), cy - ry * _lerp(draws.eye_height, 0.02, 0.14)
    eye_rx = rx * _lerp(draws.eye_width, 0.12, 0.17)
    eye_ry = eye_rx * _lerp(draws.eye_openness, 0.55, 0.8)
    iris = _pick(IRIS, draws.iris, draws.iris_shade, 0.1)
    gaze = _lerp(draws.gaze, -0.35, 0.35) * eye_rx
    brow_lift, brow_tilt = ry * _lerp(draws.brow_height, 0.14, 0.22), _lerp(draws.brow_tilt, -0.35, 0.35)
    n = len(cx)
    brow_thickness = np.full(n, 0.018) + 0.012 * draws.brow_thickness
    glasses = (draws.glasses < 0.3).astype(int)
    lens_r = eye_rx * 1.55
    for side in (-1, 1):
        ex = cx + side * eye_dx
        canvas.fill(canvas.ellipse_distance(ex, eye_y, eye_rx, eye_ry), canvas.grey(245.0))
        canvas.fill(canvas.ellipse_distance(ex + gaze, eye_y, eye_ry * 0.8, eye_ry * 0.8), iris)
        canvas.fill(canvas.ellipse_distance(ex + gaze, eye_y, eye_ry * 0.35, eye_ry * 0.35), canvas.grey(15.0))
        brow_y = eye_y - brow_lift + side * brow_tilt * eye_rx
        canvas.fill(canvas.curve_distance(ex, brow_y, eye_rx * 1.15, np.full(n, 0.02), brow_thickness),
                    head.hair * 0.7)
        ring = np.abs(canvas.ellipse_distance(ex, eye_y, lens_r, lens_r * 0.8)) - 0.018
        canvas.fill(ring, canvas.grey(25.0), where=glasses[:, None, None])
    bridge = canvas.curve_distance(cx, eye_y - lens_r * 0.2, eye_dx - lens_r, np.full(n, 0.02), np.full(n, 0.016))
    canvas.fill(bridge, canvas.grey(25.0), where=glasses[:, None, None])
    return glasses


def _paint_nose_and_mouth(canvas, draws, head):
    """A nose, and a mouth whose curve sets the expression: a smile lifts the corners of the mouth and opens
    it on the teeth. Returns the smile label of each face."""
    cx, cy, rx, ry = head.cx, head.cy, head.rx, head.ry
    canvas.fill(canvas.ellipse_distance(cx, cy + ry * 0.16, rx * 0.09, ry * 0.12), head.skin * 0.82)
    smile = (draws.smile < 0.5).astype(int)
    lift = ry * np.where(smile, _lerp(draws.mouth_curve, 0.07, 0.13), _lerp(draws.mouth_curve, -0.05, 0.015))
    mouth_y = cy + ry * _lerp(draws.mouth_height, 0.45, 0.55)
    half_width = rx * np.where(smile, _lerp(draws.mouth_width, 0.3, 0.42), _lerp(draws.mouth_width, 0.2, 0.3))
    lips = _lerp(draws.lips.T, np.array([150, 40, 50]), np.array([210, 90, 100]))
    thickness = np.where(smile, 0.03, 0.022) + 0.008 * draws.lip_thickness
    canvas.fill(canvas.curve_distance(cx, mouth_y, half_width, lift, thickness), lips)
    teeth = canvas.curve_distance(cx, mouth_y - 0.012, half_width * 0.75, lift * 0.8, thickness * 0.35)
    canvas.fill(teeth, canvas.grey(240.0), where=smile[:, None, None])
    return smile


def toyfaces(indices, res, seed=0):
    """Render synthetic faces; returns (uint8 (B, res, res, 3), {attribute: int array (B,)}).

    The labels (smile, glasses, blond) make attribute editing testable without real data.
    """
    draws = _draws(np.atleast_1d(np.asarray(indices)), seed)
    head = _head(draws)
    canvas = _Canvas(_lerp(draws.background.T, 80, 235), res)
    _paint_head(canvas, draws, head)
    _paint_fringe(canvas, draws, head)
    glasses = _paint_eyes(canvas, draws, head)
    smile = _paint_nose_and_mouth(canvas, draws, head)
    blond = (_palette_row(HAIR, draws.hair) == BLOND).astype(int)
    return canvas.to_uint8(), {"smile": smile, "glasses": glasses, "blond": blond}
