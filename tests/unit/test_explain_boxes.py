"""Box geometry: the receptive-field box and ProtoPNet's 95th-percentile box."""

import numpy as np

from protocell.explain.boxes import percentile_box, rf_box, upsample
from protocell.model.receptive_field import ReceptiveField


def test_rf_box_is_centred_on_the_unit_and_clipped_at_crop_borders(tiny_net):
    rf, S = tiny_net.rf, 64
    assert rf.size == 46
    H = 8
    for iy in range(H):
        for ix in range(H):
            y0, x0, y1, x1 = rf.box(iy, ix)  # unclipped: full RF side, centred
            assert y1 - y0 == x1 - x0 == int(rf.size)
            assert abs((y0 + y1 - 1) / 2 - rf.centre(iy)) <= 0.5 and abs((x0 + x1 - 1) / 2 - rf.centre(ix)) <= 0.5
            assert rf_box(rf, iy, ix, S) == (max(0, y0), max(0, x0), min(S, y1), min(S, x1))
    assert rf_box(rf, 0, 0, S)[:2] == (0, 0) and rf_box(rf, H - 1, H - 1, S)[2:] == (S, S)  # corners clip


def test_rf_box_by_hand():
    rf = ReceptiveField(size=10, jump=4, start=1.5)  # unit i centred at 1.5 + 4 i
    assert rf_box(rf, 2, 3, 32) == (5, 9, 15, 19)  # centre (9.5, 13.5): 5..14 and 9..18
    assert rf_box(rf, 0, 7, 32) == (0, 25, 7, 32)  # clipped top and right
    assert rf.box(0, 7) == (-3, 25, 7, 35)


def test_percentile_box_equals_direct_computation():
    rng = np.random.default_rng(0)
    up = upsample(rng.random((8, 8)), 64)
    assert up.shape == (64, 64)
    thr = np.percentile(up, 95)
    ys, xs = np.nonzero(up >= thr)
    assert percentile_box(up) == (ys.min(), xs.min(), ys.max() + 1, xs.max() + 1)
    assert ((up >= thr).sum() / up.size) >= 0.05
    yy, xx = np.mgrid[0:64, 0:64]
    peak = np.exp(-((yy - 12) ** 2 + (xx - 42) ** 2) / (2 * 3.0**2))  # a smooth activation blob
    y0, x0, y1, x1 = percentile_box(peak)
    assert (y0 + y1 - 1) / 2 == 12 and (x0 + x1 - 1) / 2 == 42 and 4 < y1 - y0 < 20


def test_report_helpers_escape_html_from_names_and_paths():
    """Condition, well and image names come from a user's plate map: the page shows them, never runs them."""
    import pandas as pd

    from protocell.html import fmt, img_html, table_html

    hostile = '<script>alert("x")</script>'
    assert fmt(hostile) == "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;"
    assert "<script" not in img_html(f"explain/{hostile}.png", hostile)
    assert "<script" not in table_html(pd.DataFrame({"condition": [hostile], "v": [0.5]}))
