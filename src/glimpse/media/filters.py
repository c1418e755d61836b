"""Photo filters in the spirit of Instagram's, as colour grades plus an optional vignette.

The colour maths (`tone_curve`, `channel_curves`, `color_matrix`, `grade_pixel`,
`vignette_factor`) are plain functions over floats in 0..1 so they can be tested without
images. A grade is split into what each channel does on its own (curves, baked into one
`Image.point` table) and what mixes channels (saturation, warmth, sepia, fade: all affine,
composed into one `Image.convert` matrix): two cheap passes in C, where a `Color3DLUT`
costs four times as much for the same result.
"""

from __future__ import annotations

import functools
import itertools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from PIL import Image

Curve = tuple[tuple[float, float], ...]
RGB = tuple[float, float, float]

IDENTITY_CURVE: Curve = ((0.0, 0.0), (1.0, 1.0))

# The vignette mask is computed small and upscaled: it is a smooth radial ramp.
_VIGNETTE_MASK_SIZE = 64

# Rec. 601 luma weights, the ones Pillow's own RGB -> L conversion uses.
_LUMA = (0.299, 0.587, 0.114)


@dataclass(frozen=True)
class FilterSpec:
    """A named colour grade.

    Steps run in this order: brightness and contrast, the master tone curve, the
    per-channel curves, saturation (0 = black and white), warmth (+ warmer/- cooler),
    tint (+ magenta/- green), sepia mix, fade (lifts the blacks to this level), and
    finally a vignette that darkens the corners by up to `vignette`.
    """

    name: str
    label: str
    brightness: float = 0.0
    contrast: float = 1.0
    curve: Curve = IDENTITY_CURVE
    red: Curve = IDENTITY_CURVE
    green: Curve = IDENTITY_CURVE
    blue: Curve = IDENTITY_CURVE
    saturation: float = 1.0
    warmth: float = 0.0
    tint: float = 0.0
    sepia: float = 0.0
    fade: float = 0.0
    vignette: float = 0.0

    @property
    def is_identity(self) -> bool:
        """Whether the filter leaves every pixel as it is."""
        return self == FilterSpec(self.name, self.label)


def _clamp(value: float) -> float:
    return 0.0 if value < 0.0 else 1.0 if value > 1.0 else value


def tone_curve(points: Sequence[tuple[float, float]]) -> Callable[[float], float]:
    """Smooth monotone curve through control points (x ascending, all in 0..1).

    Fritsch-Carlson monotone cubic interpolation: like the curves tool of photo
    editors, it never overshoots between points, so a rising curve never reverses
    tones. Outside the first and last x the curve is flat.
    """
    xs = [float(p[0]) for p in points]
    ys = [float(p[1]) for p in points]
    if len(xs) < 2 or any(b <= a for a, b in itertools.pairwise(xs)):
        raise ValueError("a tone curve needs at least two points with increasing x")
    n = len(xs)
    secants = [(ys[i + 1] - ys[i]) / (xs[i + 1] - xs[i]) for i in range(n - 1)]
    tangents = [
        secants[0],
        *((secants[i - 1] + secants[i]) / 2 for i in range(1, n - 1)),
        secants[-1],
    ]
    for i, s in enumerate(secants):
        if s == 0.0:
            tangents[i] = tangents[i + 1] = 0.0
            continue
        a, b = tangents[i] / s, tangents[i + 1] / s
        if a < 0.0 or b < 0.0:
            # Non-monotone data between these points: flatten rather than overshoot.
            tangents[i] = max(tangents[i], 0.0) if s > 0 else min(tangents[i], 0.0)
            tangents[i + 1] = max(tangents[i + 1], 0.0) if s > 0 else min(tangents[i + 1], 0.0)
            a, b = tangents[i] / s, tangents[i + 1] / s
        norm = a * a + b * b
        if norm > 9.0:
            k = 3.0 / math.sqrt(norm)
            tangents[i], tangents[i + 1] = k * a * s, k * b * s

    def curve(x: float) -> float:
        if x <= xs[0]:
            return ys[0]
        if x >= xs[-1]:
            return ys[-1]
        i = 0
        while x > xs[i + 1]:
            i += 1
        h = xs[i + 1] - xs[i]
        t = (x - xs[i]) / h
        t2, t3 = t * t, t * t * t
        return (
            (2 * t3 - 3 * t2 + 1) * ys[i]
            + (t3 - 2 * t2 + t) * h * tangents[i]
            + (-2 * t3 + 3 * t2) * ys[i + 1]
            + (t3 - t2) * h * tangents[i + 1]
        )

    return curve


