"""What a run shows (issue 10 items 13 and 14): the library-log filter by module, clean file names, pictures with
column titles and a legend of class colours."""
import logging

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import seg_jax

from seg_jax import evaluators, visualize
from seg_jax.train.writers import QuietLibraries


def _record(pathname, *, level=logging.INFO, name="absl"):
    return logging.LogRecord(name, level, pathname, 1, "a message", None, None)


def test_log_filter_keeps_seg_jax_code_not_paths_containing_the_word(tmp_path):
    package = seg_jax.__file__.rsplit("/", 1)[0]
    launch = tmp_path / "launch.py"
    quiet = QuietLibraries(own_files=(launch,))
    assert quiet.filter(_record(f"{package}/train/loop.py"))
    assert quiet.filter(_record(str(launch)))
    assert quiet.filter(_record("/x/y.py", name="seg_jax.train"))
    for elsewhere in ("/venvs/seg_jax/lib/python3.11/site-packages/orbax/checkpoint/x.py",
                      "/home/me/seg_jax_runs/tensorflow_datasets/core/builder.py"):
        assert not quiet.filter(_record(elsewhere)), elsewhere
        assert quiet.filter(_record(elsewhere, level=logging.WARNING))
    assert not quiet.filter(logging.LogRecord("absl", logging.WARNING, "/x.py", 1, "OpenCV is not installed.", None,
                                              None))


@pytest.mark.parametrize("split,name", [("validation[:8]", "validation_8"), ("train+validation", "train_validation"),
                                        ("train[:90%]", "train_90"), ("test", "test")])
def test_split_slices_give_clean_file_names(split, name):
    assert evaluators.safe_name(split) == name


def _colours(region):
    return {tuple(c) for c in region.reshape(-1, 3)}


def test_figure_has_column_titles_and_a_legend_of_class_colours():
    panel = np.full((32, 32, 3), 100, np.uint8)
    rows = [[panel] * 3] * 2
    names = ("background", "disc", "square")
    body = visualize.grid(rows)
    picture = visualize.figure(rows, titles=("image", "truth", "prediction"), legend=visualize.class_legend(names))
    assert picture.dtype == np.uint8 and picture.shape[1] == body.shape[1] and picture.shape[0] > body.shape[0]
    top = int(np.flatnonzero((picture == 100).all(-1).any(1))[0])  # first row of panels
    for j in range(3):  # some dark text above each column
        assert (picture[:top, j * 34:j * 34 + 32] < 80).all(-1).any(), j
    bottom = picture[top + body.shape[0]:]
    assert {tuple(c) for c in visualize.palette(3)} <= _colours(bottom)
    assert (bottom < 80).all(-1).sum() > 50  # the names beside the swatches


class _NoState:
    variables = {}


jax.tree_util.register_pytree_node(_NoState, lambda s: ((), None), lambda aux, children: _NoState())


def test_semantic_pictures_are_titled_and_have_a_legend_with_class_names(make_config):
    from seg_jax import data
    from seg_jax.train import steps
    config = make_config()
    dataset = data.resolve(config.data)
    n = dataset.num_classes

    class Task:
        def predict(self, variables, images):
            return jnp.broadcast_to(jax.nn.one_hot(1, n), (*images.shape[:3], n))

    ev = evaluators.SemanticEvaluator("val", {"type": "semantic", "batch_size": 4, "num_pictures": 2}, task=Task(),
                                      class_names=dataset.class_names, data_cfg=config.data)
    picture = ev.run(steps.replicate(_NoState()), dataset=dataset).pictures["predictions"]
    h = dataset.source("validation")[0]["image"].shape[0]
    assert picture.shape[0] > 2 * h + 2  # titles above, legend below
    outlines = np.flatnonzero((picture == 128).all(-1).any(1))  # the swatches' grey outlines
    assert len(outlines) and {tuple(c) for c in visualize.palette(n)} <= _colours(picture[outlines[0]:])
    # image | truth | prediction | prediction on image: class 1 everywhere, blended at OVERLAY_ALPHA, no boundary
    assert picture.shape[1] == 4 * h + 3 * 2
    top = int(np.flatnonzero((picture[:, :h] != 255).any(-1).all(-1))[0])  # the first panel row: no white
    image, blended = picture[top:top + h, :h], picture[top:top + h, 3 * (h + 2):4 * h + 6]
    alpha = evaluators.semantic.OVERLAY_ALPHA
    np.testing.assert_allclose(blended, np.rint(alpha * visualize.palette(n)[1] + (1 - alpha) * image.astype(float)),
                               atol=1)
