"""Data parallelism: 2 devices, and 2 processes, reach the parameters of 1 device on the same global batch."""
import os
import pathlib
import socket
import subprocess
import sys

import numpy as np
import pytest

from seg_jax import data

SCRIPT = pathlib.Path(__file__).with_name("distributed_run.py")


def _env(devices: int, *, compilation_cache: bool = True) -> dict:
    env = dict(os.environ)
    env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices}"
    env["JAX_PLATFORMS"] = "cpu"
    if not compilation_cache:  # processes hitting and missing the cache unevenly stalled in collectives here
        env.pop("JAX_COMPILATION_CACHE_DIR", None)
    return env


def _load(path):
    z = np.load(path)
    return int(z["devices"]), [z[f"p{i}"] for i in range(len(z.files) - 2)]


@pytest.fixture(scope="module")
def one_device(tmp_path_factory, data_dir):
    from experiments import default
    config = default.get_config("tiny")
    config.data.data_dir = data_dir
    data.resolve(config.data)  # once, before processes race to build it
    out = tmp_path_factory.mktemp("one") / "p.npz"
    subprocess.run([sys.executable, SCRIPT, str(out.parent / "w"), str(out), data_dir], env=_env(1), check=True,
                   timeout=300)
    return _load(out)


def _assert_same(reference, other):
    (n_ref, ref), (n, got) = reference, other
    assert n_ref == 1 and n == 2
    assert len(ref) == len(got)
    for a, b in zip(ref, got):
        np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-7)


def test_two_devices_match_one(one_device, tmp_path, data_dir):
    out = tmp_path / "p.npz"
    subprocess.run([sys.executable, SCRIPT, str(tmp_path / "w"), str(out), data_dir], env=_env(2), check=True,
                   timeout=300)
    _assert_same(one_device, _load(out))


def test_two_processes_match_one(one_device, tmp_path, data_dir):
    with socket.socket() as s:
        s.bind(("localhost", 0))
        port = s.getsockname()[1]
    out = tmp_path / "p.npz"
    procs = [subprocess.Popen([sys.executable, SCRIPT, str(tmp_path / "w"), str(out), data_dir, str(i), "2",
                               str(port)], env=_env(1, compilation_cache=False)) for i in range(2)]
    assert [p.wait(timeout=480) for p in procs] == [0, 0]
    _assert_same(one_device, _load(out))


REPLICATE = """
import warnings
warnings.simplefilter("error", DeprecationWarning)  # no deprecated placement call on the way
import jax, jax.numpy as jnp, numpy as np
from seg_jax.train import steps
tree = {"kernel": jnp.arange(6.0).reshape(2, 3), "step": np.int32(7), "host": np.ones(4, np.float32)}
replicated = steps.replicate(tree)
returned = jax.pmap(lambda t: t, axis_name=steps.AXIS)(replicated)  # where the pmapped step puts its outputs
devices = jax.local_devices()
for name, leaf in replicated.items():
    assert leaf.shape == (2, *np.shape(tree[name])) and leaf.dtype == returned[name].dtype, name
    assert leaf.sharding == returned[name].sharding and leaf.sharding.spec == jax.sharding.PartitionSpec("batch")
    shards = sorted(leaf.addressable_shards, key=lambda s: s.index[0].start)
    assert [s.device for s in shards] == devices, name
    for shard in shards:
        np.testing.assert_array_equal(np.asarray(shard.data)[0], tree[name])
print("ok", len(devices))
"""


def test_replicate_puts_one_copy_per_local_device_where_pmap_puts_outputs():
    done = subprocess.run([sys.executable, "-c", REPLICATE], env=_env(2), cwd=SCRIPT.parents[1],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.split() == ["ok", "2"]
