"""Test-time augmentation (issue 12 section 2): flips and scales against NumPy / `jax.image.resize` references,
the option checked by field name, and the same function behind an evaluator entry and the predictor."""
import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import special

from seg_jax import data, evaluators
from seg_jax.predict import predictor as predictor_lib
from seg_jax.predict.tta import tta_logits, tta_options, with_tta
from seg_jax.train import steps, validate

RNG = np.random.default_rng(0)
IMAGES = RNG.normal(size=(2, 8, 12, 3)).astype(np.float32)
MIX = RNG.normal(size=(3, 4)).astype(np.float32)


def _per_pixel(images):
    """A stand-in model that looks at one pixel at a time: exactly flip- (and translation-) equivariant."""
    return images @ MIX


def _by_column(images):
    """Not flip-equivariant: the logits grow with the column index, differently for each class."""
    column = jnp.arange(images.shape[2], dtype=jnp.float32)[None, None, :, None]
    return images @ MIX + column * jnp.asarray([0.3, -0.2, 0.1, 0.0])


def test_off_is_the_plain_predict_function_and_its_outputs():
    predict = lambda variables, images: _by_column(images)  # noqa: E731
    for off in (None, {}, {"flips": False, "scales": (1.0,)}):
        assert with_tta(predict, tta_options(off, field="tta")) is predict
    np.testing.assert_array_equal(with_tta(predict, tta_options(None, field="tta"))(None, IMAGES),
                                  _by_column(IMAGES))


def test_flips_leave_an_equivariant_model_unchanged():
    got = tta_logits(_per_pixel, IMAGES, flips=True, scales=(1.0,))
    np.testing.assert_allclose(got, special.log_softmax(IMAGES @ MIX, axis=-1), rtol=1e-5, atol=1e-5)


def test_flips_average_the_probabilities_of_both_views():
    got = np.asarray(tta_logits(_by_column, IMAGES, flips=True, scales=(1.0,)))
    column = np.arange(12, dtype=np.float32)[None, None, :, None] * np.asarray([0.3, -0.2, 0.1, 0.0])
    plain = special.softmax(IMAGES @ MIX + column, axis=-1)
    flipped = special.softmax(IMAGES[:, :, ::-1] @ MIX + column, axis=-1)[:, :, ::-1]  # model on flip, flip back
    expected = np.log((plain + flipped) / 2)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(special.softmax(got, -1).sum(-1), 1.0, rtol=1e-5)  # log-probabilities
    assert not np.allclose(got, special.log_softmax(IMAGES @ MIX + column, -1), atol=1e-3)  # the flip mattered


def test_scales_resize_the_input_and_the_logits_back_as_jax_image_resize_does():
    scales = (0.5, 0.75, 1.5)  # 4 x 6, 6 x 9 (odd), 12 x 18 pixels
    got = np.asarray(tta_logits(_by_column, IMAGES, flips=True, scales=scales))
    probabilities = []
    for scale in scales:
        size = (round(8 * scale), round(12 * scale))
        scaled = jax.image.resize(IMAGES, (2, *size, 3), method="bilinear")
        for flip in (False, True):
            view = scaled[:, :, ::-1] if flip else scaled
            logits = np.asarray(_by_column(view))
            logits = logits[:, :, ::-1] if flip else logits
            back = np.asarray(jax.image.resize(logits, (2, 8, 12, 4), method="bilinear"))
            probabilities.append(special.softmax(back, axis=-1))
    np.testing.assert_allclose(got, np.log(np.mean(probabilities, axis=0)), rtol=1e-5, atol=1e-5)
    assert got.shape == (2, 8, 12, 4) and got.dtype == np.float32


@pytest.mark.parametrize("value, field", [
    ({"flip": True}, "evals.val.tta.flip"), ({"flips": "yes"}, "evals.val.tta.flips"),
    ({"scales": (0.5, 0.0)}, "evals.val.tta.scales"), ({"scales": (-1.0,)}, "evals.val.tta.scales"),
    ({"scales": ()}, "evals.val.tta.scales"), ("flips", "evals.val.tta")])
