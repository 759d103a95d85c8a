"""One way to draw a crop in every figure: a colour composite of its channels, the cell outline, and
the similarity heat map as contours inside the cell (or beside it), so the cell itself stays readable.

Each channel gets a colour (``report.display``, or ``default_display`` from the channel names:
DNA blue, tubulin green, actin red, …) and its own contrast: the [low, high] percentiles of that
channel over a sample of the run's cells map to black and full colour, the same for every figure of
the run (brightness is comparable between cells). The composite is additive:
``rgb = clip(Σ_c clip((x_c − lo_c) / (hi_c − lo_c), 0, 1) · colour_c, 0, 1)``.

Shapes: ``image`` (C, S, S) as the network sees it, ``mask`` (1, S, S), ``heat`` (S, S) upsampled
similarity, ``window`` (y0, x0, y1, x1) a sub-box in crop pixels (mosaic tiles, source patches).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace

import numpy as np

from protocell.errors import ConfigError

COLOURS = {
    "red": (1.0, 0.0, 0.0),
    "green": (0.0, 1.0, 0.0),
    "blue": (0.0, 0.0, 1.0),
    "magenta": (1.0, 0.0, 1.0),
    "cyan": (0.0, 1.0, 1.0),
    "yellow": (1.0, 1.0, 0.0),
    "grey": (1.0, 1.0, 1.0),
    "gray": (1.0, 1.0, 1.0),
    "white": (1.0, 1.0, 1.0),
}
# channel-name patterns → preferred colours, in order (microscopy conventions: DAPI/Hoechst blue,
# GFP and tubulin green, phalloidin/actin red)
PREFERENCES = [
    (r"dna|nuc|dapi|hoechst|draq|h2b", ("blue", "magenta")),
    (r"gfp|fitc|alexa ?488", ("green",)),
    (r"tub", ("green", "red")),
    (r"actin|phalloidin|rhodamine|cy3", ("red", "green")),
    (r"mito|er\b|golgi", ("magenta", "cyan")),
]
PALETTE = ("green", "red", "magenta", "cyan", "yellow", "blue")
OUTLINE = "white"  # cell outline (green would vanish in a green channel)
HEAT = "#ffd400"  # similarity contours
BOX = "#00e5ff"  # receptive-field and percentile boxes


def parse_colour(name: str, key: str = "report.display") -> tuple[float, float, float]:
    """A colour name of ``COLOURS`` or ``#rrggbb`` → (r, g, b) in [0, 1]."""
    text = str(name).strip().lower()
    if text in COLOURS:
        return COLOURS[text]
    if re.fullmatch(r"#[0-9a-f]{6}", text):
        r, g, b = (int(text[i : i + 2], 16) / 255 for i in (1, 3, 5))
        return r, g, b
    raise ConfigError.invalid(key, name, f"a colour: one of {sorted(COLOURS)} or #rrggbb")


def default_display(channels: list[str]) -> dict[str, str]:
    """A colour per channel from its name: the most constrained channels choose first (GFP can only
    be green), each takes its first free preferred colour, unknown names the next free palette
    colour. One channel alone is grey."""
    if len(channels) == 1:
        return {channels[0]: "grey"}
    prefs = {}
    for c in channels:
        prefs[c] = next((p for pattern, p in PREFERENCES if re.search(pattern, c.lower())), ())
    taken, out = set(), {}
    for c in sorted(channels, key=lambda c: (len(prefs[c]) or 99, channels.index(c))):
        colour = next((p for p in (*prefs[c], *PALETTE) if p not in taken), "grey")
        taken.add(colour)
        out[c] = colour
    return {c: out[c] for c in channels}


@dataclass(frozen=True)
class Look:
    """How crops are drawn: channel names (the image's channel order), an RGB colour per channel
    ((C, 3), zeros: not drawn), contrast ranges ``lo``/``hi`` (C,), the heat-map style and whether
    prototypes also get one grey panel per channel."""

    channels: tuple
    colours: np.ndarray
    lo: np.ndarray
    hi: np.ndarray
    heatmap: str = "contour"
    channel_panels: bool = False

    @classmethod
    def from_sample(
        cls,
        channels: list[str],
        display: dict,
        images: np.ndarray,
        masks: np.ndarray | None = None,
        contrast=(0.5, 99.5),
        heatmap: str = "contour",
        channel_panels: bool = False,
    ) -> Look:
        """``display`` (channel → colour; empty: ``default_display``) and per-channel contrast from the
        ``contrast`` percentiles of ``images`` (N, C, S, S) inside ``masks`` (N, 1, S, S) when given."""
        unknown = [c for c in display if c not in channels]
        if unknown:
            raise ConfigError.invalid(
                f"report.display.{unknown[0]}", display[unknown[0]], f"a channel of this run: {list(channels)}"
            )
        display = dict(display) or default_display(list(channels))
        colours = np.array(
            [parse_colour(display[c], f"report.display.{c}") if c in display else (0.0, 0.0, 0.0) for c in channels],
            np.float64,
        )
        lo, hi = channel_ranges(
            np.asarray(images, np.float64), None if masks is None else np.asarray(masks) > 0, contrast
        )
        return cls(tuple(channels), colours, lo, hi, heatmap, channel_panels)

    def only(self, c: int) -> Look:
        """The same look with channel ``c`` alone, in grey."""
        colours = np.zeros_like(self.colours)
        colours[c] = 1.0
        return replace(self, colours=colours)

    def legend(self) -> list[tuple[str, tuple]]:
        """(channel, colour) of the drawn channels."""
        return [(c, tuple(col)) for c, col in zip(self.channels, self.colours) if col.any()]


