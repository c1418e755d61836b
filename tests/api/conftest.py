"""The API tests run on every stack (tests/conftest.py's STACKS): each test once on the embedded
default and once on the whole scale stack, its id saying which (`[embedded]`, `[scale]`).
GLIMPSE_TEST_STACK=embedded or =scale runs them on that one only."""

from __future__ import annotations

import pytest

from tests.api.authorisation_world import matrix_settings  # noqa: F401  (the matrix's world)
from tests.conftest import chosen_stacks


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    # A test marked `embedded` is about the embedded default itself: it runs once, there.
    if metafunc.definition.get_closest_marker("embedded") is not None:
        return
    if "matrix_settings" in metafunc.fixturenames:
        # The authorisation matrix builds one world a module and stack.
        metafunc.parametrize("matrix_settings", chosen_stacks(), indirect=True, scope="module")
    elif "settings" in metafunc.fixturenames:
        metafunc.parametrize("stack_kind", chosen_stacks(), indirect=True)