def test_bad_options_name_their_field(value, field):
    with pytest.raises(validate.ConfigError) as e:
        tta_options(value, field="evals.val.tta")
    assert e.value.field == field


def test_config_validation_checks_evaluator_and_predict_tta(make_config):
    config = make_config()
    config.evals.val.tta = {"flips": True, "scales": (0.0,)}
    with pytest.raises(validate.ConfigError) as e:
        validate.validate_config(config, num_devices=1, process_count=1, training=False)
    assert e.value.field == "evals.val.tta.scales"
    options = predictor_lib.predict_config.base_config()
    options.tta.scales = (1.0, -2.0)
    with pytest.raises(validate.ConfigError) as e:
        predictor_lib.check_options(options, multiple=4, model="unet")
    assert e.value.field == "predict.tta.scales"


@dataclasses.dataclass(frozen=True)
class Columns:
    """A stand-in task: class = column index modulo the number of classes (`_by_column`-like, flip-sensitive)."""

    num_classes: int

    def predict(self, variables, images):
        del variables
        column = jnp.arange(images.shape[2])[None, None, :] % self.num_classes
        return jnp.broadcast_to(jax.nn.one_hot(column, self.num_classes) * 10.0, (*images.shape[:3],
                                                                                  self.num_classes))


class _NoState:
    variables = {}


jax.tree_util.register_pytree_node(_NoState, lambda s: ((), None), lambda aux, children: _NoState())


def _evaluate(make_config, entry, task):
    config = make_config()
    dataset = data.resolve(config.data)
    ev = evaluators.EVALUATORS.get(entry["type"])("val", entry, task=task, class_names=dataset.class_names,
                                                  data_cfg=config.data)
    return ev, ev.run(steps.replicate(_NoState()), dataset=dataset)


def test_an_evaluator_entry_with_tta_predicts_through_tta_logits(make_config):
    tta = {"flips": True, "scales": (0.5, 1.0)}
    task = Columns(6)
    ev, with_aug = _evaluate(make_config, {"type": "semantic", "batch_size": 3, "num_pictures": 0, "tta": tta},
                             task)
    _, plain = _evaluate(make_config, {"type": "semantic", "batch_size": 3, "num_pictures": 0}, task)
    assert set(with_aug.scalars) == set(plain.scalars) and with_aug.scalars["val/num_images"] > 0
    assert all(isinstance(v, float) for v in with_aug.scalars.values())
    assert with_aug.scalars["val/mean_iou"] != plain.scalars["val/mean_iou"]  # flipped columns change labels
    images = jnp.asarray(np.random.default_rng(1).normal(size=(2, 16, 16, 3)), jnp.float32)
    expected = tta_logits(functools.partial(task.predict, {}), images, flips=True, scales=(0.5, 1.0))
    np.testing.assert_array_equal(ev.logits(_NoState(), images), expected)
    crf = evaluators.EVALUATORS.get("crf")("c", {"type": "crf", "tta": tta}, task=task, class_names=("a", "b"),
                                           data_cfg=make_config().data)
    assert "tta" not in crf.crf_options() and crf.tta == {"flips": True, "scales": (0.5, 1.0)}


def test_the_predictor_applies_predict_tta_to_every_tile(make_config):
    config = make_config()
    config.predict.update(tile_size=32, overlap=8)
    plain = predictor_lib.initial_predictor(config)
    config = make_config()
    config.predict.update(tile_size=32, overlap=8)
    config.predict.tta = {"flips": True, "scales": (0.75, 1.25)}
    augmented = predictor_lib.initial_predictor(config)
    tiles = np.random.default_rng(2).normal(size=(2, 32, 32, 3)).astype(np.float32)
    expected = tta_logits(functools.partial(plain.apply, plain.variables), jnp.asarray(tiles), flips=True,
                          scales=(0.75, 1.25))
    np.testing.assert_allclose(augmented.predict_tiles(tiles), expected, rtol=1e-4, atol=1e-4)
