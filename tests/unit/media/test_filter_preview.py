"""The recipe a browser applies to preview a filter (static/app.js `applyRecipe`) is what the
server applies: replayed here in plain Python, pixel by pixel, it gives apply_filter's result."""

from __future__ import annotations

import math
import random

import pytest
from PIL import Image

from glimpse.media.filters import FILTERS, apply_filter, preview_recipe


def replay(
    recipe: dict[str, object], pixels: list[tuple[int, int, int]], size: int
) -> list[tuple[float, float, float]]:
    tables = recipe["tables"]
    matrix = recipe["matrix"]
    vignette = recipe["vignette"]
    assert isinstance(tables, list) and isinstance(vignette, float)
    out = []
    corner = math.hypot(31.5, 31.5)
    for i, (r0, g0, b0) in enumerate(pixels):
        x, y = i % size, i // size
        r, g, b = float(tables[r0]), float(tables[256 + g0]), float(tables[512 + b0])
        if matrix is not None:
            m = list(matrix)  # type: ignore[call-overload]
            r, g, b = (
                m[0] * r + m[1] * g + m[2] * b + m[3],
                m[4] * r + m[5] * g + m[6] * b + m[7],
                m[8] * r + m[9] * g + m[10] * b + m[11],
            )
            # Pillow's matrix convert stores each channel clamped to 0..255, before the vignette.
            r, g, b = (min(255.0, max(0.0, round(v))) for v in (r, g, b))
        if vignette:
            dx = x / (size - 1) * 63 - 31.5
            dy = y / (size - 1) * 63 - 31.5
            t = min(1.0, max(0.0, (math.hypot(dx, dy) / corner - 0.45) / 0.55))
            f = 1 - vignette * t * t * (3 - 2 * t)
            r, g, b = r * f, g * f, b * f
        out.append((min(255, max(0, r)), min(255, max(0, g)), min(255, max(0, b))))
    return out


@pytest.mark.parametrize("name", [n for n in FILTERS if n != "normal"])
def test_the_preview_recipe_replays_the_server_filter(name: str) -> None:
    size = 128  # previews are hundreds of pixels: the server's 64x64 mask is upscaled
    rng = random.Random(name)
    pixels = [(rng.randrange(256), rng.randrange(256), rng.randrange(256)) for _ in range(size**2)]
    image = Image.new("RGB", (size, size))
    image.putdata(pixels)
    served = list(apply_filter(image, name).get_flattened_data())
    previewed = replay(preview_recipe(name), pixels, size)
    worst = max(
        abs(a - b)
        for s, p in zip(served, previewed, strict=True)
        for a, b in zip(s, p, strict=True)
    )
    # Rounding, and the vignette computed exactly here but from a 64x64 mask upscaled there.
    assert worst <= 6, (name, worst)


def test_every_filter_has_a_recipe_of_three_256_entry_tables() -> None:
    for name in FILTERS:
        recipe = preview_recipe(name)
        tables = recipe["tables"]
        assert isinstance(tables, list) and len(tables) == 768
        assert all(0 <= v <= 255 for v in tables)
        matrix = recipe["matrix"]
        assert matrix is None or len(matrix) == 12  # type: ignore[arg-type]
