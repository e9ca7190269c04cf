"""Orbax checkpoints that carry the compression state beside the weights.

One checkpoint step holds, written atomically by orbax (a temporary folder
``<step>.orbax-checkpoint-tmp`` renamed to ``<step>`` when complete):

- ``train``: a pytree ``{"variables", "opt_state", "cstate"}`` (`StandardSave`),
  so masks, levels and counters restore bit for bit with their dtypes and,
  with sharded targets, their shardings;
- ``compression_state``: ``ctrl.get_compression_state()`` as JSON, NNCF's
  portable resume dict;
- ``integrity``: JSON, a 64-bit checksum of every array of ``train`` taken
  at save time, so damaged array bytes are caught on restore instead of
  being trained on.

Nothing is pickled: arrays go through TensorStore, the rest is JSON.

Example:
  >>> with nj.checkpoint.CheckpointManager("runs/ckpt") as mngr:  # doctest: +SKIP
  ...     mngr.save(step, ctrl=ctrl, variables=variables, opt_state=opt_state, cstate=cstate)
  ...     restored = mngr.restore(variables=variables, opt_state=opt_state, cstate=cstate)
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp

from nncf_jax.errors import CheckpointError, StateMismatchError

__all__ = ["CheckpointManager", "Restored"]

_TRAIN, _JSON, _INTEGRITY = "train", "compression_state", "integrity"
_INTEGRITY_FORMAT = "nncf_jax.checkpoint.integrity/1"
_MAX_LISTED = 20  # mismatching paths listed in one message


@dataclass(frozen=True)
class Restored:
    """What `CheckpointManager.restore` returns.

    Attributes:
      step: the restored step.
      variables: model variables (or params), typed like the template.
      opt_state: optimizer state (None if none was given as template).
      cstate: the `CompressionState`.
      compression_state: the JSON ``get_compression_state()`` dict.
    """

    step: int
    variables: Any
    opt_state: Any
    cstate: Any
    compression_state: dict[str, Any]


def _abstract(tree: Any) -> Any:
    return jax.tree.map(ocp.utils.to_shape_dtype_struct, tree)


def _key_name(key: Any) -> str:
    for attr in ("key", "name", "idx"):
        if hasattr(key, attr):
            return str(getattr(key, attr))
    return str(key)


def _flat(tree: Any) -> dict[str, Any]:
    """``{"variables/params/Dense_0/kernel": leaf}``; dict keys, NamedTuple and
    dataclass fields and sequence indices all become path segments, so a
    template and orbax's metadata (which stores NamedTuples as dicts) agree."""
    leaves = jax.tree_util.tree_flatten_with_path(tree)[0]
    return {"/".join(_key_name(k) for k in path): leaf for path, leaf in leaves}


def _describe(shape: Any, dtype: Any) -> str:
    return f"{tuple(shape)} {np.dtype(dtype).name}" if dtype is not None else str(tuple(shape))


def _tree_mismatches(saved: Mapping[str, Any], expected: Mapping[str, Any]) -> list[str]:
    """Lines naming every path where the checkpoint's tree and the template differ."""
    lines = []
    for path in sorted(set(saved) | set(expected)):
        if path not in expected:
            lines.append(f"{path}: in the checkpoint, not in this model/optimizer/state")
            continue
        if path not in saved:
            lines.append(f"{path}: expected by this model/optimizer/state, not in the checkpoint")
            continue
        s, e = saved[path], expected[path]
        s_shape, e_shape = getattr(s, "shape", None), np.shape(e)
        s_dtype, e_dtype = getattr(s, "dtype", None), getattr(e, "dtype", None)
        if s_shape is not None and tuple(s_shape) != tuple(e_shape):
            lines.append(f"{path}: saved {tuple(s_shape)}, expected {tuple(e_shape)}")
        elif s_dtype is not None and e_dtype is not None and np.dtype(s_dtype) != np.dtype(e_dtype):
            lines.append(
                f"{path}: saved dtype {np.dtype(s_dtype).name}, expected {np.dtype(e_dtype).name}"
            )
    return lines


def _reason(e: BaseException) -> str:
    """``"Type: first line"`` of an orbax / TensorStore error, capped (the whole
    error stays chained as ``__cause__``)."""
    text = str(e).strip().splitlines()
    first = text[0] if text else ""
    return f"{type(e).__name__}: {first[:300]}{'...' if len(first) > 300 else ''}"