def channel_curves(spec: FilterSpec) -> tuple[Callable[[float], float], ...]:
    """The per-channel part of a grade (brightness, contrast, master and channel curves).

    Returns one function per channel (R, G, B) mapping 0..1 to 0..1.
    """
    master = tone_curve(spec.curve)

    def make(channel: Callable[[float], float]) -> Callable[[float], float]:
        def curve(c: float) -> float:
            c = _clamp((c - 0.5) * spec.contrast + 0.5 + spec.brightness)
            return _clamp(channel(_clamp(master(c))))

        return curve

    return tuple(make(tone_curve(points)) for points in (spec.red, spec.green, spec.blue))


Matrix = tuple[tuple[float, float, float, float], ...]
_IDENTITY_MATRIX: Matrix = ((1.0, 0.0, 0.0, 0.0), (0.0, 1.0, 0.0, 0.0), (0.0, 0.0, 1.0, 0.0))


_IDENTITY_3X3 = ((1.0, 0.0, 0.0), (0.0, 1.0, 0.0), (0.0, 0.0, 1.0))
# The classic sepia-tone mix (as in the CSS sepia() filter).
_SEPIA = ((0.393, 0.769, 0.189), (0.349, 0.686, 0.168), (0.272, 0.534, 0.131))


def _affine(linear: Sequence[Sequence[float]], offset: tuple[float, float, float]) -> Matrix:
    return tuple((row[0], row[1], row[2], offset[i]) for i, row in enumerate(linear))


def _compose(outer: Matrix, inner: Matrix) -> Matrix:
    """outer(inner(x)) for affine maps written as 3x4 rows (last column the offset)."""
    rows = []
    for o in outer:
        row = [sum(o[k] * inner[k][j] for k in range(3)) for j in range(3)]
        row.append(sum(o[k] * inner[k][3] for k in range(3)) + o[3])
        rows.append((row[0], row[1], row[2], row[3]))
    return tuple(rows)


def color_matrix(spec: FilterSpec) -> Matrix:
    """The cross-channel part of a grade as one affine map over 0..1 RGB.

    Saturation, warmth, tint, sepia and fade are all affine, so they compose into a
    single 3x4 matrix that Pillow applies in one pass (`Image.convert` with a matrix).
    """
    s, k, f = spec.saturation, spec.sepia, spec.fade
    saturate = _affine(
        [[(s if i == j else 0.0) + (1.0 - s) * _LUMA[j] for j in range(3)] for i in range(3)],
        (0.0, 0.0, 0.0),
    )
    shift = _affine(_IDENTITY_3X3, (spec.warmth, -spec.tint, -spec.warmth))
    sepia = _affine(
        [[(1.0 - k) * _IDENTITY_3X3[i][j] + k * _SEPIA[i][j] for j in range(3)] for i in range(3)],
        (0.0, 0.0, 0.0),
    )
    fade = _affine([[(1.0 - f) * v for v in row] for row in _IDENTITY_3X3], (f, f, f))
    matrix = _IDENTITY_MATRIX
    for step in (saturate, shift, sepia, fade):
        matrix = _compose(step, matrix)
    return matrix


def grade_pixel(spec: FilterSpec, r: float, g: float, b: float) -> RGB:
    """The colour a filter gives one pixel (channels in 0..1), vignette aside.

    The channel curves run first, then the colour matrix, then one final clamp:
    exactly the two passes `apply_filter` makes.
    """
    curves = channel_curves(spec)
    c = (curves[0](r), curves[1](g), curves[2](b))
    m = color_matrix(spec)
    out = [_clamp(row[0] * c[0] + row[1] * c[1] + row[2] * c[2] + row[3]) for row in m]
    return out[0], out[1], out[2]


def vignette_factor(distance: float, strength: float) -> float:
    """Brightness multiplier at `distance` from the centre (0 centre, 1 a corner).

    The centre half stays untouched; beyond it the darkening eases in (smoothstep)
    to 1 - strength at the corners.
    """
    t = _clamp((distance - 0.45) / 0.55)
    return 1.0 - strength * t * t * (3.0 - 2.0 * t)


