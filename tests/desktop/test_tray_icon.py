"""The icon: one distinct, well-formed picture per state."""

from __future__ import annotations

import itertools

import pytest
from PIL import Image, ImageChops

from quorum.tray.icon import COLOURS, draw_icon
from quorum.tray.model import TrayState


@pytest.mark.parametrize("size", [16, 22, 32, 64])
@pytest.mark.parametrize("state", list(TrayState))
def test_each_state_draws_a_square_rgba_image(state: TrayState, size: int) -> None:
    image = draw_icon(state, size)
    assert image.size == (size, size) and image.mode == "RGBA"
    alpha = image.getchannel("A")
    assert alpha.getextrema() == (0, 255)  # a transparent background around an opaque mark


def test_every_state_looks_different() -> None:
    images = {state: draw_icon(state, 32) for state in TrayState}
    for a, b in itertools.combinations(TrayState, 2):
        diff = ImageChops.difference(images[a], images[b])
        assert diff.getbbox(alpha_only=False) is not None, f"{a} and {b} draw the same icon"


def test_the_state_colour_dominates() -> None:
    for state, colour in COLOURS.items():
        image = draw_icon(state, 64).convert("RGBA")
        raw = image.tobytes()  # RGBA, 4 bytes a pixel (getdata is deprecated in Pillow 13)
        opaque = {tuple(raw[i : i + 3]) for i in range(0, len(raw), 4) if raw[i + 3] == 255}
        assert colour[:3] in opaque, state


def test_callers_get_their_own_copy() -> None:
    first = draw_icon(TrayState.PAUSED)
    first.paste(Image.new("RGBA", first.size, (0, 0, 0, 255)))
    assert draw_icon(TrayState.PAUSED).getchannel("A").getextrema() == (0, 255)
