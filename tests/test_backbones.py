"""seg_jax.models.backbones: features against NumPy and torch references, weight files, errors, pretrained training.

torch-free: state dicts in torchvision's key layout written with NumPy (.npz, .safetensors), checked against a NumPy
convolution written here. With torch: plain torch.nn mirrors of torchvision's VGG-16 / vgg16_bn / ResNet-50 (the same
module names, so the same state_dict keys; torchvision itself is not needed), random weights and BatchNorm statistics,
saved with torch.save and loaded with `load_pretrained`.
"""
from __future__ import annotations

import importlib
import json
import struct

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from seg_jax.models import backbones, create_model
from seg_jax.models.backbones import create_backbone, load_pretrained, weights_file
from seg_jax.train import optim, validate
from seg_jax.train.experiment import build_experiment
from seg_jax.train.loop import pretrained_backbone
from seg_jax.train.state import create_train_state
from seg_jax.train.steps import pmapped_train_step, replicate

VGG_BLOCKS = ((64, 2), (128, 2), (256, 3), (512, 3), (512, 3))  # torchvision's cfg "D"


# ---------------------------------------------------------------------------------------------- NumPy references
def np_conv(x: np.ndarray, weight: np.ndarray, bias: np.ndarray | None = None, *, stride: int = 1,
            padding: int = 0) -> np.ndarray:
    """torch.nn.functional.conv2d on NHWC input: x [B, H, W, I], weight torch OIHW [O, I, kh, kw] → [B, H', W', O]."""
    kh, kw = weight.shape[2:]
    x = np.pad(x, ((0, 0), (padding, padding), (padding, padding), (0, 0)))
    out_h, out_w = (x.shape[1] - kh) // stride + 1, (x.shape[2] - kw) // stride + 1
    out = np.zeros((x.shape[0], out_h, out_w, weight.shape[0]))
    for i in range(kh):
        for j in range(kw):
            patch = x[:, i:i + stride * out_h:stride, j:j + stride * out_w:stride]
            out += np.einsum("bhwi,oi->bhwo", patch, weight[:, :, i, j])
    return out + (0 if bias is None else bias)


