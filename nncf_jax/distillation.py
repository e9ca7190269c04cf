"""The ``knowledge_distillation`` algorithm: a loss pulling the compressed model
towards the original one (NNCF's ``KnowledgeDistillationLoss``).

**The teacher.** `KnowledgeDistillation.init_state` copies the model's
variables into the algorithm's slot of the compression state,
``cstate.algorithms["knowledge_distillation"].teacher``; `create_compressed_model`
calls it with the variables it was given, so the teacher is the model as it
was then (NNCF deep-copies the model at build time). Being state, the teacher
shards like the params, is saved and restored by `nncf_jax.checkpoint` and
costs **one copy of the model's variables** in device memory (and in each
checkpoint). It never trains: it enters the loss under ``stop_gradient`` and
no optimizer sees it. Copies are real copies (new buffers), so a train step
that donates the variables does not delete the teacher.

**How the loss sees the batch.** DESIGN's train step is
``xent(ctrl.apply(v, cstate, x), y) + ctrl.loss(params, cstate)``:
``ctrl.loss`` has no inputs. The algorithm's `forward_context` (entered by
``ctrl.apply``) intercepts the top-level call of the model
(``flax.linen.intercept_methods``, the root module's method, path ``()``) and
records its inputs, its output (the student's) and RNG keys for the teacher,
tagged with the current JAX trace. `loss` then takes that record, runs the
teacher forward on the same inputs, and computes the loss from both outputs.
So:

- student and teacher run in the same jitted step, and the teacher runs
  only when a loss is asked for (an evaluation forward pays nothing);
- the teacher runs after ``ctrl.apply`` has left the forward context, so
  the other algorithms' masks, fake-quantized weights and activation
  quantizers never touch it: it is the plain original model;
- ``ctrl.loss`` must follow ``ctrl.apply`` inside the same traced function
  (the same ``jit``/``grad`` body, or both eager); a record from another
  trace is never used (its tracers belong to a finished trace): `loss`
  raises `UsageError` instead, as it does when no ``ctrl.apply`` came first.
  Each record is used by one ``ctrl.loss`` and then dropped; a later
  ``ctrl.apply`` replaces an unused one.

A record left by a forward without a loss (an evaluation step) stays until
the next forward or loss; under ``jax.checking_leaks()`` a traced function
that calls ``ctrl.apply`` without ``ctrl.loss`` therefore reports that record
as a leaked tracer.
"""

from __future__ import annotations

import contextlib
import threading
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from flax import struct
from jax.extend.core import get_opaque_trace_state

from nncf_jax.core.algorithm import CompressionAlgorithm
from nncf_jax.core.registry import BuildContext, register_algorithm
from nncf_jax.core.stage import CompressionStage
from nncf_jax.core.statistics import make_table, render_tables
from nncf_jax.errors import ConfigError, UsageError

__all__ = [
    "DistillationState",
    "DistillationStatistics",
    "KnowledgeDistillation",
    "build_knowledge_distillation",
    "distillation_loss",
]

KINDS = ("mse", "softmax")


class DistillationState(struct.PyTreeNode):
    """The knowledge distillation slot of the compression state.

    Attributes:
      teacher: a copy of the original model's variables, ``{"params": ...,
        "batch_stats": ..., ...}``, same shapes, dtypes and shardings.
    """

    teacher: Any


def _loss_of_leaf(s: jax.Array, t: jax.Array, kind: str, temperature: float) -> jax.Array:
    s, t = s.astype(jnp.float32), t.astype(jnp.float32)
    if kind == "mse":
        return jnp.mean(jnp.square(s - t))
    p_teacher = jax.nn.softmax(t / temperature, axis=-1)
    log_q_student = jax.nn.log_softmax(s / temperature, axis=-1)
    return -jnp.mean(jnp.sum(p_teacher * log_q_student, axis=-1)) * (temperature * temperature)


def _fits(leaf: Any, kind: str) -> bool:
    return (kind == "mse" and leaf.ndim >= 2) or (kind == "softmax" and leaf.ndim == 2)


