"""Trimap boundary band and accuracy against hand-worked cases and a NumPy brute force."""
import jax.numpy as jnp
import numpy as np

from seg_jax.metrics.boundary import boundary_band, boundary_counts


def _np_band(labels, width, ignore=255):
    h, w = labels.shape
    edge = np.zeros_like(labels, bool)
    for y in range(h):
        for x in range(w):
            for dy, dx in ((0, 1), (1, 0), (0, -1), (-1, 0)):
                yy, xx = y + dy, x + dx
                if 0 <= yy < h and 0 <= xx < w and labels[y, x] != ignore and labels[yy, xx] != ignore \
                        and labels[yy, xx] != labels[y, x]:
                    edge[y, x] = True
    band = np.zeros_like(edge)
    for y, x in zip(*np.nonzero(edge)):
        band[max(0, y - width):y + width + 1, max(0, x - width):x + width + 1] = True
    return band & (labels != ignore)


def test_band_hand_worked():
    labels = np.zeros((1, 1, 8), np.int32)
    labels[0, 0, 4:] = 1  # edge between columns 3 and 4
    band = np.asarray(boundary_band(jnp.asarray(labels), width=1))[0, 0]
    np.testing.assert_array_equal(band, [0, 0, 1, 1, 1, 1, 0, 0])


def test_band_matches_brute_force_and_counts():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 3, size=(2, 9, 11))
    labels[0, :3, :3] = 255
    for width in (1, 2):
        got = np.asarray(boundary_band(jnp.asarray(labels), width=width))
        want = np.stack([_np_band(l, width) for l in labels])
        np.testing.assert_array_equal(got, want)
    preds = rng.integers(0, 3, size=labels.shape)
    correct, total = boundary_counts(jnp.asarray(preds), jnp.asarray(labels), width=1,
                                     example_mask=jnp.array([1.0, 0.0]))
    band = _np_band(labels[0], 1)
    assert int(total) == band.sum() and int(correct) == (band & (preds[0] == labels[0])).sum()
