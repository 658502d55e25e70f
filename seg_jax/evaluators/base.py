"""What an evaluator is: built from one `config.evals` entry, run over a split, returning flat named scalars.

Each evaluator follows detectron2's reset / process / evaluate around a pmapped per-device function:

    ev = EVALUATORS.get(entry.type)(name, entry, task=task, class_names=..., data_cfg=config.data)
    ev.validate(dataset)          # before the first training step: split exists, inputs present
    result = ev.run(state, dataset=dataset)   # -> EvalResult(scalars={"val/mean_iou": ...}, ...)

`device_fn(state, batch)` runs under pmap on every eval batch and returns per-device outputs (statistics already
psummed over devices as summed (value, count) pairs); `process(outputs, batch)` accumulates them on the host;
`evaluate()` gives the scalars without the name prefix. The loop never knows what any metric is called.
With `data.eval_size` set, every evaluator scores at each image's native resolution (`native`), and says so in its
`resolution` definition.
"""
from __future__ import annotations

import dataclasses
import re
from typing import Any, Callable, ClassVar, Iterable, Iterator, Mapping

import jax
import ml_collections
import numpy as np

from seg_jax import data
from seg_jax.evaluators import native
from seg_jax.train.state import unreplicate_to_host


@dataclasses.dataclass
class EvalResult:
    """One evaluator's output.

    scalars: flat float scalars named `<evaluator>/<metric>` (per-class ones `<evaluator>/<metric>/<class>`).
    definitions: what each metric (without the prefix) means, written beside the numbers.
    pictures: uint8 `[H, W, 3]` grids by picture name.
    """

    name: str
    scalars: dict[str, float]
    definitions: dict[str, str]
    pictures: dict[str, np.ndarray] = dataclasses.field(default_factory=dict)


def to_host(tree: Any) -> Any:
    """Per-device outputs `[D, b, ...]` of this process as numpy `[D * b, ...]`."""
    return jax.tree_util.tree_map(lambda x: np.asarray(x).reshape(-1, *np.shape(x)[2:]), jax.device_get(tree))