def distillation_loss(
    student: Any, teacher: Any, *, kind: str, scale: float = 1.0, temperature: float = 1.0
) -> jax.Array:
    """NNCF's knowledge distillation loss between two model outputs.

    Every floating-point leaf of the output pytree is one output tensor
    (NNCF: each output tensor that requires grad); the loss is the sum over
    the leaves that fit ``kind``:

    - ``"mse"`` (leaves of rank >= 2, NNCF's ``MSELoss``, mean over every
      element): :math:`\\text{scale} \\cdot \\operatorname{mean}((s - t)^2)`;
    - ``"softmax"`` (leaves of rank 2, ``(batch, classes)``): the
      cross-entropy of the student's tempered softmax against the teacher's,
      averaged over the batch and scaled by :math:`T^2` (Hinton et al.):
      :math:`\\text{scale} \\cdot T^2 \\cdot \\frac{1}{B} \\sum_b \\sum_c
      -\\operatorname{softmax}(t_b / T)_c \\, \\log\\operatorname{softmax}(s_b / T)_c`.
      NNCF writes it ``-(log_softmax(s/T, 1) * softmax(t/T, 1)).mean() * C * T^2``,
      the same number. It differs from :math:`\\mathrm{KL}(p_t \\| p_s)`
      by the teacher's entropy, a constant for the student: same gradients.

    Leaves of other ranks are left out with a warning, as NNCF leaves them out
    (it logs at debug level). Computed in float32.

    Args:
      student: the student's output pytree.
      teacher: the teacher's output pytree, same structure and shapes.
      kind: ``"mse"`` or ``"softmax"``.
      scale: loss multiplier (config ``scale``).
      temperature: softmax temperature :math:`T > 0` (config
        ``temperature``); unused by ``"mse"``.

    Returns:
      A float32 scalar.

    Raises:
      UsageError: the two outputs differ in structure or shape, or no leaf
        fits ``kind``.

    Example:
      >>> s = jnp.array([[2.0, 0.0]]); t = jnp.array([[0.0, 2.0]])
      >>> float(distillation_loss(s, t, kind="mse"))
      4.0
    """
    if kind not in KINDS:
        raise UsageError(f"distillation_loss: kind must be one of {KINDS}, got {kind!r}")
    s_leaves, s_tree = jax.tree_util.tree_flatten_with_path(student)
    t_leaves, t_tree = jax.tree_util.tree_flatten(teacher)
    if s_tree != t_tree:
        raise UsageError(
            f"knowledge_distillation: the student's and teacher's outputs differ in "
            f"structure: {s_tree} vs {t_tree}"
        )
    terms, left_out = [], []
    for (path, s), t in zip(s_leaves, t_leaves, strict=True):
        name = jax.tree_util.keystr(path) or "<output>"
        if not hasattr(s, "dtype") or not jnp.issubdtype(s.dtype, jnp.floating):
            continue
        if np.shape(s) != np.shape(t):
            raise UsageError(
                f"knowledge_distillation: output {name} is {np.shape(s)} for the student "
                f"and {np.shape(t)} for the teacher"
            )
        if not _fits(s, kind):
            left_out.append(f"{name} {tuple(s.shape)}")
            continue
        terms.append(_loss_of_leaf(s, t, kind, temperature))
    need = "rank >= 2" if kind == "mse" else "rank 2, (batch, classes)"
    if not terms:
        raise UsageError(
            f"knowledge_distillation ({kind}): no model output fits: {kind} needs floating "
            f"outputs of {need}; the outputs are {left_out or 'not floating arrays'}"
        )
    if left_out:
        warnings.warn(
            f"knowledge_distillation ({kind}) leaves out outputs that are not of {need}: "
            f"{', '.join(left_out)}",
            stacklevel=2,
        )
    return jnp.float32(scale) * sum(terms[1:], terms[0])


