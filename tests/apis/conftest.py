"""A :class:`~tests.apis.helpers.Wire` per test, its clients closed after it."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.apis.helpers import Wire


@pytest.fixture
def wire() -> Iterator[Wire]:
    made = Wire()
    yield made
    made.close()