def channel_ranges(
    images: np.ndarray, inside: np.ndarray | None, contrast=(0.5, 99.5)
) -> tuple[np.ndarray, np.ndarray]:
    """Per channel, the ``contrast`` percentiles of ``images`` (N, C, S, S) over the pixels inside
    the cells (``inside`` (N, 1, S, S) bool; all pixels when None or empty)."""
    C = images.shape[1]
    lo, hi = np.zeros(C), np.ones(C)
    for c in range(C):
        pix = images[:, c]
        if inside is not None and inside[:, 0].any():
            pix = pix[inside[:, 0]]
        lo[c], hi[c] = np.percentile(pix, contrast)
        hi[c] = max(hi[c], lo[c] + 1e-6)
    return lo, hi


def composite(image: np.ndarray, colours: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """(C, H, W) → (H, W, 3) RGB in [0, 1]: each channel scaled by its contrast range, tinted by its
    colour, added (see the module docstring)."""
    x = np.asarray(image, np.float64)
    scaled = np.clip((x - lo[:, None, None]) / (hi - lo)[:, None, None], 0, 1)  # (C, H, W)
    return np.clip(np.einsum("chw,ck->hwk", scaled, np.asarray(colours, np.float64)), 0, 1)


CONTOUR_PERCENTILES = (80, 95)


def contour_levels(heat: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """The similarity contours' levels: the 80th and 95th percentiles of ``heat`` (S, S) inside the
    cell (``mask`` (S, S); the whole crop when empty), increasing and distinct."""
    inside = heat[mask > 0] if (mask > 0).any() else heat.ravel()
    return np.unique(np.percentile(inside, CONTOUR_PERCENTILES))


def heat_inside(heat: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """``heat`` with the background set to the cell's lowest value: contours stay inside the cell."""
    if not (mask > 0).any():
        return heat
    return np.where(mask > 0, heat, heat[mask > 0].min())


def _window(a, window):
    if window is None:
        return a
    y0, x0, y1, x1 = window
    return a[..., y0:y1, x0:x1]


def draw_crop(ax, image, mask, look: Look, heat: np.ndarray | None = None, window=None, outline: bool = True) -> None:
    """The crop (or its ``window``) as ``look``'s composite, the cell outline, and ``heat`` as
    contours at its 50th, 80th and 95th percentiles (thicker = more similar) when
    ``look.heatmap == "contour"`` (with ``"panel"`` the caller draws ``draw_heat`` beside it)."""
    image = np.asarray(image)
    m = _window(np.asarray(mask)[0], window)
    ax.imshow(composite(_window(image, window), look.colours, look.lo, look.hi), interpolation="nearest")
    if outline and m.any() and not m.all():
        ax.contour(m, [0.5], colors=OUTLINE, linewidths=0.6, alpha=0.8)
    if heat is not None and look.heatmap == "contour":
        h = _window(heat_inside(np.asarray(heat), np.asarray(mask)[0]), window)
        levels = contour_levels(np.asarray(heat), np.asarray(mask)[0])
        if len(levels) and h.min() < levels[-1] <= h.max():
            widths = np.array([0.7, 1.5][-len(levels) :])
            ax.contour(h, levels, colors="black", linewidths=widths + 1.2)  # a dark halo: visible on any colour
            ax.contour(h, levels, colors=HEAT, linewidths=widths)
    ax.set_xticks([])
    ax.set_yticks([])


def draw_heat(ax, heat: np.ndarray, mask) -> None:
    """The similarity heat map alone (perceptual colour map, bright = similar) with the cell outline."""
    ax.imshow(heat, cmap="magma", interpolation="nearest")
    m = np.asarray(mask)[0]
    if m.any() and not m.all():
        ax.contour(m, [0.5], colors=OUTLINE, linewidths=0.6, alpha=0.8)
    ax.set_xticks([])
    ax.set_yticks([])


def add_legend(fig, look: Look, extra: str = "") -> None:
    """The channel colours (and ``extra``: what outline, contours and boxes mean) under the figure."""
    from matplotlib.patches import Patch

    handles = [Patch(color=col, label=name) for name, col in look.legend()]
    fig.legend(
        handles=handles,
        loc="lower left",
        fontsize=6.5,
        ncol=len(handles),
        frameon=False,
        handlelength=1.0,
        borderaxespad=0.2,
    )
    if extra:
        fig.text(0.99, 0.01, extra, ha="right", va="bottom", fontsize=6.5)