def _listed(lines: list[str]) -> str:
    shown = lines[:_MAX_LISTED]
    more = f"\n  ... and {len(lines) - len(shown)} more" if len(lines) > len(shown) else ""
    return "".join(f"\n  {line}" for line in shown) + more


_SEEDS = (0x9E3779B9, 0x85EBCA6B)  # one per 32-bit lane of the checksum


def _mix(x: jax.Array) -> jax.Array:
    """A bijection of uint32 that spreads every input bit over the word (lowbias32)."""
    x = (x ^ (x >> 16)) * jnp.uint32(0x7FEB352D)
    x = (x ^ (x >> 15)) * jnp.uint32(0x846CA68B)
    return x ^ (x >> 16)


def _words(x: jax.Array) -> jax.Array | None:
    """The array's bits as a flat uint32 vector (None for dtypes without a byte layout)."""
    if jnp.issubdtype(x.dtype, jnp.complexfloating):
        x = jnp.stack([x.real, x.imag], axis=-1)
    if x.dtype == jnp.bool_:
        return x.reshape(-1).astype(jnp.uint32)
    unsigned = {1: jnp.uint8, 2: jnp.uint16, 4: jnp.uint32, 8: jnp.uint32}.get(x.dtype.itemsize)
    if unsigned is None:
        return None
    try:
        bits = jax.lax.bitcast_convert_type(x, unsigned)
    except (TypeError, ValueError):  # sub-byte types (int4, ...)
        return None
    return bits.reshape(-1).astype(jnp.uint32)


def _leaf_checksum(x: Any) -> jax.Array | None:
    r"""Two position-weighted sums of the array's mixed 32-bit words, modulo :math:`2^{32}`.

    :math:`s_j = \sum_i w_{ji}\, \mathrm{mix}(b_i)` with odd weights
    :math:`w_{ji} = \mathrm{mix}(i + c_j) | 1`: ``mix`` is a bijection and the
    weights are odd, so any single changed word changes both sums. An exact
    integer sum, hence the same for any sharding and reduction order.
    Returns uint32[2], or None for a dtype without a byte layout.
    """
    words = _words(jnp.asarray(x))
    if words is None:
        return None
    index = jax.lax.iota(jnp.uint32, words.size)
    mixed = _mix(words)
    return jnp.stack(
        [jnp.sum(mixed * (_mix(index + jnp.uint32(c)) | 1), dtype=jnp.uint32) for c in _SEEDS]
    )


@jax.jit
def _checksums_device(leaves: dict[str, Any]) -> dict[str, Any]:
    return {path: _leaf_checksum(leaf) for path, leaf in leaves.items()}


def _has_bytes(leaf: Any) -> bool:
    if isinstance(leaf, bool | int | float | complex):
        return True
    dtype = getattr(leaf, "dtype", None)
    if dtype is None or not hasattr(leaf, "shape"):
        return False
    if jax.dtypes.issubdtype(dtype, jax.dtypes.prng_key):
        return False
    return jnp.issubdtype(dtype, jnp.number) or jnp.issubdtype(dtype, jnp.bool_)


_SAVABLE_LEAVES = (jax.Array, np.ndarray, np.generic, bool, int, float, str)


def _unsavable_leaves(tree: Any) -> list[str]:
    """``"path (type)"`` for every leaf orbax's `StandardSave` cannot write.

    Checked before orbax starts: orbax creates the step's temporary folders
    in a background thread and only then fails on such a leaf, which races
    with the next save of the same step (it removes that folder while the
    thread still writes into it).
    """
    return [
        f"{path} ({type(leaf).__name__})"
        for path, leaf in _flat(tree).items()
        if not isinstance(leaf, _SAVABLE_LEAVES)
    ]


def _checksums(tree: Any) -> dict[str, str | None]:
    """``{path: "16 hex digits" or None}`` for every leaf of ``tree`` (None: not
    an array of numbers, e.g. a PRNG key or a string)."""
    leaves = _flat(tree)
    # One jitted call per set of devices: a tree may mix arrays of a mesh
    # with arrays committed to one device, which one computation cannot take.
    groups: dict[Any, dict[str, Any]] = {}
    for path, leaf in leaves.items():
        if _has_bytes(leaf):
            sharding = getattr(leaf, "sharding", None)
            devices = frozenset(sharding.device_set) if sharding is not None else None
            groups.setdefault(devices, {})[path] = leaf
    sums: dict[str, Any] = {}
    for group in groups.values():
        sums.update(jax.device_get(_checksums_device(group)))
    return {
        path: None if sums.get(path) is None else "".join(f"{int(v):08x}" for v in sums[path])
        for path in leaves
    }