@dataclass(frozen=True)
class DistillationStatistics:
    """What ``ctrl.statistics().knowledge_distillation`` holds.

    Attributes:
      type: ``"mse"`` or ``"softmax"``.
      scale: the loss multiplier.
      temperature: the softmax temperature (NNCF: softmax only; None for mse).
      teacher_parameters: number of values in the teacher's variables.
      teacher_bytes: their size in device memory (the cost of the teacher copy).
    """

    type: str
    scale: float
    temperature: float | None
    teacher_parameters: int
    teacher_bytes: int

    def tables(self):
        rows = [
            ("Loss type", self.type),
            ("Scale", float(self.scale)),
            ("Temperature", "-" if self.temperature is None else float(self.temperature)),
            ("Teacher values", f"{self.teacher_parameters:,}"),
            ("Teacher memory", f"{self.teacher_bytes / 2**20:.2f} MiB"),
        ]
        return [make_table("Knowledge distillation", ["Statistic", "Value"], rows)]

    def to_str(self) -> str:
        return render_tables(self.tables())


@dataclass(frozen=True)
class _Record:
    """One top-level forward seen by the interceptor (tracers of ``trace``)."""

    trace: Any
    method: str
    args: tuple
    kwargs: dict
    rngs: dict
    student: Any


def _copy(tree: Any) -> Any:
    """New buffers, same shardings: a donated original does not take the copy along."""
    return jax.tree_util.tree_map(lambda x: jnp.array(x, copy=True), tree)


def _current_trace() -> Any:
    return get_opaque_trace_state(convention="nncf_jax")


class KnowledgeDistillation(CompressionAlgorithm):
    """NNCF's knowledge distillation: the compressed model learns the original's outputs.

    Args:
      kind: ``"mse"`` or ``"softmax"`` (config ``type``).
      scale: loss multiplier.
      temperature: softmax temperature.
      model: the unmodified ``flax.linen.Module``; the teacher runs it.
      collections: the model's variables other than ``params`` at build time
        (e.g. ``batch_stats``); the teacher keeps them.
      config_path: JSON path of the config section, for messages.
    """

    name = "knowledge_distillation"
    epoch_scheduled = False
    # Entered last, its interceptor is the outermost: it sees the inputs the
    # user passed (before another algorithm's quantizer on a root-level op)
    # and the output the user gets.
    application_order = 100

    def __init__(
        self,
        *,
        kind: str,
        scale: float,
        temperature: float,
        model: nn.Module,
        collections: Mapping[str, Any],
        config_path: str,
    ):
        if kind not in KINDS:
            raise ConfigError(f"{config_path}.type", f"expected one of {KINDS}, got {kind!r}")
        self.kind = kind
        self.scale = float(scale)
        self.temperature = float(temperature)
        self.config_path = config_path
        self._model = model
        self._collections = _copy(dict(collections))
        # Records and flags are per thread: each thread traces on its own.
        self._local = threading.local()

    # --- build time -------------------------------------------------------

    def init_state(self, params: Any) -> DistillationState:
        """A state whose teacher is ``params`` plus the build-time collections, copied."""
        return DistillationState(teacher={**_copy(self._collections), "params": _copy(params)})

    # --- step time ----------------------------------------------------------

    def forward_context(self, state: DistillationState) -> contextlib.AbstractContextManager:
        return nn.intercept_methods(self._intercept)

    def _intercept(self, next_fun, args, kwargs, context):
        local = self._local
        if getattr(local, "teacher_running", False):
            raise UsageError(
                f"{self.config_path} (knowledge_distillation): ctrl.loss ran inside "
                "ctrl.forward_context, where the other algorithms' quantizers would act on the "
                "teacher; call ctrl.loss after ctrl.apply has returned, outside the context"
            )
        module = context.module
        if (
            getattr(local, "in_forward", False)
            or context.method_name == "setup"
            or module.scope is None
            or module.scope.path != ()
        ):
            return next_fun(*args, **kwargs)
        local.in_forward = True
        try:
            out = next_fun(*args, **kwargs)
        finally:
            local.in_forward = False
        # Keys for the teacher's dropout etc. are drawn after the student's
        # forward, so the student's own draws are those it has without KD.
        rngs = {name: module.make_rng(name) for name in (getattr(module.scope, "rngs", None) or {})}
        local.record = _Record(
            trace=_current_trace(),
            method=context.method_name,
            args=tuple(args),
            kwargs=dict(kwargs),
            rngs=rngs,
            student=out,
        )
        return out

    def teacher_apply(self, state: DistillationState, *args: Any, **kwargs: Any) -> Any:
        """The teacher's forward: the original model on the teacher variables, frozen.

        Collections the forward would update (batch statistics in train
        mode) are updated in a throwaway copy: the teacher never changes.

        Args:
          state: this algorithm's state.
          *args, **kwargs: the model's inputs, as for ``model.apply``; may
            include ``method`` and ``rngs``.

        Returns:
          The model's output, under ``stop_gradient``.
        """
        variables = jax.lax.stop_gradient(state.teacher)
        self._local.teacher_running = True
        try:
            out, _ = self._model.apply(variables, *args, mutable=True, **kwargs)
        finally:
            self._local.teacher_running = False
        return jax.lax.stop_gradient(out)

    def loss(self, params: Any, state: DistillationState) -> jax.Array:
        """The distillation loss of the last ``ctrl.apply`` in this trace (see the module doc).

        ``params`` are not read: the student's output is the recorded one.

        Raises:
          UsageError: no ``ctrl.apply`` came before in the same traced
            function (or its record was used by an earlier ``ctrl.loss``).
        """
        del params
        record = getattr(self._local, "record", None)
        self._local.record = None
        if record is None or record.trace != _current_trace():
            why = (
                "none since the last ctrl.loss"
                if record is None
                else "the last one ran in another trace (another jit/grad body, or eagerly)"
            )
            raise UsageError(
                f"{self.config_path} (knowledge_distillation): ctrl.loss needs ctrl.apply on the "
                f"batch first, in the same traced function ({why}); the loss compares that "
                "forward's output with the teacher's on the same inputs"
            )
        teacher = self.teacher_apply(
            state,
            *record.args,
            method=record.method,
            rngs=record.rngs or None,
            **record.kwargs,
        )
        return distillation_loss(
            record.student,
            teacher,
            kind=self.kind,
            scale=self.scale,
            temperature=self.temperature,
        )

    # --- host side ----------------------------------------------------------

    def compression_stage(self, state: DistillationState) -> CompressionStage:
        # As NNCF's KnowledgeDistillationController: nothing to schedule.
        return CompressionStage.FULLY_COMPRESSED

    def statistics(self, state: DistillationState, params: Any) -> DistillationStatistics:
        leaves = jax.tree_util.tree_leaves(state.teacher)
        return DistillationStatistics(
            type=self.kind,
            scale=self.scale,
            temperature=self.temperature if self.kind == "softmax" else None,
            teacher_parameters=int(sum(np.size(x) for x in leaves)),
            teacher_bytes=int(sum(np.size(x) * np.dtype(x.dtype).itemsize for x in leaves)),
        )


