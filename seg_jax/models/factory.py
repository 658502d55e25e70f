"""The model registry and `create_model`, which builds a registered model from config options."""
from __future__ import annotations

from typing import Any, Callable

import flax.linen as nn
import jax.numpy as jnp

from seg_jax.registry import Registry, module_options

# name → a Module class, or a functools.partial of one that fixes the options the name implies.
MODELS: Registry[Callable[..., nn.Module]] = Registry("model")

# Compute dtypes a model may run in (`config.model.dtype`); parameters, BatchNorm statistics, logits and losses stay
# float32 in every one. float16 is left out: its range (6e-5 .. 65504) needs loss scaling, which seg_jax does not do;
# bfloat16 has float32's range.
COMPUTE_DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


def compute_dtype(dtype: Any) -> jnp.dtype:
    """`dtype` ("float32", "bfloat16", or a dtype such as `jnp.bfloat16`) as a `jnp.dtype`.

    Raises:
        ValueError: any other dtype (the message names config.model.dtype and the valid values).
    """
    try:
        found = jnp.dtype(dtype)
    except TypeError:
        found = None
    if found is None or found.name not in COMPUTE_DTYPES:
        raise ValueError(f"config.model.dtype={dtype!r} is not a compute dtype seg_jax supports; valid values: "
                         f"{', '.join(COMPUTE_DTYPES)} (float16 would need loss scaling)")
    return found


def model_options(name: str) -> list[str]:
    """The keyword options `create_model(name, ...)` accepts, sorted (including `num_classes`)."""
    return module_options(MODELS.get(name))


def create_model(name: str, *, num_classes: int, **kwargs: Any) -> nn.Module:
    """Builds the model registered as `name`.

    Args:
        name: a registered model name (`MODELS.names()`), e.g. "fcn8s" or "unet".
        num_classes: N, the number of output channels; logits are float32 [B, H, W, N].
        **kwargs: the model's options (dataclass fields, e.g. `norm="batch"`); `dtype`, the compute dtype, may be
            a name ("bfloat16", as `config.model.dtype` holds it): `compute_dtype` converts it here, once.

    Raises:
        KeyError: unknown `name` (the message lists the registered names).
        TypeError: an option the model does not have (the message names it and lists the valid ones).
        ValueError: a `dtype` other than `COMPUTE_DTYPES`.
    """
    valid = model_options(name)
    unknown = sorted(set(kwargs) - set(valid))
    if unknown:
        raise TypeError(f"model {name!r} has no option(s) {', '.join(unknown)}; "
                        f"valid options: {', '.join(valid)}")
    if "dtype" in kwargs:
        kwargs["dtype"] = compute_dtype(kwargs["dtype"])
    return MODELS.get(name)(num_classes=num_classes, **kwargs)