class CheckpointManager:
    """An ``orbax.checkpoint.CheckpointManager`` for compressed training.

    Guarantees (``tests/test_checkpoint_faults.py`` proves each):

    - A step becomes visible only once complete: orbax writes into
      ``<step>.orbax-checkpoint-tmp`` and renames it when everything is on
      disk, so a job killed mid-save leaves that folder behind and
      `all_steps` / `restore` ignore it (saving the same step again replaces
      it). A save that fails raises `CheckpointError` — from `save`, or for a
      failure in orbax's background thread, from the next call that waits
      (`wait_until_finished`, `save`, `restore`, `close`).
    - `restore` compares the checkpoint's tree (orbax's metadata) with the
      templates before reading any array and raises `CheckpointError`
      naming every path missing on one side or with another shape or dtype.
      Given ``ctrl``, it also refuses a ``compression_state`` saved for
      another algorithm set or other targets, with the reason.
    - Damaged files (truncated, overwritten, deleted; invalid JSON) raise
      `CheckpointError` naming the step and its folder; overwritten array
      bytes that TensorStore would read back silently are caught by the
      checksums written at save time. Restoring never writes, so earlier
      steps stay as they were.
    - **A damaged latest step is not skipped.** ``restore()`` without a step
      raises, naming the damaged step and listing the earlier complete ones;
      pass ``step=`` to take one of them deliberately (or delete the damaged
      folder). Silently going back would retrain steps, and hide disk faults.
    - Nothing in the load path unpickles.

    Args:
      directory: where checkpoints go (created if missing).
      max_to_keep: how many recent checkpoints to keep (None: all).
      save_interval_steps: save only every this many steps (unless forced).

    Raises:
      CheckpointError: the directory cannot be opened.
    """

    def __init__(
        self,
        directory: str | os.PathLike,
        *,
        max_to_keep: int | None = 3,
        save_interval_steps: int = 1,
    ):
        self.directory = os.path.abspath(os.fspath(directory))
        options = ocp.CheckpointManagerOptions(
            max_to_keep=max_to_keep, save_interval_steps=save_interval_steps, create=True
        )
        handlers = {
            _TRAIN: ocp.StandardCheckpointHandler(),
            _JSON: ocp.JsonCheckpointHandler(),
            _INTEGRITY: ocp.JsonCheckpointHandler(),
        }
        self._in_flight: int | None = None  # step of the save orbax may still be writing
        try:
            self._manager = ocp.CheckpointManager(
                self.directory, options=options, item_handlers=handlers
            )
        except Exception as e:
            raise CheckpointError(f"cannot open checkpoint directory {self.directory}: {e}") from e

    def save(
        self,
        step: int,
        *,
        ctrl: Any,
        variables: Any,
        cstate: Any,
        opt_state: Any = None,
        force: bool = False,
    ) -> bool:
        """Saves one step asynchronously; returns whether a save was started.

        ``ctrl``'s facade handles are synced to ``variables`` / ``cstate``
        first, so the JSON part describes the same state as the pytree. The
        checksums are computed on device (one jitted call over the tree, compiled
        once per tree structure) and only they are copied to the host here.

        Raises:
          CheckpointError: the save (or an earlier asynchronous one) failed;
            no step becomes visible for a failed save.
        """
        self.wait_until_finished()  # orbax would wait too; this names a failed earlier step
        ctrl.sync(variables, cstate)
        if not force and not self._manager.should_save(int(step)):
            return False  # off the save interval, or not after the latest step
        compression_state = ctrl.get_compression_state()
        tree = {"variables": variables, "opt_state": opt_state, "cstate": cstate}
        unsavable = _unsavable_leaves(tree)
        if unsavable:
            listed = ", ".join(unsavable[:_MAX_LISTED])
            more = (
                f" and {len(unsavable) - _MAX_LISTED} more" if len(unsavable) > _MAX_LISTED else ""
            )
            raise CheckpointError(
                f"saving step {step} to {self.directory} failed: leaves that are not arrays "
                f"or scalars cannot be checkpointed: {listed}{more} (nothing was written)"
            )
        try:
            integrity = {"format": _INTEGRITY_FORMAT, "checksums": _checksums(tree)}
            args = ocp.args.Composite(
                **{
                    _TRAIN: ocp.args.StandardSave(tree),
                    _JSON: ocp.args.JsonSave(compression_state),
                    _INTEGRITY: ocp.args.JsonSave(integrity),
                }
            )
            started = bool(self._manager.save(int(step), args=args, force=force))
        except Exception as e:
            raise CheckpointError(
                f"saving step {step} to {self.directory} failed: {_reason(e)}"
            ) from e
        if started:
            self._in_flight = int(step)
        return started

    def restore(
        self,
        step: int | None = None,
        *,
        variables: Any,
        cstate: Any,
        opt_state: Any = None,
        ctrl: Any = None,
    ) -> Restored:
        """Restores a step (the latest complete one by default) into the templates.

        Args:
          step: which step; None for the latest complete one (if that one is
            damaged this raises rather than falling back, see the class doc).
          variables, cstate, opt_state: templates (e.g. freshly initialised
            values, or ``jax.ShapeDtypeStruct`` trees); only their structure,
            shapes, dtypes and shardings are used, and they must match the
            checkpoint exactly (no silent casts).
          ctrl: if given, the saved ``compression_state`` must fit its
            algorithms and targets, and its facade handles are synced to the
            restored values.

        Returns:
          `Restored`.

        Raises:
          CheckpointError: nothing to restore; the step does not exist; the
            checkpoint does not fit the templates or ``ctrl`` (the message
            names every mismatching path); or its files are damaged (the
            message names the step folder and the other complete steps).
        """
        self.wait_until_finished()
        steps = self.all_steps()
        if step is None:
            if not steps:
                raise CheckpointError(f"no complete checkpoint in {self.directory}")
            step = steps[-1]
        step = int(step)
        if step not in steps:
            raise CheckpointError(
                f"no checkpoint for step {step} in {self.directory}; available: {steps}"
            )
        where = os.path.join(self.directory, str(step))
        others = [s for s in steps if s != step]

        def damaged(reason: str) -> CheckpointError:
            hint = (
                f"\n  other complete steps here: {others}; restore(step={others[-1]}, ...) "
                "takes the newest of them (nothing was changed on disk)"
                if others
                else "\n  there is no other complete step here"
            )
            return CheckpointError(
                f"checkpoint step {step} at {where} is damaged or incomplete: {reason}{hint}"
            )

        def misfit(reason: str) -> CheckpointError:
            return CheckpointError(
                f"checkpoint step {step} at {where} cannot be restored into this "
                f"model/optimizer/compression state: {reason}"
            )

        target = {"variables": variables, "opt_state": opt_state, "cstate": cstate}
        try:
            metadata = self._manager.item_metadata(step)
            items = set(metadata.keys())
            tree_metadata = metadata[_TRAIN] if _TRAIN in items else None
            saved_tree = getattr(tree_metadata, "tree", None)
        except Exception as e:
            raise damaged(f"its metadata cannot be read ({_reason(e)})") from e
        if _TRAIN not in items or _JSON not in items or saved_tree is None:
            missing = sorted({_TRAIN, _JSON} - items) or [f"{_TRAIN}/_METADATA"]
            raise damaged(f"missing {missing}")
        lines = _tree_mismatches(_flat(saved_tree), _flat(target))
        if lines:
            raise misfit(f"{len(lines)} mismatching path(s):{_listed(lines)}")

        has_integrity = _INTEGRITY in items
        json_args = {_JSON: ocp.args.JsonRestore()}
        if has_integrity:
            json_args[_INTEGRITY] = ocp.args.JsonRestore()
        try:
            json_items = self._manager.restore(step, args=ocp.args.Composite(**json_args))
        except Exception as e:
            raise damaged(f"its JSON cannot be read ({_reason(e)})") from e
        compression_state = json_items[_JSON]
        if not (
            isinstance(compression_state, Mapping)
            and isinstance(compression_state.get("builder_state"), Mapping)
            and isinstance(compression_state.get("ctrl_state"), Mapping)
        ):
            raise damaged(
                f"{_JSON} is not a get_compression_state() dict with 'builder_state' and "
                f"'ctrl_state' (got {str(compression_state)[:200]!r})"
            )
        checksums = None
        if has_integrity:
            record = json_items[_INTEGRITY]
            if not (
                isinstance(record, Mapping)
                and record.get("format") == _INTEGRITY_FORMAT
                and isinstance(record.get("checksums"), Mapping)
            ):
                raise damaged(f"{_INTEGRITY} is not a {_INTEGRITY_FORMAT} record")
            checksums = record["checksums"]
        if ctrl is not None:
            self._check_builder_state(ctrl, compression_state["builder_state"], misfit)

        args = ocp.args.Composite(**{_TRAIN: ocp.args.StandardRestore(_abstract(target))})
        try:
            train = self._manager.restore(step, args=args)[_TRAIN]
        except Exception as e:
            raise damaged(f"its arrays cannot be read ({_reason(e)})") from e
        if checksums is not None:
            bad = [
                f"{path}: the bytes read back do not match the checksum written at save time"
                for path, value in _checksums(train).items()
                if checksums.get(path) != value
            ]
            if bad:
                raise damaged(f"{len(bad)} array(s) corrupted:{_listed(bad)}")
        if ctrl is not None:
            ctrl.sync(train["variables"], train["cstate"])
        return Restored(
            step=step,
            variables=train["variables"],
            opt_state=train["opt_state"],
            cstate=train["cstate"],
            compression_state=dict(compression_state),
        )

    def read_compression_state(self, step: int | None = None) -> dict[str, Any]:
        """The JSON ``compression_state`` of a step (the latest complete one by default).

        Reads no array: pass it to ``create_compressed_model(...,
        compression_state=...)`` to rebuild the controller a checkpoint was
        saved with (quantizer setup and initial ranges included, so no
        calibration data is needed), then `restore` the arrays.

        Raises:
          CheckpointError: no such step, or its JSON is missing or unreadable.
        """
        self.wait_until_finished()
        steps = self.all_steps()
        if step is None and steps:
            step = steps[-1]
        if step is None or int(step) not in steps:
            raise CheckpointError(
                f"no checkpoint for step {step} in {self.directory}; available: {steps}"
            )
        try:
            item = self._manager.restore(
                int(step), args=ocp.args.Composite(**{_JSON: ocp.args.JsonRestore()})
            )[_JSON]
        except Exception as e:
            raise CheckpointError(
                f"checkpoint step {step} in {self.directory}: its {_JSON} cannot be read "
                f"({_reason(e)})"
            ) from e
        if not isinstance(item, Mapping) or not {"builder_state", "ctrl_state"} <= set(item):
            raise CheckpointError(
                f"checkpoint step {step} in {self.directory}: {_JSON} is not a "
                "get_compression_state() dict"
            )
        return dict(item)

    @staticmethod
    def _check_builder_state(ctrl: Any, saved: Mapping[str, Any], misfit: Any) -> None:
        current = ctrl.get_compression_state()["builder_state"]
        if set(saved) != set(current):
            raise misfit(
                f"its compression_state was saved for algorithms {sorted(saved)}, "
                f"this config has {sorted(current)}"
            )
        for algorithm in ctrl.algorithms:
            if algorithm.name not in saved:
                continue
            try:
                algorithm.check_builder_state(saved[algorithm.name])
            except StateMismatchError as e:
                raise misfit(str(e)) from e

    def latest_step(self) -> int | None:
        """Latest complete step on disk, or None."""
        steps = self.all_steps()
        return steps[-1] if steps else None

    def all_steps(self) -> list[int]:
        """All complete steps on disk, ascending (temporary folders of unfinished saves excluded)."""
        # Read from disk, not orbax's cache: that cache also lists a step whose
        # asynchronous save is still running.
        return sorted(ocp.path.step.checkpoint_steps(self.directory))

    def wait_until_finished(self) -> None:
        """Blocks until asynchronous saves are on disk.

        Raises:
          CheckpointError: an asynchronous save failed (its step is not visible).
        """
        step, self._in_flight = self._in_flight, None
        try:
            self._manager.wait_until_finished()
            self._manager.check_for_errors()
        except Exception as e:
            which = f"step {step}" if step is not None else "a step"
            raise CheckpointError(
                f"saving {which} to {self.directory} failed in orbax's background thread "
                f"(the step is not visible): {_reason(e)}"
            ) from e

    def close(self) -> None:
        """Waits for pending saves and releases orbax's resources.

        Raises:
          CheckpointError: a pending save failed (orbax's resources are released anyway).
        """
        try:
            self.wait_until_finished()
        finally:
            self._manager.close()

    def __enter__(self) -> CheckpointManager:
        return self

    def __exit__(self, exc_type: Any, *exc: Any) -> None:
        try:
            self.close()
        except CheckpointError:
            if exc_type is None:
                raise  # else let the exception already on its way through win