class Evaluator:
    """Base class; subclasses set `OPTIONS` (their config keys with defaults) and the hooks below.

    Common config keys: `type`, `split` (default `data.eval_split`), `data_version` (default None: the run's
    `data.version`; another builder version of a procedural dataset scores every arm of a study on the same images,
    e.g. a domain-shift split), `every` (training steps between runs; 0 = only at the end of training),
    `batch_size` (global), `num_pictures` (rows of the picture grid, 0 = none).
    """

    COMMON: ClassVar[dict[str, Any]] = {"type": None, "split": None, "data_version": None, "every": 0,
                                        "batch_size": 32, "num_pictures": 6}
    OPTIONS: ClassVar[dict[str, Any]] = {}
    # Numeric options `device_fn` reads as traced float32 scalars, not compile-time constants: evaluators that
    # differ only in them run one compiled function (`share_compilation`; `seg_jax.tune`'s trials).
    TRACED: ClassVar[tuple[str, ...]] = ()
    DEFINITIONS: ClassVar[dict[str, str]] = {}
    needs_instances: ClassVar[bool] = False

    def __init__(self, name: str, cfg: Mapping[str, Any] | ml_collections.ConfigDict, *, task: Any,
                 class_names: tuple[str, ...], data_cfg: ml_collections.ConfigDict):
        cfg = dict(cfg.to_dict() if hasattr(cfg, "to_dict") else cfg)
        valid = {**self.COMMON, **self.OPTIONS}
        unknown = sorted(set(cfg) - set(valid))
        if unknown:
            raise ValueError(f"config.evals.{name}: unknown option(s) {', '.join(unknown)} for evaluator type "
                             f"{cfg.get('type')!r}; its options: {', '.join(sorted(valid))}")
        options = {**valid, **cfg}
        self.name, self.task, self.class_names, self.data_cfg = name, task, tuple(class_names), data_cfg
        self.split = options["split"] or data_cfg.eval_split
        self.data_version = options["data_version"]
        self._own_dataset: Any = None
        self.every, self.batch_size = int(options["every"]), int(options["batch_size"])
        self.num_pictures = int(options["num_pictures"])
        self.options = {k: options[k] for k in self.OPTIONS}
        self.DEFINITIONS = {**self.DEFINITIONS, "resolution": native.resolution_definition(data_cfg)}
        if self.data_version is not None:
            self.DEFINITIONS["data_version"] = (f"images of {data_cfg.name!r} builder version {self.data_version}, "
                                                f"split {self.split!r}, whatever version the run trained on")
        if self.batch_size <= 0 or self.every < 0 or self.num_pictures < 0:
            raise ValueError(f"config.evals.{name}: batch_size must be > 0, every and num_pictures >= 0, got "
                             f"{self.batch_size}, {self.every}, {self.num_pictures}")
        self._pmapped: Callable | None = None

    # ----------------------------------------------------------------------------------------- the hooks
    def scalar_names(self) -> list[str]:
        """The scalars `evaluate()` returns (without the prefix), known before running."""
        raise NotImplementedError

    def device_fn(self, state, batch: dict[str, jax.Array]) -> dict[str, jax.Array]:
        """Per-device outputs of one eval batch (called under pmap, axis "batch")."""
        raise NotImplementedError

    def reset(self) -> None:
        raise NotImplementedError

    def process(self, outputs: dict[str, np.ndarray], batch: dict[str, np.ndarray]) -> None:
        raise NotImplementedError

    def evaluate(self) -> dict[str, float]:
        raise NotImplementedError

    def pictures(self) -> dict[str, np.ndarray]:
        return {}

    # ----------------------------------------------------------------------------------------- the template
    def static_key(self) -> tuple:
        """What decides this evaluator's compiled function besides its task: its type and non-`TRACED` options."""
        return type(self), tuple((k, repr(v)) for k, v in sorted(self.options.items()) if k not in self.TRACED)

    def share_compilation(self, source: "Evaluator") -> None:
        """Runs `source`'s compiled function from now on (none is compiled for this one). The caller vouches that
        both evaluate the same task (`seg_jax.tune`: replayed outputs of one network); their options may differ only
        in `TRACED` ones.

        Raises:
            ValueError: other options differ (they are compile-time constants).
        """
        if source.static_key() != self.static_key():
            raise ValueError(f"evaluator {self.name!r} cannot share {source.name!r}'s compilation: they differ in "
                             f"options other than {', '.join(self.TRACED) or 'none'}")
        self._pmapped = source._compiled()

    def _compiled(self) -> Callable:
        if self._pmapped is None:
            self._pmapped = jax.pmap(self._device_fn_traced, axis_name="batch")
        return self._pmapped

    def _device_fn_traced(self, state, batch: dict[str, jax.Array], traced: dict[str, jax.Array]):
        # `device_fn` reads `self.options`; while it is traced, the TRACED entries are the traced scalars.
        options = self.options
        self.options = {**options, **traced}
        try:
            return self.device_fn(state, batch)
        finally:
            self.options = options

    def dataset_for(self, dataset: Any) -> Any:
        """The dataset this evaluator reads: the run's `dataset`, or (`data_version` set and different) the same
        dataset config at that version, resolved once.

        Raises:
            KeyError: a `data_version` the dataset's builder cannot write (the message lists valid ones).
        """
        if self.data_version is None or str(self.data_version) == dataset.version:
            return dataset
        if self._own_dataset is None:
            cfg = ml_collections.ConfigDict(self.data_cfg.to_dict())
            cfg.version = str(self.data_version)
            self._own_dataset = data.resolve(cfg)
        return self._own_dataset

    def validate(self, dataset: Any) -> None:
        """Raises a ValueError/KeyError naming this entry when it cannot run on `dataset` (the run's; read at
        `data_version` when set)."""
        dataset = self.dataset_for(dataset)
        dataset.source(self.split)  # an unknown split lists the available ones
        if self.needs_instances and not dataset.has_instances:
            raise ValueError(f"config.evals.{self.name} ({type(self).__name__}) needs instance ids, and dataset "
                             f"{dataset.name!r} has none")

    def batches(self, dataset: Any) -> Iterator[dict[str, np.ndarray]]:
        """This process's eval batches of the split (of `dataset_for(dataset)`): numpy `[local devices, b, ...]`,
        the last padded (mask 0)."""
        return data.eval_batches(self.dataset_for(dataset), split=self.split, global_batch_size=self.batch_size,
                                 num_local_devices=jax.local_device_count(), process_index=jax.process_index(),
                                 process_count=jax.process_count())

    def run(self, state, *, dataset: Any) -> EvalResult:
        """Evaluates a replicated state on every example of the split exactly once."""
        return self.run_batches((state, batch) for batch in self.batches(dataset))

    def run_batches(self, pairs: Iterable[tuple[Any, dict[str, np.ndarray]]]) -> EvalResult:
        """`run` over `(replicated state, batch)` pairs, a state per batch: `seg_jax.tune` replays the network's
        outputs, computed once, as the state of each batch and re-runs only the post-processing."""
        pmapped = self._compiled()
        # one copy per device, mapped like the batch: jax 0.10's pmap applies an in_axes=None given to an argument
        # without leaves (no TRACED options) to the last leaf of the one before it
        traced = {k: np.full(jax.local_device_count(), self.options[k], np.float32) for k in self.TRACED}
        self.reset()
        for state, batch in pairs:
            inputs = {k: batch[k] for k in ("image", "label", "mask", *native.DEVICE_KEYS) if k in batch}
            self.process(pmapped(state, inputs, traced), batch)
        scalars = {f"{self.name}/{k}": float(v) for k, v in self.evaluate().items()}
        return EvalResult(name=self.name, scalars=scalars, definitions=dict(self.DEFINITIONS),
                          pictures=self.pictures() if self.num_pictures else {})


def summed(outputs: dict[str, Any], keys: tuple[str, ...]) -> dict[str, np.ndarray]:
    """The psummed statistics `keys` of pmapped outputs (equal on every device) as float64/int64 numpy."""
    values = unreplicate_to_host({k: outputs[k] for k in keys})
    return {k: v.astype(np.float64 if v.dtype.kind == "f" else np.int64) for k, v in values.items()}


def safe_name(text: str) -> str:
    """`text` usable in a file name: split slices such as `validation[:8]` become `validation_8`."""
    return re.sub(r"[^\w.-]+", "_", text).strip("_") or "split"