@register_algorithm("knowledge_distillation")
def build_knowledge_distillation(section, context: BuildContext) -> KnowledgeDistillation:
    """Builds `KnowledgeDistillation` from a ``knowledge_distillation`` section.

    Raises:
      ConfigError: ``temperature`` given with ``type`` "mse" (NNCF refuses it:
        the temperature is a softmax-only setting).
      UsageError: the model is not a ``flax.linen.Module`` with
        ``{"params": ...}`` variables (the teacher's inputs are found by
        intercepting the module's top-level call).
    """
    resolved = section.resolved
    if resolved["type"] == "mse" and "temperature" in section.section:
        raise ConfigError(
            f"{section.path}.temperature",
            "the temperature is for type 'softmax' only; remove it or use type 'softmax'",
        )
    variables = context.variables
    if not isinstance(context.model, nn.Module) or not (
        isinstance(variables, Mapping) and "params" in variables
    ):
        raise UsageError(
            f"{section.path} (knowledge_distillation): needs a flax.linen.Module and its "
            f"variables {{'params': ...}}; got {type(context.model).__name__} (the batch the "
            "teacher sees is found by intercepting the module's top-level call)"
        )
    return KnowledgeDistillation(
        kind=resolved["type"],
        scale=resolved["scale"],
        temperature=resolved["temperature"],
        model=context.model,
        collections={k: v for k, v in variables.items() if k != "params"},
        config_path=section.path,
    )
