"""The compression controller: NNCF's API over pure functions and a state pytree.

`CompressionController` holds only static information: the algorithms (each
with its targeted param paths and parsed settings) and the model's apply
function. Everything that changes is in a `CompressionState`, passed
explicitly to the functional API (``ctrl.apply``, ``ctrl.loss``,
``ctrl.transform``) or kept in the controller's *handles* for the NNCF facade
(``ctrl.state`` and ``ctrl.params``; ``ctrl.sync(variables, cstate)`` after
your step keeps them current).

One class serves a single algorithm and a composite of several (NNCF's
``CompositeCompressionAlgorithmController``); ``ctrl.child_ctrls`` gives one
controller per algorithm, sharing the parent's handles.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Mapping, Sequence
from functools import cached_property
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import NamedSharding, PartitionSpec

from nncf_jax.core.algorithm import CompressionAlgorithm
from nncf_jax.core.paths import flatten_params
from nncf_jax.core.scheduler import Scheduler
from nncf_jax.core.stage import CompressionStage, combine_stages
from nncf_jax.core.state import (
    Clock,
    CompressionState,
    clock_at_iteration,
    epoch_step_clock,
    step_clock,
)
from nncf_jax.core.statistics import NNCFStatistics
from nncf_jax.errors import StateMismatchError, UsageError

__all__ = ["CompressionController"]

_STATE_KEYS = ("loss_state", "scheduler_state", "compression_stage")


class CompressionController:
    """Controls one or several compression algorithms of one model.

    Built by `nncf_jax.create_compressed_model`; not meant to be constructed
    by hand.

    Args:
      algorithms: the algorithms, in config order.
      apply_fn: the model's forward, ``apply_fn(variables, *inputs, **kwargs)``.
      has_collections: whether variables are ``{"params": ..., ...}`` (Flax
        linen) or the params tree itself.
      steps_per_epoch: optimizer steps per epoch, or None.
      param_shapes: ``{param path: shape}`` of the params the controller was
        built for; params passed later are checked against it.
      input_info: the config's ``input_info`` (example inputs for export).
    """

    def __init__(
        self,
        algorithms: Sequence[CompressionAlgorithm],
        apply_fn: Callable[..., Any],
        *,
        has_collections: bool = True,
        steps_per_epoch: int | None = None,
        param_shapes: Mapping[str, tuple[int, ...]] | None = None,
        input_info: Any = None,
        _root: CompressionController | None = None,
    ):
        # Stable sort: config order among algorithms of the same order.
        self._algorithms = tuple(sorted(algorithms, key=lambda a: a.application_order))
        self._apply_fn = apply_fn
        self._has_collections = has_collections
        self.steps_per_epoch = steps_per_epoch
        self._root = _root
        self._param_shapes = None if param_shapes is None else dict(param_shapes)
        self.input_info = input_info
        self._state: CompressionState | None = None
        self._params: Any = None
        self._names = {a.name: a.name for a in self._algorithms}
        self._builder_state_override: dict[str, Any] | None = None

    # --- identity ---------------------------------------------------------

    @property
    def name(self) -> str:
        """Registered algorithm name (``"composite"`` for several algorithms)."""
        if len(self._algorithms) == 1:
            return self._names[self._algorithms[0].name]
        return "composite"

    @property
    def algorithms(self) -> tuple[CompressionAlgorithm, ...]:
        """The algorithms this controller drives, in application order."""
        return self._algorithms

    @cached_property
    def child_ctrls(self) -> list[CompressionController]:
        """One controller per algorithm, sharing this controller's handles."""
        root = self._root or self
        return [
            CompressionController(
                (a,),
                self._apply_fn,
                has_collections=self._has_collections,
                steps_per_epoch=self.steps_per_epoch,
                param_shapes=self._param_shapes,
                input_info=self.input_info,
                _root=root,
            )
            for a in self._algorithms
        ]

    def set_builder_state_with_name(self, name: str, builder_state: dict[str, Any]) -> None:
        """NNCF hook: records the registered name and builder state of a single-algorithm controller."""
        if len(self._algorithms) != 1:
            raise UsageError("set_builder_state_with_name applies to single-algorithm controllers")
        self._names[self._algorithms[0].name] = name
        self._builder_state_override = dict(builder_state)

    # --- handles for the NNCF facade -------------------------------------

    @property
    def state(self) -> CompressionState:
        """The compression state the facade acts on (the root controller's)."""
        if self._root is not None:
            return self._root.state
        if self._state is None:
            raise UsageError("this controller has no state yet; use create_compressed_model")
        return self._state

    @state.setter
    def state(self, value: CompressionState) -> None:
        if self._root is not None:
            self._root.state = value
            return
        self._states(value)
        self._state = value

    @property
    def params(self) -> Any:
        """The params the facade reads (mask refresh, statistics, compression rate)."""
        if self._root is not None:
            return self._root.params
        return self._params

    @params.setter
    def params(self, value: Any) -> None:
        if self._root is not None:
            self._root.params = value
        else:
            self._params = value

    def sync(self, variables: Any = None, state: CompressionState | None = None) -> None:
        """Updates the facade's handles after a functional train step.

        Args:
          variables: the model variables (or params) after the step.
          state: the compression state after the step.
        """
        if variables is not None:
            self.params = self._params_of(variables)
        if state is not None:
            self.state = state

    def _params_of(self, variables: Any) -> Any:
        if self._has_collections:
            if not isinstance(variables, Mapping) or "params" not in variables:
                raise UsageError(
                    "expected model variables with a 'params' collection, as returned by "
                    "model.init(...)"
                )
            return variables["params"]
        return variables

    def _with_params(self, variables: Any, params: Any) -> Any:
        return {**variables, "params": params} if self._has_collections else params

    # --- functional API (jit-safe) ----------------------------------------

    def _states(self, state: Any) -> dict[str, Any]:
        """``state.algorithms``, checked to belong to this controller (trace time, free)."""
        if not isinstance(state, CompressionState):
            raise StateMismatchError(
                f"expected the CompressionState of this controller, got {type(state).__name__}"
            )
        missing = [a.name for a in self._algorithms if a.name not in state.algorithms]
        if missing:
            raise StateMismatchError(
                f"this compression state has no entry for {missing}; it holds "
                f"{sorted(state.algorithms)} (was it made by another controller?)"
            )
        return state.algorithms

    def check_params(self, params: Any) -> None:
        """Raises `StateMismatchError` if ``params`` are not shaped like those built for.

        Runs at trace time (shapes are static), so it costs nothing per step.
        """
        if self._param_shapes is None:
            return
        given = {n: tuple(np.shape(v)) for n, v in flatten_params(params).items()}
        if given == self._param_shapes:
            return
        removed = [n for n in self._param_shapes if n not in given]
        added = [n for n in given if n not in self._param_shapes]
        reshaped = [
            f"{n}: built for {self._param_shapes[n]}, got {given[n]}"
            for n in given
            if n in self._param_shapes and given[n] != self._param_shapes[n]
        ]
        raise StateMismatchError(
            "these params do not match the model the controller was built for; "
            f"removed: {removed or 'none'}; added: {added or 'none'}; "
            f"shape changes: {reshaped or 'none'} (rebuild with create_compressed_model)"
        )

    def init_state(self, params: Any) -> CompressionState:
        """The initial compression state for ``params`` (counters at -1).

        With params sharded by ``NamedSharding``, leaves the algorithms did
        not place (counters, levels, flags) are replicated on the params'
        mesh, so every leaf of the state lives on the same devices: a jitted
        step and an orbax restore into this state as template never mix a
        one-device array with mesh arrays.
        """
        state = CompressionState(
            clock=Clock.initial(),
            scheduler_enabled=jnp.bool_(True),
            algorithms={a.name: a.init_state(params) for a in self._algorithms},
        )
        mesh_sharding = next(
            (
                leaf.sharding
                for leaf in jax.tree_util.tree_leaves(params)
                if isinstance(getattr(leaf, "sharding", None), NamedSharding)
            ),
            None,
        )
        if mesh_sharding is None:
            return state
        replicated = NamedSharding(mesh_sharding.mesh, PartitionSpec())
        return jax.tree_util.tree_map(
            lambda leaf: (
                leaf
                if isinstance(getattr(leaf, "sharding", None), NamedSharding)
                else jax.device_put(leaf, replicated)
            ),
            state,
        )

    def compress_params(self, params: Any, state: CompressionState) -> Any:
        """The params the compressed forward uses (masks applied, ...)."""
        states = self._states(state)
        self.check_params(params)
        for a in self._algorithms:
            params = a.compress_params(params, states[a.name])
        return params

    def apply(self, variables: Any, state: CompressionState, *inputs: Any, **kwargs: Any) -> Any:
        """The compressed model's forward: ``model.apply`` on compressed params.

        Args:
          variables: the model variables (``{"params": ..., "batch_stats": ...}``).
          state: the compression state.
          *inputs, **kwargs: passed to the model (e.g. ``train=True``,
            ``mutable=["batch_stats"]``).
        """
        params = self.compress_params(self._params_of(variables), state)
        with self.forward_context(state):
            return self._apply_fn(self._with_params(variables, params), *inputs, **kwargs)

    bn_adaptation_samples: int = 2000

    def adapt_batchnorm(
        self,
        variables: Any,
        state: CompressionState,
        batches: Any,
        *,
        num_samples: int | None = None,
    ) -> dict[str, Any]:
        """NNCF's batch-norm adaptation: ``variables`` with ``batch_stats``
        re-estimated through the compressed forward (see
        `nncf_jax.batchnorm_adaptation`).

        Args:
          variables: linen variables with ``batch_stats``.
          state: the compression state.
          batches: model inputs, e.g. the ``init_data`` given to
            ``create_compressed_model``.
          num_samples: samples to use; defaults to the config's
            ``initializer.batchnorm_adaptation.num_bn_adaptation_samples``
            (2000, NNCF's default).
        """
        from nncf_jax.batchnorm_adaptation import adapt_batchnorm

        n = self.bn_adaptation_samples if num_samples is None else num_samples
        return adapt_batchnorm(self, variables, state, batches, num_samples=n)

    def trainable(self, state: CompressionState) -> dict[str, Any]:
        """The compression parameters an optimizer may train, ``{algorithm: pytree}``.

        NNCF trains quantizer ranges (and RB logits) with the model's
        optimizer. DESIGN's train step differentiates the params only, which
        keeps them fixed; to train them, differentiate this tree as well and
        put it back with `with_trainable`::

            def loss_fn(params, trainable):
                cs = ctrl.with_trainable(cstate, trainable)
                logits = ctrl.apply({**variables, "params": params}, cs, x)
                return xent(logits, y) + ctrl.loss(params, cs)

            trainable = ctrl.trainable(cstate)
            grads, t_grads = jax.grad(loss_fn, argnums=(0, 1))(params, trainable)
            ...  # optax on both trees (one optimizer over {"params", "compression"} works)
            cstate = ctrl.with_trainable(cstate, new_trainable)

        Algorithms with nothing to train are left out; the tree holds float
        arrays only (jit-safe, no copies).
        """
        states = self._states(state)
        out = {}
        for a in self._algorithms:
            part = a.trainable_state(states[a.name])
            if part is not None:
                out[a.name] = part
        return out

    def with_trainable(
        self, state: CompressionState, trainable: Mapping[str, Any]
    ) -> CompressionState:
        """``state`` with the trees of `trainable` put back (jit-safe).

        Raises:
          StateMismatchError: ``trainable`` names other algorithms, or its
            structure differs from ``trainable(state)``'s.
        """
        states = dict(self._states(state))
        expected = self.trainable(state)
        if not isinstance(trainable, Mapping) or set(trainable) != set(expected):
            got = sorted(trainable) if isinstance(trainable, Mapping) else type(trainable).__name__
            raise StateMismatchError(
                f"trainable compression parameters for {got}; this controller trains "
                f"{sorted(expected)} (use ctrl.trainable(cstate) to make the tree)"
            )
        for a in self._algorithms:
            if a.name not in trainable:
                continue
            want = jax.tree_util.tree_structure(expected[a.name])
            got_structure = jax.tree_util.tree_structure(trainable[a.name])
            if want != got_structure:
                raise StateMismatchError(
                    f"trainable[{a.name!r}] is shaped {got_structure}, expected {want}"
                )
            states[a.name] = a.with_trainable_state(states[a.name], trainable[a.name])
        return state.replace(algorithms=states)

    def pack_params(self, params: Any, state: CompressionState) -> tuple[Any, Callable[[Any], Any]]:
        """``(stored, unpack)`` of stripped params for an artefact (see
        `CompressionAlgorithm.pack_params`): each algorithm packs in turn and
        ``unpack`` undoes them in reverse order, giving the stripped params
        back bit for bit."""
        states = self._states(state)
        unpackers = []
        for a in self._algorithms:
            params, unpack = a.pack_params(params, states[a.name])
            unpackers.append(unpack)

        def unpack_all(stored: Any) -> Any:
            for unpack in reversed(unpackers):
                stored = unpack(stored)
            return stored

        return params, unpack_all

    def forward_context(self, state: CompressionState) -> contextlib.ExitStack:
        """The context every compressed forward runs in (activation quantizers, ...).

        ``ctrl.apply`` enters it itself; enter it around ``model.apply`` to
        run a forward of your own (e.g. on stripped variables) with the
        activation quantizers in place.
        """
        states = self._states(state)
        stack = contextlib.ExitStack()
        for a in self._algorithms:
            stack.enter_context(a.forward_context(states[a.name]))
        return stack

    def loss(self, params: Any = None, state: CompressionState | None = None) -> jax.Array:
        """Compression loss (float32 scalar): the sum of the algorithms' losses.

        With no arguments it uses the facade handles, as NNCF's ``ctrl.loss()``.
        """
        total = jnp.float32(0.0)
        for part in self.losses(params, state).values():
            total = total + part
        return total

    def losses(
        self, params: Any = None, state: CompressionState | None = None
    ) -> dict[str, jax.Array]:
        """Each algorithm's compression loss, ``{name: float32 scalar}``; `loss` is their sum.

        Jit-safe; return it from a train step as aux to log the parts.
        """
        params = self.params if params is None else params
        state = self.state if state is None else state
        states = self._states(state)
        return {self._names[a.name]: a.loss(params, states[a.name]) for a in self._algorithms}

    def filter_updates(self, updates: Any, state: CompressionState) -> Any:
        """Zeroes the optimizer updates of compressed-away weights."""
        states = self._states(state)
        self.check_params(updates)
        for a in self._algorithms:
            updates = a.filter_updates(updates, states[a.name])
        return updates

    def tick(
        self, state: CompressionState, params_fn: Callable[[], Any], steps_per_epoch: int
    ) -> CompressionState:
        """Advances ``state`` to the next iteration (see `compression_transform`)."""
        # The initial state (counters at -1) stands for iteration 0, whose
        # epoch 0 the facade would open with epoch_step() at sparsity_init.
        iteration = jnp.maximum(state.clock.step, 0) + 1
        previous_epoch = jnp.where(state.clock.step < 0, 0, state.clock.epoch)
        clock = clock_at_iteration(iteration, steps_per_epoch)
        enabled = state.scheduler_enabled
        new_epoch = jnp.logical_and(clock.epoch != previous_epoch, enabled)
        return self._advance(state, clock, params_fn, new_epoch=new_epoch, new_step=enabled)

    def _advance(self, state, clock, params_fn, *, new_epoch, new_step) -> CompressionState:
        algorithms = dict(self._states(state))
        for a in self._algorithms:
            algorithms[a.name] = a.advance(
                algorithms[a.name], params_fn, clock, new_epoch=new_epoch, new_step=new_step
            )
        return state.replace(clock=clock, algorithms=algorithms)

    @cached_property
    def transform(self) -> optax.GradientTransformationExtraArgs:
        """The scheduler as an optax transformation; see `compression_transform`."""
        from nncf_jax.core.transform import compression_transform

        return compression_transform(self)

    def strip(self, variables: Any = None, state: CompressionState | None = None) -> Any:
        """Plain variables for the original model, compression baked in.

        Masks are multiplied into the weights and weights are fake-quantized
        in place (their values sit on the integer grid); the result runs with
        the unmodified model and needs no nncf_jax. Activation quantizers are
        not weights: they stay in ``ctrl.apply``, in `forward_context` and in
        exported artefacts.
        """
        variables = self._with_params({}, self.params) if variables is None else variables
        state = self.state if state is None else state
        params = self._params_of(variables)
        states = self._states(state)
        for a in self._algorithms:
            params = a.strip_params(params, states[a.name])
        return self._with_params(variables, params)

    # --- NNCF facade ------------------------------------------------------

    @cached_property
    def scheduler(self) -> Scheduler:
        """NNCF's scheduler object: ``step()``, ``epoch_step()``, counters, state."""
        return Scheduler(self)

    @cached_property
    def _jitted_advance(self) -> Callable[..., CompressionState]:
        def advance(state, clock, params, new_epoch, new_step):
            enabled = state.scheduler_enabled
            return self._advance(
                state,
                clock,
                lambda: params,
                new_epoch=jnp.logical_and(new_epoch, enabled),
                new_step=jnp.logical_and(new_step, enabled),
            )

        return jax.jit(advance)

    def _facade_tick(self, *, next_step: int | None, event: str) -> None:
        state = self.state
        if event == "epoch":
            clock = epoch_step_clock(state.clock, next_step)
        else:
            clock = step_clock(state.clock, next_step)
        self._require_params("scheduler." + ("epoch_step" if event == "epoch" else "step"))
        self.state = self._jitted_advance(
            state, clock, self.params, jnp.bool_(event == "epoch"), jnp.bool_(event == "step")
        )

    def _require_params(self, what: str) -> None:
        if self.params is None:
            raise UsageError(
                f"{what} needs the current params: call ctrl.sync(variables, cstate) first"
            )

    def _scheduled_level(self, kind: str) -> float:
        for a in self._algorithms:
            if kind in a.name and hasattr(self.state.algorithms[a.name], "level"):
                return float(self.state.algorithms[a.name].level)
        raise AttributeError(f"this controller has no {kind} algorithm with a scheduled level")

    def disable_scheduler(self) -> None:
        """Stops the schedule: levels and masks stay as they are until a rate is set by hand."""
        self.state = self.state.replace(scheduler_enabled=jnp.bool_(False))

    @property
    def compression_rate(self) -> float | None:
        """Current compression rate in [0, 1].

        Single algorithm: the algorithm's rate (sparsity: the fraction of
        zeros over all params), None where it has no meaning. Composite: the
        mean over the children that have a rate (NNCF's torch composite
        always returned 0, a bug).
        """
        rates = [
            a.compression_rate(self.state.algorithms[a.name], self.params) for a in self._algorithms
        ]
        rates = [r for r in rates if r is not None]
        if not rates:
            return None
        return sum(rates) / len(rates)

    @compression_rate.setter
    def compression_rate(self, rate: float) -> None:
        self._require_params("setting compression_rate")
        state = self.state
        algorithms = dict(state.algorithms)
        settable = [
            a
            for a in self._algorithms
            if type(a).set_compression_rate is not CompressionAlgorithm.set_compression_rate
        ]
        if not settable:
            raise UsageError(f"{self.name}: no algorithm here has a compression rate to set")
        for a in settable:
            algorithms[a.name] = a.set_compression_rate(algorithms[a.name], self.params, rate)
        self.state = state.replace(algorithms=algorithms)

    @property
    def maximal_compression_rate(self) -> float:
        """Highest supported rate (composite: the minimum of the children)."""
        return min((a.maximal_compression_rate for a in self._algorithms), default=1.0)

    def compression_stage(self) -> CompressionStage:
        """NNCF's stage; a composite combines its children's stages."""
        return combine_stages(
            a.compression_stage(self.state.algorithms[a.name]) for a in self._algorithms
        )

    def statistics(self, quickly_collected_only: bool = False) -> NNCFStatistics:
        """Per-algorithm statistics of the facade handles (``.to_str()`` renders tables)."""
        del quickly_collected_only
        self._require_params("statistics()")
        losses: dict[str, float | None] = {}
        for a in self._algorithms:
            try:
                value = a.loss(self.params, self.state.algorithms[a.name])
                losses[self._names[a.name]] = float(value)
            except UsageError:
                # A loss that needs the batch's forward (distillation).
                losses[self._names[a.name]] = None
        return NNCFStatistics(
            {
                self._names[a.name]: a.statistics(self.state.algorithms[a.name], self.params)
                for a in self._algorithms
            },
            losses=losses,
        )

    def prepare_for_export(self) -> Any:
        """Returns the stripped variables of the facade handles."""
        return self.strip()

    def export_model(
        self,
        save_path: str,
        save_format: str | None = None,
        input_names: Sequence[str] | None = None,
        output_names: Sequence[str] | None = None,
        model_args: tuple | None = None,
        **options: Any,
    ) -> Any:
        """Strips the model (facade handles) and writes a deployable artefact.

        Args:
          save_path: the artefact's path (StableHLO: a file; SavedModel and
            OpenVINO: a folder / an ``.xml`` path); a JSON sidecar goes next to it.
          save_format: "stablehlo" (default), "saved_model" or "openvino".
          input_names, output_names: names of the model's inputs and outputs.
          model_args: NNCF's tuple of extra positional arguments ending with a
            dict of keyword arguments, ``(a, b, {"x": None, "y": y})``; the
            inputs of the config's ``input_info`` come first.
          **options: format options, e.g. ``vjp_order=1``, ``batch_polymorphic=False``;
            ``shrink=True`` (with ``filter_pruning``) exports the physically
            smaller model of `nncf_jax.pruning.shrink`: pruned channels
            removed, fewer FLOPs, the same outputs as the masked model.

        Returns:
          An `nncf_jax.export.ExportedArtefact` (paths and sidecar content).

        Raises:
          ExportError: unknown format, missing extra, bad arguments or an
            unwritable path; no partial files are left.
        """
        from nncf_jax.export import example_inputs, export_forward

        self._require_params("export_model")
        stripped = self.strip()
        state = self.state
        stored, unpack = self.pack_params(self._params_of(stripped), state)

        def forward(*args, **kwargs):
            # Quantized weights are stored as integer codes and unpacked in
            # the graph; activation quantizers stay in it (NNCF keeps its
            # FakeQuantize ops).
            variables = self._with_params(stripped, unpack(stored))
            with self.forward_context(state):
                return self._apply_fn(variables, *args, **kwargs)

        if options.pop("shrink", False):
            forward = self._shrunk_forward(state)

        metadata = {
            "algorithms": [self._names[a.name] for a in self._algorithms],
            "compression_stage": int(self.compression_stage()),
            "compression_rate": self.compression_rate,
            "ctrl_state": self.get_state(),
        }
        return export_forward(
            forward,
            example_inputs(self.input_info, model_args),
            save_path,
            save_format=save_format,
            input_names=input_names,
            output_names=output_names,
            metadata=metadata,
            **options,
        )

    def _shrunk_forward(self, state: CompressionState) -> Callable[..., Any]:
        from nncf_jax.errors import ExportError

        names = [a.name for a in self._algorithms]
        if "filter_pruning" not in names:
            raise ExportError(
                f"shrink=True removes pruned channels and needs filter_pruning; this "
                f"controller has {names}"
            )
        if "quantization" in names:
            raise ExportError(
                "shrink=True cannot keep activation quantizers (the shrunk forward replays "
                "the float model's graph); export without shrink"
            )
        from nncf_jax.pruning import shrink

        small, forward_small = shrink(self, self._with_params({}, self.params), state)

        def forward(x):
            return forward_small(small, x)

        return forward

    # --- NNCF state dicts ---------------------------------------------------

    def get_state(self) -> dict[str, dict[str, Any]]:
        """``{name: {"loss_state", "scheduler_state", "compression_stage"}}`` (JSON-serialisable)."""
        state = self.state
        clock = jax.device_get(state.clock)
        enabled = bool(state.scheduler_enabled)
        out = {}
        for a in self._algorithms:
            algo_state = state.algorithms[a.name]
            scheduler_state: dict[str, Any] = {}
            if enabled:
                scheduler_state = {
                    "current_step": int(clock.step),
                    "current_epoch": int(clock.epoch),
                    "steps_in_current_epoch": int(clock.steps_in_epoch),
                    **a.scheduler_state(algo_state),
                }
            out[self._names[a.name]] = {
                "loss_state": None,
                "scheduler_state": scheduler_state,
                "compression_stage": int(a.compression_stage(algo_state)),
            }
        return out

    def load_state(self, state: Mapping[str, Any]) -> None:
        """Inverse of `get_state`; builds the whole new state before replacing the handle.

        Raises:
          StateMismatchError: unknown algorithm names or malformed entries.
        """
        self._require_params("load_state")
        by_name = {self._names[a.name]: a for a in self._algorithms}
        if not isinstance(state, Mapping):
            raise StateMismatchError(f"ctrl_state must be a dict, got {type(state).__name__}")
        unknown = sorted(set(state) - set(by_name))
        if unknown:
            raise StateMismatchError(
                f"ctrl_state has algorithms {unknown} that this controller does not have "
                f"(it has {sorted(by_name)})"
            )
        current = self.state
        schedulers = {}
        for name in by_name:
            entry = state.get(name, {})
            if not isinstance(entry, Mapping) or not isinstance(
                entry.get("scheduler_state", {}), Mapping
            ):
                raise StateMismatchError(f"ctrl_state.{name}: expected a dict with {_STATE_KEYS}")
            schedulers[name] = dict(entry.get("scheduler_state", {}))
        with_counters = [s for s in schedulers.values() if "current_step" in s]
        clock = current.clock
        if with_counters:
            saved = with_counters[0]
            clock = Clock(
                step=jnp.int32(saved["current_step"]),
                epoch=jnp.int32(saved["current_epoch"]),
                steps_in_epoch=jnp.int32(saved.get("steps_in_current_epoch", 0)),
            )
        enabled = bool(with_counters) or not any(n in state for n in by_name)
        algorithms = dict(current.algorithms)
        for name, a in by_name.items():
            if name in state:
                algorithms[a.name] = a.load_scheduler_state(
                    algorithms[a.name], self.params, clock, schedulers[name]
                )
        self.state = current.replace(
            clock=clock, scheduler_enabled=jnp.bool_(enabled), algorithms=algorithms
        )

    def _load_counters(self, scheduler_state: Mapping[str, Any]) -> None:
        self.load_state(
            {
                self._names[a.name]: {"scheduler_state": dict(scheduler_state)}
                for a in self._algorithms
            }
        )

    def get_compression_state(self) -> dict[str, Any]:
        """``{"builder_state": {name: ...}, "ctrl_state": get_state()}``, JSON-serialisable.

        Pass it to ``create_compressed_model(..., compression_state=...)`` to
        resume. Weights and masks are not in it: they travel in the orbax
        checkpoint (`nncf_jax.checkpoint`).
        """
        if self._builder_state_override is not None:
            builder = {self.name: self._builder_state_override}
        else:
            builder = {self._names[a.name]: a.builder_state() for a in self._algorithms}
        return {"builder_state": builder, "ctrl_state": self.get_state()}
