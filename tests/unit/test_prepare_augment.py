"""Offline augmentation: image and mask move together, draws are reproducible and described."""

import numpy as np

from protocell.prepare.augment import AugmentParams, augment_crops


def test_image_and_mask_are_transformed_together_and_reproducibly():
    crops = np.zeros((3, 2, 48, 48), np.uint16)
    masks = np.zeros((3, 48, 48), np.uint8)
    for i in range(3):  # off-centre bars: any rotation/flip moves them
        masks[i, 10 + i : 20 + i, 8:40] = 1
        crops[i, :, masks[i] > 0] = 50000
    p = AugmentParams(copies=2, seed=3)
    a_c, a_m, meta = augment_crops(crops, masks, [(7, i) for i in range(3)], p)
    assert a_c.shape == (6, 2, 48, 48) and a_c.dtype == np.uint16 and a_m.shape == (6, 48, 48)
    assert [i for i, _ in meta] == [0, 0, 1, 1, 2, 2]
    for c, m in zip(a_c, a_m):
        inside = m > 0
        assert inside.sum() > 0.6 * 320  # the cell survives (shear/skew may trim a bit)
        assert np.mean(c[0][inside] > 25000) > 0.9  # mask pixels carry the bright cell
        assert np.mean(c[0][~inside] < 25000) > 0.97  # and off-mask pixels mostly do not
    assert not all(np.array_equal(m, masks[0]) for m in a_m[:2])
    assert all(d.startswith("rot=") and ";shear=" in d for _, d in meta)
    b_c, b_m, meta_b = augment_crops(crops, masks, [(7, i) for i in range(3)], p)
    assert np.array_equal(a_c, b_c) and np.array_equal(a_m, b_m) and meta == meta_b
