"""Pictures drawn with scikit-image: class colours, overlays with boundaries, instance maps and the legend."""
from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage
from skimage import color

from seg_jax import visualize

WHITE = np.array(visualize.BOUNDARY_COLOUR)


def test_palette_is_label2rgbs_colour_cycle_with_black_background_and_no_repeats():
    colours = visualize.palette(22)
    np.testing.assert_array_equal(colours[:4], [[0, 0, 0], [255, 0, 0], [0, 0, 255], [255, 255, 0]])  # red, blue..
    cycle = color.label2rgb(np.arange(1, 11)[None], bg_label=0)[0]
    np.testing.assert_array_equal(colours[1:11], np.rint(cycle * 255))
    np.testing.assert_array_equal(colours[11], np.rint(0.6 * np.array([255, 0, 0])))  # second pass: dimmed red
    np.testing.assert_array_equal(colours[21], np.rint(0.36 * np.array([255, 0, 0])))
    assert len({tuple(c) for c in colours}) == 22 and colours.dtype == np.uint8
    assert visualize.palette(1).tolist() == [[0, 0, 0]]


def _scene():
    """A 12x12 grey-gradient image; class 2 on rows/cols 2..7, class 1 on rows 2..7 cols 8..10, ignore at (0, 0)."""
    image = np.stack([np.add.outer(np.arange(12) * 10, np.arange(12) * 3) + 20] * 3, -1).astype(np.uint8)
    image[..., 1] //= 2
    labels = np.zeros((12, 12), np.int32)
    labels[2:8, 2:8] = 2
    labels[2:8, 8:11] = 1
    labels[0, 0] = 255
    return image, labels


def test_overlay_blends_each_class_colour_at_alpha_and_marks_the_inner_boundaries():
    image, labels = _scene()
    alpha = 0.4
    out = visualize.overlay(image, labels, num_classes=3, alpha=alpha)
    # Hand-worked "inner" boundaries: each region's pixels with a 4-neighbour of another label.
    edge = np.zeros((12, 12), bool)
    edge[[2, 7], 2:11] = True
    edge[2:8, [2, 7, 8, 10]] = True
    blended = np.rint(alpha * visualize.palette(3)[labels.clip(0, 2)] + (1 - alpha) * image.astype(float))
    inside = (labels > 0) & (labels < 3) & ~edge
    assert inside.sum() == 4 * 4 + 4 * 1
    np.testing.assert_allclose(out[inside], blended[inside], atol=1)
    assert image[3, 3].tolist() == [59, 29, 59]
    assert (np.abs(out[3, 3].astype(int) - [35, 17, 137]) <= 1).all()  # 0.4 * blue + 0.6 * image, by hand
    np.testing.assert_array_equal(out[edge], np.broadcast_to(WHITE, (edge.sum(), 3)))
    background = (labels == 0) | (labels == 255)
    np.testing.assert_array_equal(out[background], image[background])  # untinted, ignore included
    plain = visualize.overlay(image, labels, num_classes=3, alpha=alpha, boundaries=False)
    np.testing.assert_allclose(plain[edge & (labels < 3)], blended[edge & (labels < 3)], atol=1)


def test_a_class_keeps_its_colour_whichever_classes_are_present():
    # label2rgb colours labels by rank among those present; the overlay must not
    image = np.full((4, 4, 3), 100, np.uint8)
    labels = np.full((4, 4), 3)
    out = visualize.overlay(image, labels, num_classes=5, alpha=1.0, boundaries=False)
    np.testing.assert_array_equal(out, np.broadcast_to(visualize.palette(5)[3], (4, 4, 3)))
    np.testing.assert_array_equal(visualize.overlay(image, np.zeros((4, 4), int), num_classes=5, alpha=0.5), image)


def test_colorize_draws_class_colours_and_ignore_white():
    labels = np.array([[0, 1], [2, 255]])
    np.testing.assert_array_equal(visualize.colorize(labels, num_classes=3),
                                  [[[0, 0, 0], [255, 0, 0]], [[0, 0, 255], [255, 255, 255]]])


def test_touching_instances_get_their_own_colours_and_a_line_between_them():
    ids = np.zeros((6, 8), np.int32)
    ids[1:5, 1:4] = 1
    ids[1:5, 4:7] = 2  # touches instance 1 along column 3 | 4
    out = visualize.colorize_instances(ids)
    np.testing.assert_array_equal(out[ids == 0], np.zeros(((ids == 0).sum(), 3)))
    np.testing.assert_array_equal(out[2:4, [3, 4]].reshape(-1, 3), np.broadcast_to(WHITE, (4, 3)))  # the seam
    np.testing.assert_array_equal(out[2:4, 2], [[255, 0, 0]] * 2)  # interiors: label2rgb's red, blue
    np.testing.assert_array_equal(out[2:4, 5], [[0, 0, 255]] * 2)
    assert not visualize.colorize_instances(np.zeros((3, 3), int)).any()


def test_legend_strip_has_one_swatch_per_class_in_its_colour_in_order():
    names = ("background", "disc", "square", "triangle")
    legend = visualize.class_legend(names)
    assert [n for n, _ in legend] == [*names, "ignore"]
    panel = np.full((40, 40, 3), 90, np.uint8)
    picture = visualize.figure([[panel, panel]], titles=("image", "prediction"), legend=legend)
    outline = (picture == 128).all(-1)  # the swatches' grey outlines
    boxes = [b for b in ndimage.find_objects(ndimage.label(outline)[0])  # not grey pixels of anti-aliased text
             if b[0].stop - b[0].start >= 5 and b[1].stop - b[1].start >= 5]
    boxes = sorted(boxes, key=lambda b: (b[0].start, b[1].start))
    assert len(boxes) == len(legend)
    for (rows, cols), (_, colour) in zip(boxes, legend):
        centre = picture[(rows.start + rows.stop) // 2, (cols.start + cols.stop) // 2]
        np.testing.assert_array_equal(centre, colour)
    assert [tuple(c) for _, c in legend[:4]] == [tuple(c) for c in visualize.palette(4)]
    for rows, cols in boxes:  # each name's dark text beside its swatch
        assert (picture[rows, cols.stop:cols.stop + 25] < 80).all(-1).sum() > 10


@pytest.mark.parametrize("box,expected_rows,expected_cols", [((1.0, 1.0, 4.0, 5.0), (1, 4), (1, 3)),
                                                             ((0.2, 2.0, 1.0, 3.0), (2, 2), (0, 0))])
def test_boxes_are_outlined_on_the_pixels_they_cover(box, expected_rows, expected_cols):
    out = visualize.draw_boxes(np.zeros((6, 7, 3), np.uint8), np.array([box]), np.array([1]), num_classes=2)
    drawn = (out == [255, 0, 0]).all(-1)
    (r0, r1), (c0, c1) = expected_rows, expected_cols
    expected = np.zeros((6, 7), bool)
    expected[[r0, r1], c0:c1 + 1] = True
    expected[r0:r1 + 1, [c0, c1]] = True
    np.testing.assert_array_equal(drawn, expected)
