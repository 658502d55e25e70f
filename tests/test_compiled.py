"""Public JAX functions run compiled when called plainly: counted in lowerings to XLA (one program on the first call,
none on a call with new values of the traced arguments), never timed. Shapes are odd so no other test has already
compiled them."""
import contextlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from seg_jax import metrics, ops
from seg_jax.compiled import compiled
from seg_jax.models.detection_heads import paste_masks
from seg_jax.postprocess import dense_crf

LOWERING = "/jax/core/compile/jaxpr_to_mlir_module_duration"  # once per new program, cache hit or not


@contextlib.contextmanager
def lowerings():
    """Yields a one-element list holding the number of programs lowered inside the block (op-by-op execution
    lowers one per new primitive)."""
    count = [0]

    def listen(event, _secs, **_):
        count[0] += event == LOWERING

    jax.monitoring.register_event_duration_secs_listener(listen)
    try:
        yield count
    finally:
        jax.monitoring.unregister_event_duration_listener(listen)


def _calls(fn, first, second):
    """Lowerings of fn(**first), then of fn(**second)."""
    counts = []
    for kwargs in (first, second):
        with lowerings() as n:
            jax.block_until_ready(fn(**kwargs))
        counts.append(n[0])
    return counts


RNG = np.random.default_rng(0)
B = RNG.uniform(0, 50, (37, 2))
BOXES = np.concatenate([B, B + RNG.uniform(4, 12, (37, 2))], 1).astype(np.float32)
SCORES = RNG.uniform(size=37).astype(np.float32)


def test_dense_crf_compiles_once_and_reuses_it_for_new_weights():
    logits = RNG.normal(size=(1, 13, 11, 3)).astype(np.float32)
    image = RNG.uniform(0, 255, (1, 13, 11, 3)).astype(np.float32)
    call = lambda **kw: dense_crf(logits, image, iterations=2, **kw)
    weights = lambda g, b: {"gaussian_compat": g, "bilateral_compat": b}
    assert _calls(call, weights(3.0, 10.0), weights(4.0, 7.0)) == [1, 0]
    assert _calls(call, {"method": "exact"}, {"method": "exact"}) == [1, 0]  # a static option: its own program
    out = dense_crf(logits, image, iterations=2, method="exact")
    np.testing.assert_allclose(out, jax.jit(lambda l, i: dense_crf(l, i, iterations=2, method="exact"))(logits, image),
                               rtol=1e-6)
    with pytest.raises(ValueError, match="method='lattice' is not valid"):  # checks still run at trace time
        dense_crf(logits, image, method="lattice")


def test_nms_and_batched_nms_compile_once():
    call = lambda **kw: ops.nms(BOXES, SCORES, max_output_size=9, **kw)
    assert _calls(call, {"iou_threshold": 0.5}, {"iou_threshold": 0.3}) == [1, 0]
    classes = (np.arange(37) % 3).astype(np.int32)
    call = lambda **kw: ops.batched_nms(BOXES, SCORES, classes, max_output_size=11, **kw)
    assert _calls(call, {"iou_threshold": 0.5}, {"iou_threshold": 0.6}) == [1, 0]
    # a new threshold is a traced value, not a stale constant: it changes the result
    few, many = (int(ops.nms(BOXES, SCORES, iou_threshold=t, max_output_size=37)[1].sum()) for t in (0.05, 0.9))
    assert few < many


def test_roi_align_family_compiles_once_and_accepts_list_sizes():
    features = RNG.normal(size=(2, 9, 7, 5)).astype(np.float32)
    boxes = np.stack([BOXES[:3], BOXES[3:6]])
    call = lambda **kw: ops.roi_align(features, boxes, output_size=[3, 2], **kw)
    assert _calls(call, {"spatial_scale": 0.1}, {"spatial_scale": 0.2}) == [1, 0]
    index = np.array([0, 1, 1], np.int32)
    call = lambda **kw: ops.roi_align_indexed(features, BOXES[:3], index, output_size=(3, 3), **kw)
    assert _calls(call, {"spatial_scale": 0.1}, {"spatial_scale": 0.3}) == [1, 0]
    levels = [RNG.normal(size=(2, s, s, 5)).astype(np.float32) for s in (17, 9, 5)]
    call = lambda **kw: ops.multilevel_roi_align(levels, boxes * kw.pop("k"), output_size=3, **kw)
    assert _calls(call, {"k": 1.0}, {"k": 2.0}) == [1, 0]


def test_paste_masks_and_confusion_matrix_compile_once():
    masks = RNG.uniform(size=(3, 7, 7)).astype(np.float32)
    call = lambda **kw: paste_masks(masks, BOXES[:3] * kw.pop("k"), height=23, width=19)
    assert _calls(call, {"k": 1.0}, {"k": 0.5}) == [1, 0]
    labels = RNG.integers(0, 5, (2, 13, 17))
    call = lambda **kw: metrics.confusion_matrix(kw.pop("p"), labels, num_classes=5)
    first, second = RNG.integers(0, 5, (2, 2, 13, 17))
    assert _calls(call, {"p": first}, {"p": second}) == [1, 0]
    call = lambda **kw: metrics.batched_confusion_matrix(kw.pop("p"), labels, num_classes=5)
    assert _calls(call, {"p": first}, {"p": second}) == [1, 0]
    np.testing.assert_array_equal(metrics.confusion_matrix(first, labels, num_classes=5),
                                  np.bincount((labels * 5 + first).ravel(), minlength=25).reshape(5, 5))


def test_compiled_rejects_unknown_static_names():
    with pytest.raises(TypeError, match=r"static names \['size'\] are not parameters"):
        compiled(static=("size",))(lambda x, *, sizes: x)
    double = compiled(static=("times",))(lambda x, *, times: x * times)
    assert double(jnp.ones(3), times=2).tolist() == [2.0, 2.0, 2.0] and hasattr(double, "jitted")


def test_the_train_step_compiles_once_on_a_replicated_state(make_config):
    """`steps.replicate` places the state as the pmapped step returns it (flax's `jax_utils.replicate` did not,
    and every run compiled its train step a second time at step 2)."""
    from benchmarks import step_timing
    from seg_jax.train import steps
    from seg_jax.train.experiment import build_experiment
    from seg_jax.train.state import create_train_state

    # The tiny run's shapes: a new step function lowers anew (counted) and then loads the tiny runs' compiled program
    # from the persistent cache.
    config = make_config()
    exp = build_experiment(config, num_classes=6)
    size, devices = tuple(config.data.crop_size), jax.local_device_count()
    state = steps.replicate(create_train_state(init_model=exp.init_model, apply_model=exp.task.model, tx=exp.tx,
                                               seed=0, image_shape=size))
    step = steps.pmapped_train_step(task=exp.task, learning_rate_fn=exp.learning_rate_fn)
    batch = step_timing.random_semantic_batch(num_devices=devices, per_device=config.train.batch_size // devices,
                                              image_size=size, num_classes=6)
    counts = []
    for i in range(3):
        with lowerings() as n:
            state, metrics = step(state, {k: batch[k] for k in exp.task.train_keys}, jax.random.PRNGKey(i))
            jax.block_until_ready(metrics)
        counts.append(n[0])
    assert counts == [1, 0, 0]
