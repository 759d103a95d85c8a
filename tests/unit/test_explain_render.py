"""The colour composite every explain figure draws, on a hand-made 3-channel crop."""

import numpy as np
import pytest

from protocell.errors import ConfigError
from protocell.explain.options import report_options
from protocell.explain.render import Look, composite, contour_levels, default_display, draw_crop, parse_colour


def _crop():
    """3 channels (DNA, tubulin, actin) of 30 × 30 px: DNA alone in the left third, tubulin alone in
    the middle, actin alone on the right; values 0 (background) or 100 (signal), one bright pixel."""
    x = np.zeros((3, 30, 30))
    x[0, :, :10] = 100
    x[1, :, 10:20] = 100
    x[2, :, 20:] = 100
    x[2, 0, 29] = 400
    return x


def test_default_colours_follow_the_channel_names():
    assert default_display(["DNA", "tubulin", "actin"]) == {"DNA": "blue", "tubulin": "green", "actin": "red"}
    assert default_display(["actin", "nuclei"]) == {"actin": "red", "nuclei": "blue"}
    assert default_display(["Hoechst", "GFP", "mito"]) == {"Hoechst": "blue", "GFP": "green", "mito": "magenta"}
    assert default_display(["ch1", "ch2"]) == {"ch1": "green", "ch2": "red"}  # unknown names: the palette
    assert default_display(["GFP"]) == {"GFP": "grey"}  # one channel: grey


def test_each_channel_gets_its_colour_and_its_own_contrast():
    x = _crop()
    colours = np.array([parse_colour(c) for c in ("blue", "green", "red")])
    lo, hi = np.zeros(3), np.array([100.0, 200.0, 100.0])  # tubulin at half its range
    rgb = composite(x, colours, lo, hi)
    assert rgb.shape == (30, 30, 3)
    assert np.allclose(rgb[5, 5], [0, 0, 1])  # DNA → blue, full
    assert np.allclose(rgb[5, 15], [0, 0.5, 0])  # tubulin → green, 100 / 200
    assert np.allclose(rgb[5, 25], [1, 0, 0])  # actin → red
    assert np.allclose(rgb[0, 29], [1, 0, 0])  # 400 > hi: clipped, not brighter
    both = composite(np.array([[[100.0]], [[0.0]], [[100.0]]]), colours, lo, hi)
    assert np.allclose(both[0, 0], [1, 0, 1])  # DNA and actin together: additive (magenta)
    magenta = composite(x, np.array([parse_colour("#ff00ff"), (0, 0, 0), (0, 0, 0)]), lo, hi)
    assert np.allclose(magenta[5, 5], [1, 0, 1]) and np.allclose(magenta[5, 25], 0)  # actin not drawn


def test_look_takes_contrast_from_percentiles_inside_the_cells_and_refuses_bad_settings():
    x = _crop()[None]
    mask = np.zeros((1, 1, 30, 30))
    mask[0, 0, 10:, :] = 1
    look = Look.from_sample(["DNA", "tubulin", "actin"], {}, x, mask, contrast=(0, 100))
    assert np.allclose(look.colours, [[0, 0, 1], [0, 1, 0], [1, 0, 0]])
    assert np.allclose(look.lo, 0) and np.allclose(look.hi, [100, 100, 100])  # the 400 px lies outside the cell
    assert look.legend() == [("DNA", (0, 0, 1)), ("tubulin", (0, 1, 0)), ("actin", (1, 0, 0))]
    assert np.allclose(look.only(1).colours, [[0, 0, 0], [1, 1, 1], [0, 0, 0]])
    with pytest.raises(ConfigError, match=r"report.display.GFP='green' is invalid: a channel of this run"):
        Look.from_sample(["DNA", "tubulin", "actin"], {"GFP": "green"}, x)
    with pytest.raises(ConfigError, match=r"report.display.DNA='purple-ish' is invalid: a colour"):
        Look.from_sample(["DNA", "tubulin", "actin"], {"DNA": "purple-ish"}, x)
    with pytest.raises(ConfigError, match="report.unit='plate' is invalid"):
        report_options({"unit": "auto"}, {"unit": "plate"})
    assert report_options({"unit": "image", "heatmap": "panel"}, {"unit": None, "heatmap": "contour"}).unit == "image"


def test_draw_crop_puts_the_channel_colours_on_the_canvas():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    x = _crop()
    look = Look.from_sample(["DNA", "tubulin", "actin"], {}, x[None], contrast=(0, 90))
    fig = plt.figure(figsize=(3, 1), dpi=100)
    ax = fig.add_axes((0, 0, 1, 1))
    draw_crop(ax, x, np.ones((1, 30, 30)), look, outline=False)
    ax.set_aspect("auto")
    fig.canvas.draw()
    rgb = np.asarray(fig.canvas.buffer_rgba())[..., :3]
    plt.close(fig)
    row = rgb[50]
    assert tuple(row[50]) == (0, 0, 255) and tuple(row[150]) == (0, 255, 0) and tuple(row[250]) == (255, 0, 0)


def test_similarity_contours_stay_inside_the_cell():
    heat = np.arange(100.0).reshape(10, 10)
    mask = np.zeros((10, 10))
    mask[:5] = 1  # in-cell values 0 … 49
    assert np.allclose(contour_levels(heat, mask), np.percentile(np.arange(50.0), [80, 95]))
