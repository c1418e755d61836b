"""The test photographs are found in the repo, and a missing one is an error that names it."""

from pathlib import Path

import pytest

from tests.conftest import (
    CAMERA_PHOTOS,
    HEIC_PHOTOS,
    LARGE_JPEGS,
    ORIENTATION_PHOTOS,
    TESTDATA,
    testdata,
)


def test_the_photographs_live_in_the_repo() -> None:
    repo = Path(__file__).resolve().parents[2]
    assert repo / "tests" / "data" == TESTDATA
    assert testdata("orientation/Landscape_1.jpg").is_file()


def test_a_missing_photograph_is_an_error_that_names_it() -> None:
    with pytest.raises(FileNotFoundError, match=r"'camera/no-such\.jpg' is missing"):
        testdata("camera/no-such.jpg")


def test_every_listed_photograph_exists_and_every_photograph_is_listed() -> None:
    listed = ORIENTATION_PHOTOS + CAMERA_PHOTOS + LARGE_JPEGS + HEIC_PHOTOS
    for relative in listed:
        assert testdata(relative).is_file()
    on_disk = {
        p.relative_to(TESTDATA).as_posix()
        for folder in ("orientation", "camera", "heic")
        for p in (TESTDATA / folder).iterdir()
        if p.suffix.lower() in {".jpg", ".heic"}
    }
    assert on_disk == set(ORIENTATION_PHOTOS + CAMERA_PHOTOS + HEIC_PHOTOS)
