"""The model registry and `create_model`, which builds a registered model from config options."""
from __future__ import annotations

from typing import Any, Callable

import flax.linen as nn

from seg_jax.registry import Registry, module_options

# name → a Module class, or a functools.partial of one that fixes the options the name implies.
MODELS: Registry[Callable[..., nn.Module]] = Registry("model")

def model_options(name: str) -> list[str]:
    """The keyword options `create_model(name, ...)` accepts, sorted (including `num_classes`)."""
    return module_options(MODELS.get(name))


def create_model(name: str, *, num_classes: int, **kwargs: Any) -> nn.Module:
    """Builds the model registered as `name`.

    Args:
        name: a registered model name (`MODELS.names()`), e.g. "fcn8s" or "unet".
        num_classes: N, the number of output channels; logits are float32 [B, H, W, N].
        **kwargs: the model's options (dataclass fields, e.g. `norm="batch"`, `dtype=jnp.bfloat16`).

    Raises:
        KeyError: unknown `name` (the message lists the registered names).
        TypeError: an option the model does not have (the message names it and lists the valid ones).
    """
    valid = model_options(name)
    unknown = sorted(set(kwargs) - set(valid))
    if unknown:
        raise TypeError(f"model {name!r} has no option(s) {', '.join(unknown)}; "
                        f"valid options: {', '.join(valid)}")
    return MODELS.get(name)(num_classes=num_classes, **kwargs)