_ALL_FILTERS = (
    FilterSpec("normal", "Normal"),
    FilterSpec(
        "clarendon",
        "Clarendon",
        contrast=1.2,
        saturation=1.35,
        blue=((0.0, 0.08), (0.5, 0.52), (1.0, 0.95)),
        red=((0.0, 0.0), (0.5, 0.5), (1.0, 1.0)),
    ),
    FilterSpec(
        "gingham",
        "Gingham",
        brightness=0.05,
        contrast=0.85,
        saturation=0.8,
        warmth=0.02,
        fade=0.12,
    ),
    FilterSpec(
        "juno",
        "Juno",
        contrast=1.15,
        saturation=1.4,
        warmth=0.04,
        red=((0.0, 0.0), (0.5, 0.55), (1.0, 1.0)),
    ),
    FilterSpec(
        "lark",
        "Lark",
        brightness=0.08,
        saturation=0.85,
        warmth=-0.03,
        curve=((0.0, 0.0), (0.3, 0.38), (1.0, 1.0)),
    ),
    FilterSpec(
        "ludwig",
        "Ludwig",
        contrast=1.05,
        saturation=0.85,
        brightness=0.03,
        curve=((0.0, 0.0), (0.75, 0.8), (1.0, 1.0)),
        vignette=0.25,
    ),
    FilterSpec(
        "moon",
        "Moon",
        saturation=0.0,
        contrast=1.1,
        brightness=0.06,
        fade=0.06,
    ),
    FilterSpec(
        "reyes",
        "Reyes",
        brightness=0.1,
        contrast=0.85,
        saturation=0.75,
        sepia=0.22,
        fade=0.18,
    ),
    FilterSpec(
        "valencia",
        "Valencia",
        contrast=1.08,
        saturation=1.08,
        warmth=0.06,
        sepia=0.08,
        fade=0.07,
    ),
    FilterSpec(
        "slumber",
        "Slumber",
        brightness=0.05,
        saturation=0.66,
        warmth=0.03,
        tint=0.02,
        blue=((0.0, 0.0), (1.0, 0.85)),
        fade=0.1,
    ),
    FilterSpec(
        "crema",
        "Crema",
        contrast=0.9,
        saturation=0.8,
        warmth=0.04,
        sepia=0.1,
        fade=0.08,
    ),
    FilterSpec(
        "aden",
        "Aden",
        brightness=0.08,
        contrast=0.9,
        saturation=0.85,
        tint=0.03,
        warmth=0.02,
        fade=0.1,
    ),
    FilterSpec(
        "perpetua",
        "Perpetua",
        brightness=0.04,
        saturation=1.1,
        tint=-0.04,
        blue=((0.0, 0.06), (1.0, 1.0)),
    ),
    FilterSpec(
        "inkwell",
        "Inkwell",
        saturation=0.0,
        contrast=1.25,
        curve=((0.0, 0.0), (0.25, 0.2), (0.75, 0.82), (1.0, 1.0)),
    ),
    FilterSpec(
        "hudson",
        "Hudson",
        brightness=0.04,
        contrast=0.92,
        saturation=1.1,
        warmth=-0.06,
        vignette=0.2,
    ),
    FilterSpec(
        "xpro2",
        "X-Pro II",
        contrast=1.2,
        saturation=1.15,
        sepia=0.2,
        curve=((0.0, 0.0), (0.25, 0.2), (0.75, 0.82), (1.0, 1.0)),
        vignette=0.4,
    ),
)

FILTERS: dict[str, FilterSpec] = {spec.name: spec for spec in _ALL_FILTERS}
"""Every filter by name, in display order, "normal" first."""


@functools.cache
def _point_table(name: str) -> list[int]:
    table: list[int] = []
    for curve in channel_curves(FILTERS[name]):
        table.extend(round(255 * curve(i / 255)) for i in range(256))
    return table


@functools.cache
def _pillow_matrix(name: str) -> tuple[float, ...] | None:
    matrix = color_matrix(FILTERS[name])
    if matrix == _IDENTITY_MATRIX:
        return None
    # Pillow's matrix works on 0..255 values: offsets scale, coefficients do not.
    return tuple(v for row in matrix for v in (row[0], row[1], row[2], row[3] * 255))


def preview_recipe(name: str) -> dict[str, object]:
    """What a browser needs to apply the named filter to a preview exactly as apply_filter
    does: the three channels' 256-entry tables, the 3x4 colour matrix on 0..255 values (None
    for none), and the vignette's strength (vignette_factor's curve)."""
    return {
        "tables": _point_table(name),
        "matrix": _pillow_matrix(name),
        "vignette": FILTERS[name].vignette,
    }


def _vignette_mask(size: tuple[int, int], strength: float) -> Image.Image:
    side = _VIGNETTE_MASK_SIZE
    centre = (side - 1) / 2
    corner = math.hypot(centre, centre)
    values = [
        round(255 * vignette_factor(math.hypot(x - centre, y - centre) / corner, strength))
        for y in range(side)
        for x in range(side)
    ]
    small = Image.new("L", (side, side))
    small.putdata(values)
    return small.resize(size, Image.Resampling.BILINEAR)


def apply_filter(image: Image.Image, name: str) -> Image.Image:
    """Apply the named filter to an RGB image and return the RGB result.

    "normal" returns the image itself; an unknown name raises KeyError.
    """
    spec = FILTERS[name]
    if spec.is_identity:
        return image
    if image.mode != "RGB":
        image = image.convert("RGB")
    graded = image.point(_point_table(name))
    matrix = _pillow_matrix(name)
    if matrix is not None:
        graded = graded.convert("RGB", matrix)
    if spec.vignette:
        mask = _vignette_mask(graded.size, spec.vignette)
        graded = Image.composite(graded, Image.new("RGB", graded.size), mask)
    return graded
