import pytest
from PIL import Image, ImageChops, ImageStat

from glimpse.media.filters import (
    FILTERS,
    apply_filter,
    color_matrix,
    grade_pixel,
    tone_curve,
    vignette_factor,
)
from tests.conftest import testdata

NON_NORMAL = [name for name in FILTERS if name != "normal"]
BLACK_AND_WHITE = ("moon", "inkwell")


@pytest.fixture(scope="module")
def photo() -> Image.Image:
    with Image.open(testdata("orientation/Landscape_1.jpg")) as im:
        im.draft("RGB", (450, 300))
        return im.convert("RGB")


def _mean_abs_diff(a: Image.Image, b: Image.Image) -> float:
    return sum(ImageStat.Stat(ImageChops.difference(a, b)).mean) / 3


def _largest_difference(a: Image.Image, b: Image.Image) -> int:
    histogram = ImageChops.difference(a, b).histogram()
    return max(level for level, count in enumerate(histogram) if count)


def test_catalogue_starts_with_normal_and_has_at_least_ten_filters() -> None:
    names = list(FILTERS)
    assert names[0] == "normal"
    assert len(names) >= 11
    for name, spec in FILTERS.items():
        assert spec.name == name
        assert spec.label
    assert {"clarendon", "gingham", "juno", "lark", "moon", "reyes", "valencia"} <= set(names)


def test_normal_returns_the_image_unchanged(photo: Image.Image) -> None:
    assert apply_filter(photo, "normal") is photo


@pytest.mark.parametrize("name", NON_NORMAL)
def test_every_filter_visibly_changes_a_photo(photo: Image.Image, name: str) -> None:
    out = apply_filter(photo, name)
    assert out.mode == "RGB"
    assert out.size == photo.size
    assert _mean_abs_diff(photo, out) > 4.0


@pytest.mark.parametrize("name", NON_NORMAL)
def test_filters_differ_from_each_other(photo: Image.Image, name: str) -> None:
    mine = apply_filter(photo, name)
    for other in NON_NORMAL:
        if other != name:
            assert _mean_abs_diff(mine, apply_filter(photo, other)) > 1.0, other


@pytest.mark.parametrize("name", BLACK_AND_WHITE)
def test_black_and_white_filters_leave_no_colour(photo: Image.Image, name: str) -> None:
    r, g, b = apply_filter(photo, name).split()
    assert _largest_difference(r, g) <= 1
    assert _largest_difference(g, b) <= 1


@pytest.mark.parametrize("name", [n for n in NON_NORMAL if not FILTERS[n].vignette])
def test_fast_path_matches_the_pure_grade(photo: Image.Image, name: str) -> None:
    out = apply_filter(photo, name)
    spec = FILTERS[name]
    for xy in [(0, 0), (100, 50), (225, 150), (400, 280), (449, 299)]:
        source = photo.getpixel(xy)
        assert isinstance(source, tuple)
        expected = grade_pixel(spec, *(c / 255 for c in source))
        got = out.getpixel(xy)
        assert isinstance(got, tuple)
        for e, g in zip(expected, got, strict=True):
            assert abs(round(e * 255) - g) <= 2, (xy, expected, got)


def test_vignette_darkens_corners_not_centre() -> None:
    grey = Image.new("RGB", (300, 200), (128, 128, 128))
    hudson = FILTERS["hudson"]
    out = apply_filter(grey, "hudson")
    centre, corner = out.getpixel((150, 100)), out.getpixel((0, 0))
    assert isinstance(centre, tuple)
    assert isinstance(corner, tuple)
    assert sum(corner) < sum(centre) * (1 - hudson.vignette / 2)


def test_unknown_filter_is_a_key_error(photo: Image.Image) -> None:
    with pytest.raises(KeyError):
        apply_filter(photo, "sepia-deluxe")


def test_tone_curve_passes_through_its_points_and_is_monotone() -> None:
    points = ((0.0, 0.0), (0.25, 0.2), (0.75, 0.82), (1.0, 1.0))
    curve = tone_curve(points)
    for x, y in points:
        assert curve(x) == pytest.approx(y)
    values = [curve(i / 100) for i in range(101)]
    assert values == sorted(values)
    assert curve(-1.0) == 0.0
    assert curve(2.0) == 1.0


def test_tone_curve_does_not_overshoot_a_steep_step() -> None:
    curve = tone_curve(((0.0, 0.0), (0.45, 0.05), (0.55, 0.95), (1.0, 1.0)))
    assert all(0.0 <= curve(i / 200) <= 1.0 for i in range(201))


def test_tone_curve_rejects_unordered_points() -> None:
    with pytest.raises(ValueError):
        tone_curve(((0.5, 0.5), (0.2, 0.1)))
    with pytest.raises(ValueError):
        tone_curve(((0.5, 0.5),))


def test_normal_grade_is_identity() -> None:
    assert color_matrix(FILTERS["normal"]) == (
        (1.0, 0.0, 0.0, 0.0),
        (0.0, 1.0, 0.0, 0.0),
        (0.0, 0.0, 1.0, 0.0),
    )
    assert grade_pixel(FILTERS["normal"], 0.2, 0.5, 0.9) == pytest.approx((0.2, 0.5, 0.9))


def test_fade_lifts_the_blacks() -> None:
    reyes = FILTERS["reyes"]
    assert min(grade_pixel(reyes, 0.0, 0.0, 0.0)) >= reyes.fade - 1e-9


def test_warm_and_cool_filters_tint_grey() -> None:
    warm = grade_pixel(FILTERS["valencia"], 0.5, 0.5, 0.5)
    cool = grade_pixel(FILTERS["hudson"], 0.5, 0.5, 0.5)
    assert warm[0] > warm[2]
    assert cool[2] > cool[0]


def test_saturation_zero_gives_grey() -> None:
    r, g, b = grade_pixel(FILTERS["moon"], 0.9, 0.2, 0.1)
    assert r == pytest.approx(g) == pytest.approx(b)


def test_vignette_factor() -> None:
    assert vignette_factor(0.0, 0.4) == 1.0
    assert vignette_factor(0.4, 0.4) == 1.0
    assert vignette_factor(1.0, 0.4) == pytest.approx(0.6)
    ramp = [vignette_factor(d / 50, 0.4) for d in range(51)]
    assert ramp == sorted(ramp, reverse=True)