def np_pool2(x: np.ndarray) -> np.ndarray:
    b, h, w, c = x.shape
    return x.reshape(b, h // 2, 2, w // 2, 2, c).max(axis=(2, 4))


def np_batch_norm(x: np.ndarray, state: dict, key: str) -> np.ndarray:
    """torch's BatchNorm2d in eval mode (eps 1e-5)."""
    scale = state[f"{key}.weight"] / np.sqrt(state[f"{key}.running_var"] + 1e-5)
    return (x - state[f"{key}.running_mean"]) * scale + state[f"{key}.bias"]


def relative_error(actual, expected) -> float:
    return float(np.max(np.abs(np.asarray(actual) - expected)) / np.max(np.abs(expected)))


def _vgg_state(width: int, *, rng, fc: bool = False) -> dict[str, np.ndarray]:
    """torchvision vgg16 keys (features.{n}; classifier.{0,3,6} with `fc`), widths divided by `width`."""
    state, index, channels = {}, 0, 3
    for out, num_convs in VGG_BLOCKS:
        for _ in range(num_convs):
            fan_in = channels * 9
            state[f"features.{index}.weight"] = rng.normal(0, np.sqrt(2 / fan_in), (out // width, channels, 3, 3))
            state[f"features.{index}.bias"] = rng.normal(0, 0.1, out // width)
            channels, index = out // width, index + 2  # conv, ReLU
        index += 1  # MaxPool2d
    if fc:
        hidden = 4096 // width
        for key, shape in (("classifier.0", (hidden, channels * 49)), ("classifier.3", (hidden, hidden)),
                           ("classifier.6", (1000, hidden))):
            state[f"{key}.weight"] = rng.normal(0, np.sqrt(2 / shape[1]), shape)
            state[f"{key}.bias"] = rng.normal(0, 0.1, shape[0])
    return {k: v.astype(np.float32) for k, v in state.items()}


# ---------------------------------------------------------------------------------------------- weight files
def test_safetensors_reads_a_hand_written_file_and_round_trips(tmp_path):
    data = np.arange(6, dtype="<f4").reshape(2, 3)
    header = json.dumps({"w": {"dtype": "F32", "shape": [2, 3], "data_offsets": [0, 24]},
                         "__metadata__": {"format": "pt"}}).encode()
    (tmp_path / "hand.safetensors").write_bytes(struct.pack("<Q", len(header)) + header + data.tobytes())
    np.testing.assert_array_equal(weights_file.read_safetensors(tmp_path / "hand.safetensors")["w"], data)

    arrays = {"a": np.random.default_rng(0).normal(size=(3, 4, 5)).astype(np.float32),
              "b": np.arange(7, dtype=np.int64), "c": np.array([1.5, -2], np.float16)}
    weights_file.write_safetensors(tmp_path / "x.safetensors", arrays, metadata={"source": "test"})
    raw = (tmp_path / "x.safetensors").read_bytes()
    (size,) = struct.unpack("<Q", raw[:8])
    assert size % 8 == 0 and json.loads(raw[8:8 + size])["a"]["dtype"] == "F32"
    back = weights_file.read_state_dict(tmp_path / "x.safetensors")
    assert back.keys() == arrays.keys()
    for key in arrays:
        assert back[key].dtype == arrays[key].dtype
        np.testing.assert_array_equal(back[key], arrays[key])


def test_bf16_is_widened_and_bad_files_are_named(tmp_path):
    values = np.array([1.0, -2.5, 3.140625], np.float32)  # exact in bfloat16
    raw = (values.view(np.uint32) >> 16).astype("<u2").tobytes()
    header = json.dumps({"w": {"dtype": "BF16", "shape": [3], "data_offsets": [0, 6]}}).encode()
    (tmp_path / "bf.safetensors").write_bytes(struct.pack("<Q", len(header)) + header + raw)
    np.testing.assert_array_equal(weights_file.read_safetensors(tmp_path / "bf.safetensors")["w"], values)

    (tmp_path / "bad.safetensors").write_bytes(struct.pack("<Q", 10 ** 6) + b"{}")
    with pytest.raises(weights_file.WeightsFileError, match="bad.safetensors.*header length"):
        weights_file.read_state_dict(tmp_path / "bad.safetensors")
    (tmp_path / "w.h5").write_bytes(b"")
    with pytest.raises(weights_file.WeightsFileError, match="unknown suffix '.h5'"):
        weights_file.read_state_dict(tmp_path / "w.h5")
    with pytest.raises(FileNotFoundError, match="nothere.npz"):
        weights_file.read_state_dict(tmp_path / "nothere.npz")


# ---------------------------------------------------------------------------------------------- torch-free loading
@pytest.mark.parametrize("suffix", [".npz", ".safetensors"])
def test_vgg_features_from_a_torchvision_layout_file_equal_numpy(tmp_path, suffix):
    state = _vgg_state(16, rng=np.random.default_rng(0))
    path = tmp_path / f"vgg16{suffix}"
    if suffix == ".npz":
        np.savez(path, **state)
    else:
        weights_file.write_safetensors(path, state)
    options = dict(width_multiplier=1 / 16, fully_convolutional=False)
    variables = load_pretrained(path, "vgg16", **options)
    assert set(variables) == {"params"}
    np.testing.assert_array_equal(variables["params"]["conv1_1"]["kernel"],
                                  state["features.0.weight"].transpose(2, 3, 1, 0))  # OIHW → HWIO
    x = np.random.default_rng(1).normal(size=(2, 32, 32, 3)).astype(np.float32)
    features = create_backbone("vgg16", **options).apply(variables, jnp.asarray(x))
    assert {k: v.shape[1] for k, v in features.items()} == {"C1": 16, "C2": 8, "C3": 4, "C4": 2, "C5": 1}

    relu = lambda v: np.maximum(v, 0)  # noqa: E731
    y = relu(np_conv(x, state["features.0.weight"], state["features.0.bias"], padding=1))
    y = np_pool2(relu(np_conv(y, state["features.2.weight"], state["features.2.bias"], padding=1)))
    assert relative_error(features["C1"], y) < 1e-5
    y = relu(np_conv(y, state["features.5.weight"], state["features.5.bias"], padding=1))
    y = np_pool2(relu(np_conv(y, state["features.7.weight"], state["features.7.bias"], padding=1)))
    assert relative_error(features["C2"], y) < 1e-5


def _resnet50_state(width: int, *, rng) -> dict[str, np.ndarray]:
    """torchvision resnet50 keys (conv1, bn1, layer{k}.{i}.conv{1,2,3}/bn{1,2,3}/downsample.{0,1}, fc)."""
    state = {}

    def conv(key, out, inp, k):
        state[f"{key}.weight"] = rng.normal(0, np.sqrt(2 / (inp * k * k)), (out, inp, k, k))

    def bn(key, n):
        state.update({f"{key}.weight": rng.uniform(0.5, 1.5, n), f"{key}.bias": rng.normal(0, 0.1, n),
                      f"{key}.running_mean": rng.normal(0, 0.1, n), f"{key}.running_var": rng.uniform(0.5, 2, n),
                      f"{key}.num_batches_tracked": np.array(7)})
    conv("conv1", 64 // width, 3, 7)
    bn("bn1", 64 // width)
    channels = 64 // width
    for stage, (depth, inner) in enumerate(zip((3, 4, 6, 3), (64, 128, 256, 512)), start=1):
        inner //= width
        for index in range(depth):
            block = f"layer{stage}.{index}"
            conv(f"{block}.conv1", inner, channels, 1), bn(f"{block}.bn1", inner)
            conv(f"{block}.conv2", inner, inner, 3), bn(f"{block}.bn2", inner)
            conv(f"{block}.conv3", 4 * inner, inner, 1), bn(f"{block}.bn3", 4 * inner)
            if index == 0:
                conv(f"{block}.downsample.0", 4 * inner, channels, 1), bn(f"{block}.downsample.1", 4 * inner)
            channels = 4 * inner
    state["fc.weight"], state["fc.bias"] = rng.normal(size=(1000, channels)), np.zeros(1000)
    return {k: v.astype(np.float32) if v.dtype.kind == "f" else v for k, v in state.items()}


def test_resnet50_stem_from_a_torchvision_layout_file_equals_numpy(tmp_path):
    state = _resnet50_state(16, rng=np.random.default_rng(0))
    np.savez(tmp_path / "r50.npz", **state)
    variables = load_pretrained(tmp_path / "r50.npz", "resnet50", width_multiplier=1 / 16)
    np.testing.assert_array_equal(variables["batch_stats"]["layer2_0"]["downsample_bn"]["var"],
                                  state["layer2.0.downsample.1.running_var"])
    x = np.random.default_rng(1).normal(size=(1, 32, 32, 3)).astype(np.float32)
    features = create_backbone("resnet50", width_multiplier=1 / 16).apply(variables, jnp.asarray(x))
    stem = np.maximum(np_batch_norm(np_conv(x, state["conv1.weight"], stride=2, padding=3), state, "bn1"), 0)
    assert relative_error(features["C1"], stem) < 1e-5
    assert [features[f"C{k}"].shape for k in range(2, 6)] == [(1, 8, 8, 16), (1, 4, 4, 32), (1, 2, 2, 64),
                                                              (1, 1, 1, 128)]


def test_one_message_names_the_missing_unexpected_or_misshaped_key(tmp_path):
    state = _vgg_state(16, rng=np.random.default_rng(0))
    options = dict(width_multiplier=1 / 16, fully_convolutional=False)

    def load(changed):
        np.savez(tmp_path / "w.npz", **changed)
        return load_pretrained(tmp_path / "w.npz", "vgg16", **options)

    with pytest.raises(backbones.PretrainedWeightsError, match=r"w\.npz: missing key 'features\.7\.bias'.*conv2_2"):
        load({k: v for k, v in state.items() if k != "features.7.bias"})
    with pytest.raises(backbones.PretrainedWeightsError, match=r"unexpected key 'features\.31\.weight'"):
        load({**state, "features.31.weight": np.zeros((3, 3, 3, 3), np.float32)})
    misshaped = r"key 'features\.2\.weight' has shape \(4, 4, 5, 5\) but backbone 'vgg16'.*expects \(4, 4, 3, 3\)"
    with pytest.raises(backbones.PretrainedWeightsError, match=misshaped):
        load({**state, "features.2.weight": np.zeros((4, 4, 5, 5), np.float32)})
    # The classifier and BatchNorm's step counter are skipped, not unexpected.
    load({**state, "classifier.6.weight": np.zeros((1000, 8), np.float32),
          "features.1.num_batches_tracked": np.array(1)})
    with pytest.raises(backbones.PretrainedWeightsError, match="backbone 'resnet' has no torchvision layout"):
        load_pretrained(tmp_path / "w.npz", "resnet")


def test_create_backbone_names_unknown_options_and_names():
    with pytest.raises(TypeError, match="widht_multiplier"):
        create_backbone("vgg16", widht_multiplier=1.0)
    with pytest.raises(KeyError, match="resnet101, resnet50, vgg16"):
        create_backbone("vgg19")


# ---------------------------------------------------------------------------------------------- torch references
def _torch_mirrors():
    """torch.nn modules with torchvision's names (hence its state_dict keys) for VGG-16(-BN) and ResNet-50."""
    torch = pytest.importorskip("torch")
    nn = torch.nn

    class VGG(nn.Module):  # torchvision.models.VGG with make_layers(cfg "D"), widths divided by `width`
        def __init__(self, width: int, batch_norm: bool):
            super().__init__()
            layers, channels = [], 3
            for out, num_convs in VGG_BLOCKS:
                for _ in range(num_convs):
                    layers += [nn.Conv2d(channels, out // width, 3, padding=1)]
                    layers += [nn.BatchNorm2d(out // width)] if batch_norm else []
                    layers += [nn.ReLU(inplace=True)]
                    channels = out // width
                layers.append(nn.MaxPool2d(2, 2))
            self.features = nn.Sequential(*layers)
            self.avgpool = nn.AdaptiveAvgPool2d((7, 7))
            hidden = 4096 // width
            self.classifier = nn.Sequential(nn.Linear(channels * 49, hidden), nn.ReLU(True), nn.Dropout(),
                                            nn.Linear(hidden, hidden), nn.ReLU(True), nn.Dropout(),
                                            nn.Linear(hidden, 1000))

        def stages(self, x):
            out = []
            for layer in self.features:
                x = layer(x)
                if isinstance(layer, nn.MaxPool2d):
                    out.append(x)
            return out

        def fc7(self, x):
            return self.classifier[:5](torch.flatten(self.avgpool(self.features(x)), 1))

    class Bottleneck(nn.Module):
        def __init__(self, inp: int, width: int, stride: int):
            super().__init__()
            self.conv1, self.bn1 = nn.Conv2d(inp, width, 1, bias=False), nn.BatchNorm2d(width)
            self.conv2 = nn.Conv2d(width, width, 3, stride, 1, bias=False)
            self.bn2 = nn.BatchNorm2d(width)
            self.conv3, self.bn3 = nn.Conv2d(width, 4 * width, 1, bias=False), nn.BatchNorm2d(4 * width)
            self.relu = nn.ReLU(inplace=True)
            self.downsample = None
            if stride != 1 or inp != 4 * width:
                self.downsample = nn.Sequential(nn.Conv2d(inp, 4 * width, 1, stride, bias=False),
                                                nn.BatchNorm2d(4 * width))

        def forward(self, x):
            y = self.relu(self.bn1(self.conv1(x)))
            y = self.relu(self.bn2(self.conv2(y)))
            y = self.bn3(self.conv3(y))
            return self.relu(y + (x if self.downsample is None else self.downsample(x)))

    class ResNet50(nn.Module):  # torchvision.models.resnet50's module tree
        def __init__(self):
            super().__init__()
            self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
            self.bn1, self.relu = nn.BatchNorm2d(64), nn.ReLU(inplace=True)
            self.maxpool = nn.MaxPool2d(3, 2, 1)
            channels = 64
            for stage, (depth, width) in enumerate(zip((3, 4, 6, 3), (64, 128, 256, 512)), start=1):
                blocks = []
                for index in range(depth):
                    blocks.append(Bottleneck(channels, width, 2 if stage > 1 and index == 0 else 1))
                    channels = 4 * width
                setattr(self, f"layer{stage}", nn.Sequential(*blocks))
            self.avgpool, self.fc = nn.AdaptiveAvgPool2d(1), nn.Linear(2048, 1000)

        def stages(self, x):
            x = self.relu(self.bn1(self.conv1(x)))
            out = [x]
            x = self.maxpool(x)
            for stage in (self.layer1, self.layer2, self.layer3, self.layer4):
                x = stage(x)
                out.append(x)
            return out

    def randomise_batch_norm(module, seed: int):
        generator = torch.Generator().manual_seed(seed)
        for m in module.modules():
            if isinstance(m, nn.BatchNorm2d):
                n = m.num_features
                m.weight.data = torch.rand(n, generator=generator) + 0.5
                m.bias.data = torch.randn(n, generator=generator) * 0.1
                m.running_mean = torch.randn(n, generator=generator) * 0.1
                m.running_var = torch.rand(n, generator=generator) * 1.5 + 0.5
        return module.eval()

    return torch, VGG, ResNet50, randomise_batch_norm


def _nchw_to_nhwc(tensor) -> np.ndarray:
    return tensor.detach().numpy().transpose(0, 2, 3, 1)


@pytest.mark.parametrize("batch_norm", [False, True], ids=["vgg16", "vgg16_bn"])
def test_vgg16_stages_equal_torch(tmp_path, batch_norm):
    torch, VGG, _, randomise_batch_norm = _torch_mirrors()
    torch.manual_seed(0)
    reference = randomise_batch_norm(VGG(16, batch_norm), 1)
    for module in reference.features:
        if isinstance(module, torch.nn.Conv2d):  # non-zero biases, so folding them into BatchNorm matters
            torch.nn.init.normal_(module.bias, std=0.1)
    torch.save(reference.state_dict(), tmp_path / "vgg.pth")
    options = dict(width_multiplier=1 / 16, norm="batch" if batch_norm else "none", fully_convolutional=False)
    variables = load_pretrained(tmp_path / "vgg.pth", "vgg16", **options)
    x = np.random.default_rng(0).normal(size=(2, 64, 64, 3)).astype(np.float32)
    features = create_backbone("vgg16", **options).apply(variables, jnp.asarray(x))
    with torch.no_grad():
        expected = reference.stages(torch.from_numpy(x.transpose(0, 3, 1, 2)))
    for k, tensor in enumerate(expected, start=1):
        assert relative_error(features[f"C{k}"], _nchw_to_nhwc(tensor)) <= 1e-4, f"C{k}"


def test_fcn32s_at_224_reproduces_vgg16_fc7(tmp_path):
    """The paper's convolutionalisation: fc6 (Linear 512·7·7 → 4096, C-H-W flatten order) as a 7×7 conv and fc7 as
    a 1×1 conv; at 224×224 pool5 is 7×7 and fc7's centre pixel is the classifier's fc7 (widths / 16)."""
    torch, VGG, _, _ = _torch_mirrors()
    torch.manual_seed(0)
    reference = VGG(16, batch_norm=False).eval()
    torch.save({"state_dict": reference.state_dict()}, tmp_path / "vgg.pth")  # a trainer's checkpoint wrapper
    model = create_model("fcn32s", num_classes=3, width_multiplier=1 / 16, fc6_kernel=7)
    name, options = model.backbone_config()
    loaded = load_pretrained(tmp_path / "vgg.pth", name, **options)
    x = np.random.default_rng(0).normal(size=(1, 224, 224, 3)).astype(np.float32)
    variables = backbones.replace_backbone(jax.eval_shape(model.init, jax.random.key(0, impl="rbg"), x), loaded)
    variables["params"] = {**variables["params"], **{  # the head's values do not matter here
        k: jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), v) for k, v in variables["params"].items()
        if k != "backbone"}}
    _, state = model.apply(variables, jnp.asarray(x), capture_intermediates=True, mutable=["intermediates"])
    fc7 = np.asarray(state["intermediates"]["backbone"]["__call__"][0]["fc7"])
    assert fc7.shape == (1, 7, 7, 256)
    with torch.no_grad():
        expected = reference.fc7(torch.from_numpy(x.transpose(0, 3, 1, 2))).numpy()
    assert relative_error(fc7[:, 3, 3], expected) <= 1e-4


def test_resnet50_stages_equal_torch(tmp_path):
    torch, _, ResNet50, randomise_batch_norm = _torch_mirrors()
    torch.manual_seed(0)
    reference = randomise_batch_norm(ResNet50(), 1)
    torch.save(reference.state_dict(), tmp_path / "resnet50.pth")
    variables = load_pretrained(tmp_path / "resnet50.pth", "resnet50")
    x = np.random.default_rng(0).normal(size=(1, 32, 32, 3)).astype(np.float32)
    features = jax.jit(create_backbone("resnet50").apply)(variables, jnp.asarray(x))
    with torch.no_grad():
        expected = reference.stages(torch.from_numpy(x.transpose(0, 3, 1, 2)))
    for k, tensor in enumerate(expected, start=1):
        assert relative_error(features[f"C{k}"], _nchw_to_nhwc(tensor)) <= 1e-4, f"C{k}"


# ---------------------------------------------------------------------------------------------- training
def _fcn_config(tmp_path, **model):
    config = importlib.import_module("experiments.fcn").get_config("fcn32s,tiny")
    config.model.update(fc_norm=False, **model)
    config.schedule.warmup_steps = 0  # the first step must move what is not frozen
    return config


def _vgg_file_for(exp, path) -> dict[str, np.ndarray]:
    """A random state dict in torchvision's layout with the shapes `exp`'s backbone expects, saved as .npz."""
    from seg_jax.models.backbones import layout, pretrained
    module = exp.backbone.module()
    shapes = pretrained.variable_shapes(module)
    rng = np.random.default_rng(0)
    state = {}
    for entry in module.torch_layout():
        shape = layout.torch_shape(tuple(pretrained._get(shapes, entry.path).shape), entry.kind)
        state[entry.key] = (rng.uniform(0.5, 1.5, shape) if entry.key.endswith("running_var")
                            else rng.normal(size=shape)).astype(np.float32)
    np.savez(path, **state)
    return state


def _one_step(exp, state, config):
    crop = tuple(config.data.crop_size)
    rng = np.random.default_rng(0)
    batch = {"image": rng.normal(size=(1, 4, *crop, 3)).astype(np.float32),
             "label": rng.integers(0, 3, (1, 4, *crop)).astype(np.int32),
             "weights": np.ones((1, 4, *crop), np.float32)}
    step = pmapped_train_step(task=exp.task, learning_rate_fn=exp.learning_rate_fn)
    new_state, _ = step(replicate(state), batch, jax.random.key(1))
    return jax.tree.map(lambda x: np.asarray(x[0]), (new_state.params, new_state.batch_stats))


def test_pretrained_reaches_the_train_state_and_frozen_stages_stay(tmp_path):
    config = _fcn_config(tmp_path, norm="batch", freeze_stages=2, pretrained=str(tmp_path / "vgg16_bn.npz"))
    config.optimizer.weight_decay = 0.1  # adamw: decay would move frozen params were they not masked
    exp = build_experiment(config, num_classes=3)
    state_dict = _vgg_file_for(exp, tmp_path / "vgg16_bn.npz")
    validate.validate_config(config, num_devices=1, process_count=1)
    state = create_train_state(init_model=exp.init_model, apply_model=exp.task.model, tx=exp.tx, seed=0,
                               image_shape=tuple(config.data.crop_size), **pretrained_backbone(config, exp))
    backbone = state.params["backbone"]
    np.testing.assert_array_equal(backbone["conv3_2"]["kernel"], state_dict["features.17.weight"].transpose(2, 3, 1, 0))
    np.testing.assert_array_equal(backbone["bn1_1"]["scale"], state_dict["features.1.weight"])
    np.testing.assert_allclose(state.batch_stats["backbone"]["bn1_2"]["mean"],  # conv bias folded into the mean
                               state_dict["features.4.running_mean"] - state_dict["features.3.bias"], rtol=1e-6)

    params, _ = _one_step(exp, state, config)
    for name in backbone:
        changed = not all(np.array_equal(a, b) for a, b in zip(jax.tree.leaves(params["backbone"][name]),
                                                                jax.tree.leaves(backbone[name])))
        assert changed == (name.startswith(("conv3", "conv4", "conv5", "bn3", "bn4", "bn5", "fc"))), name
    assert not np.array_equal(params["score_fr"]["kernel"], state.params["score_fr"]["kernel"])


def test_freeze_bn_keeps_statistics_and_affine_fixed(tmp_path):
    config = _fcn_config(tmp_path, norm="batch", freeze_bn=True)
    exp = build_experiment(config, num_classes=3)
    state = create_train_state(init_model=exp.init_model, apply_model=exp.task.model, tx=exp.tx, seed=0,
                               image_shape=tuple(config.data.crop_size))
    params, batch_stats = _one_step(exp, state, config)
    for a, b in zip(jax.tree.leaves(batch_stats), jax.tree.leaves(state.batch_stats)):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(params["backbone"]["bn2_1"]["scale"], state.params["backbone"]["bn2_1"]["scale"])
    assert not np.array_equal(params["backbone"]["conv2_1"]["kernel"], state.params["backbone"]["conv2_1"]["kernel"])


def test_frozen_prefixes_follow_detectron2_stages():
    params = {"backbone": {"conv1": {"kernel": 0}, "bn1": {"scale": 0}, "layer1_0": {"conv1": {"kernel": 0},
                                                                                       "bn1": {"scale": 0}},
                           "layer2_0": {"downsample_bn": {"bias": 0}, "conv2": {"kernel": 0}}}, "fpn": {"w": 0}}
    resnet50 = create_backbone("resnet50")
    assert backbones.frozen_prefixes(params, backbone=resnet50, freeze_stages=2) == [
        "backbone/bn1", "backbone/conv1", "backbone/layer1_0"]
    assert backbones.frozen_prefixes(params, backbone=resnet50, freeze_bn=True) == [
        "backbone/bn1", "backbone/layer1_0/bn1", "backbone/layer2_0/downsample_bn"]
    # the one freezing mechanism, with optimizer.frozen's prefixes: labels by path
    tx = optim.with_frozen(optax.sgd(1.0), lambda p: backbones.frozen_prefixes(p, backbone=resnet50, freeze_stages=1))
    grads = jax.tree.map(lambda _: jnp.ones(2), params)
    updates, _ = tx.update(grads, tx.init(grads))
    assert updates["backbone"]["conv1"]["kernel"].tolist() == [0, 0] and updates["fpn"]["w"].tolist() == [-1, -1]
    assert updates["backbone"]["layer1_0"]["conv1"]["kernel"].tolist() == [-1, -1]


@pytest.mark.parametrize("changes,field,message", [
    (dict(pretrained="/no/such/file.safetensors"), "model.pretrained", "no file"),
    (dict(pretrained="weights.h5"), "model.pretrained", "suffix '.h5'"),
    (dict(freeze_stages=6), "model.freeze_stages", "exceeds the 5 stages"),
    (dict(freeze_stages=-1), "model.freeze_stages", ">= 0"),
    (dict(freeze_bn=True, norm="group"), "model.freeze_bn", "no BatchNorm"),
    (dict(pretrained_normalization="caffe"), "model.pretrained_normalization", "'imagenet'"),
])
def test_validate_names_the_bad_pretrained_field(tmp_path, changes, field, message):
    config = _fcn_config(tmp_path, norm="batch")
    config.model.update(**changes)
    with pytest.raises(validate.ConfigError, match=message) as caught:
        validate.validate_config(config, num_devices=1, process_count=1)
    assert caught.value.field == field


def test_validate_rejects_backbone_fields_without_a_backbone_and_a_wrong_normalisation(tmp_path):
    for field in ("freeze_stages", "freeze_bn", "pretrained"):
        config = importlib.import_module("experiments.default").get_config("tiny")
        config.model[field] = {"freeze_stages": 1, "freeze_bn": True, "pretrained": "w.npz"}[field]
        with pytest.raises(validate.ConfigError, match=f"model 'unet' has no backbone for config.model.{field}; "
                                                       "models with one: fcn16s, fcn32s, fcn8s, mask_rcnn") as caught:
            validate.validate_config(config, num_devices=1, process_count=1)
        assert caught.value.field == f"model.{field}"
    config = _fcn_config(tmp_path, pretrained=str(tmp_path / "w.npz"))
    np.savez(tmp_path / "w.npz", x=np.zeros(1))
    config.data.mean = (0.0, 0.0, 0.0)
    with pytest.raises(validate.ConfigError, match=r"data.mean: \(0.0, 0.0, 0.0\) differs from the 'imagenet'"):
        validate.validate_config(config, num_devices=1, process_count=1)


def test_export_torchvision_writes_a_file_load_pretrained_reads(tmp_path, monkeypatch):
    """The command end to end, with a stand-in torchvision whose get_model returns the mirror (no download)."""
    import sys
    import types
    from seg_jax.models.backbones import export_torchvision
    torch, VGG, _, _ = _torch_mirrors()
    torch.manual_seed(0)
    reference = VGG(16, batch_norm=False)
    fake = types.ModuleType("torchvision")
    fake.models = types.SimpleNamespace(get_model=lambda name, weights: reference)
    monkeypatch.setitem(sys.modules, "torchvision", fake)
    assert export_torchvision.main(["vgg16", str(tmp_path / "vgg16.safetensors")]) == 0
    loaded = load_pretrained(tmp_path / "vgg16.safetensors", "vgg16", width_multiplier=1 / 16)
    np.testing.assert_array_equal(loaded["params"]["fc7"]["kernel"][0, 0],
                                  reference.classifier[3].weight.detach().numpy().T)


def test_mask_rcnn_on_resnet50_has_torchvision_backbone_and_c2_to_c5_levels():
    model = create_model("mask_rcnn", num_classes=3, backbone_name="resnet50", norm="batch")
    assert model.backbone_config()[0] == "resnet50" and model.num_levels == 4
    variables = jax.eval_shape(model.init, jax.random.key(0, impl="rbg"), jnp.zeros((1, 64, 64, 3)))
    assert variables["params"]["backbone"]["layer4_2"]["conv3"]["kernel"].shape == (1, 1, 512, 2048)
    assert variables["params"]["fpn"]["lateral3"]["kernel"].shape[2] == 2048  # C5 feeds the top FPN level


def test_saved_configs_without_the_new_fields_compare_equal():
    from seg_jax.train import workdir
    config = importlib.import_module("experiments.default").get_config("tiny")
    config.optimizer.decay_norm_and_bias = True  # what runs saved before the field did: decay on every parameter
    new = workdir.flat_config(config)
    old = {k: v for k, v in new.items() if k not in workdir.ADDED_DEFAULTS}
    assert workdir._differences(old, new) == []
    assert workdir._differences(old, {**new, "model.freeze_stages": 2}) == ["model.freeze_stages"]
    # the new default trains otherwise: resuming an older run with it is refused, naming the field
    assert workdir._differences(old, {**new, "optimizer.decay_norm_and_bias": False}) == [
        "optimizer.decay_norm_and_bias"]


def test_timm_vgg16_names_and_conv_fc_layers_load_as_torchvision(tmp_path):
    state = _vgg_state(16, rng=np.random.default_rng(0), fc=True)
    hidden, channels = 256, 32
    timm = {k: v for k, v in state.items() if k.startswith("features.")}
    timm["pre_logits.fc1.weight"] = state["classifier.0.weight"].reshape(hidden, channels, 7, 7)  # ConvMlp
    timm["pre_logits.fc2.weight"] = state["classifier.3.weight"].reshape(hidden, hidden, 1, 1)
    timm["pre_logits.fc1.bias"], timm["pre_logits.fc2.bias"] = state["classifier.0.bias"], state["classifier.3.bias"]
    timm["head.fc.weight"], timm["head.fc.bias"] = state["classifier.6.weight"], state["classifier.6.bias"]
    np.savez(tmp_path / "tv.npz", **state)
    np.savez(tmp_path / "timm.npz", **timm)
    expected = load_pretrained(tmp_path / "tv.npz", "vgg16", width_multiplier=1 / 16)
    for a, b in zip(jax.tree.leaves(load_pretrained(tmp_path / "timm.npz", "vgg16", width_multiplier=1 / 16)),
                    jax.tree.leaves(expected)):
        np.testing.assert_array_equal(a, b)
    # fc6's kernel at (i, j) is the Linear weight of input channel c at pixel (i, j): torch's C, H, W flatten order.
    np.testing.assert_array_equal(expected["params"]["fc6"]["kernel"][2, 5, 7],
                                  state["classifier.0.weight"][:, 7 * 49 + 2 * 7 + 5])
