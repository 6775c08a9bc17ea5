"""The tray icon, drawn with Pillow: one picture per :class:`~quorum.tray.model.TrayState`.

The mark is three nodes joined in a triangle (a small cluster). The colour and a
badge tell the state, so it reads at 16 px and without colour vision:

- serving with peers: green, all three nodes filled;
- serving alone: blue, one node filled, the two others hollow;
- relay unreachable: amber, with a "!" badge;
- paused: grey, with a pause badge (two bars);
- starting: grey, all nodes hollow;
- error: red, with an "x" badge.

Drawn at four times the size asked and scaled down, for smooth edges.
"""

from __future__ import annotations

from functools import lru_cache

from PIL import Image, ImageDraw

from quorum.tray.model import TrayState

SCALE = 4
DEFAULT_SIZE = 64

GREEN = (46, 160, 67, 255)
BLUE = (56, 132, 244, 255)
AMBER = (230, 150, 20, 255)
GREY = (130, 136, 145, 255)
RED = (214, 48, 49, 255)
WHITE = (255, 255, 255, 255)

COLOURS: dict[TrayState, tuple[int, int, int, int]] = {
    TrayState.SERVING_PEERS: GREEN,
    TrayState.SERVING_ALONE: BLUE,
    TrayState.RELAY_UNREACHABLE: AMBER,
    TrayState.PAUSED: GREY,
    TrayState.STARTING: GREY,
    TrayState.ERROR: RED,
}

# Node centres on a unit square, and which of them are filled, per state.
_NODES = ((0.5, 0.2), (0.2, 0.74), (0.8, 0.74))
_FILLED: dict[TrayState, tuple[bool, bool, bool]] = {
    TrayState.SERVING_PEERS: (True, True, True),
    TrayState.SERVING_ALONE: (True, False, False),
    TrayState.RELAY_UNREACHABLE: (True, True, True),
    TrayState.PAUSED: (True, True, True),
    TrayState.STARTING: (False, False, False),
    TrayState.ERROR: (True, True, True),
}


def draw_icon(
    state: TrayState,
    size: int = DEFAULT_SIZE,
    background: tuple[int, int, int] | None = None,
) -> Image.Image:
    """A square RGBA image of ``size`` pixels for ``state``.

    With ``background``, the image is opaque: the mark laid on that colour, for
    trays that cannot show transparency (X11's XEmbed icons).
    """
    image = _draw(state, size).copy()
    if background is None:
        return image
    opaque = Image.new("RGBA", image.size, (*background, 255))
    opaque.alpha_composite(image)
    return opaque


@lru_cache(maxsize=32)
def _draw(state: TrayState, size: int) -> Image.Image:
    big = size * SCALE
    image = Image.new("RGBA", (big, big), (0, 0, 0, 0))
    draw = ImageDraw.Draw(image)
    colour = COLOURS[state]
    points = [(x * big, y * big) for x, y in _NODES]
    line = max(2, big // 16)
    for i, a in enumerate(points):
        for b in points[i + 1 :]:
            draw.line([a, b], fill=colour, width=line)
    radius = big * 0.15
    for (x, y), filled in zip(points, _FILLED[state], strict=True):
        box = (x - radius, y - radius, x + radius, y + radius)
        draw.ellipse(box, fill=colour if filled else WHITE, outline=colour, width=line)
    _badge(draw, state, big)
    return image.resize((size, size), Image.Resampling.LANCZOS)


def _badge(draw: ImageDraw.ImageDraw, state: TrayState, big: int) -> None:
    """A round badge in the bottom-right corner for the states that need attention."""
    if state not in (TrayState.RELAY_UNREACHABLE, TrayState.PAUSED, TrayState.ERROR):
        return
    r = big * 0.22
    cx, cy = big - r - 1, big - r - 1
    draw.ellipse(
        (cx - r, cy - r, cx + r, cy + r), fill=COLOURS[state], outline=WHITE, width=big // 32
    )
    w = max(2, big // 20)
    if state is TrayState.PAUSED:
        for dx in (-r * 0.3, r * 0.3):
            draw.line([(cx + dx, cy - r * 0.5), (cx + dx, cy + r * 0.5)], fill=WHITE, width=w)
    elif state is TrayState.ERROR:
        d = r * 0.45
        draw.line([(cx - d, cy - d), (cx + d, cy + d)], fill=WHITE, width=w)
        draw.line([(cx - d, cy + d), (cx + d, cy - d)], fill=WHITE, width=w)
    else:
        draw.line([(cx, cy - r * 0.55), (cx, cy + r * 0.15)], fill=WHITE, width=w)
        dot = w * 0.7
        draw.ellipse((cx - dot, cy + r * 0.4 - dot, cx + dot, cy + r * 0.4 + dot), fill=WHITE)
