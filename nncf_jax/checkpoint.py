"""Orbax checkpoints that carry the compression state beside the weights.

One checkpoint step holds, written atomically by orbax (a temporary folder
renamed when complete):

- ``train``: a pytree ``{"variables", "opt_state", "cstate"}`` (`StandardSave`),
  so masks, levels and counters restore bit for bit with their dtypes and,
  with sharded targets, their shardings;
- ``compression_state``: ``ctrl.get_compression_state()`` as JSON, NNCF's
  portable resume dict.

Example:
  >>> with nj.checkpoint.CheckpointManager("runs/ckpt") as mngr:  # doctest: +SKIP
  ...     mngr.save(step, ctrl=ctrl, variables=variables, opt_state=opt_state, cstate=cstate)
  ...     restored = mngr.restore(variables=variables, opt_state=opt_state, cstate=cstate)
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import jax
import orbax.checkpoint as ocp

from nncf_jax.errors import CheckpointError

__all__ = ["CheckpointManager", "Restored"]


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


class CheckpointManager:
    """An ``orbax.checkpoint.CheckpointManager`` for compressed training.

    Args:
      directory: where checkpoints go (created if missing).
      max_to_keep: how many recent checkpoints to keep (None: all).
      save_interval_steps: save only every this many steps (unless forced).
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
        try:
            self._manager = ocp.CheckpointManager(self.directory, options=options)
        except (OSError, ValueError) as e:
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
        first, so the JSON part describes the same state as the pytree.
        """
        ctrl.sync(variables, cstate)
        tree = {"variables": variables, "opt_state": opt_state, "cstate": cstate}
        args = ocp.args.Composite(
            train=ocp.args.StandardSave(tree),
            compression_state=ocp.args.JsonSave(ctrl.get_compression_state()),
        )
        try:
            return bool(self._manager.save(int(step), args=args, force=force))
        except (OSError, ValueError) as e:
            raise CheckpointError(f"saving step {step} to {self.directory} failed: {e}") from e

    def restore(
        self,
        step: int | None = None,
        *,
        variables: Any,
        cstate: Any,
        opt_state: Any = None,
        ctrl: Any = None,
    ) -> Restored:
        """Restores a step (the latest by default) into templates' structure and dtypes.

        Args:
          step: which step; None for the latest complete one.
          variables, cstate, opt_state: templates (e.g. freshly initialised
            values); only their structure, shapes, dtypes and shardings are used.
          ctrl: if given, its facade handles are synced to the restored values.

        Raises:
          CheckpointError: nothing to restore, or the checkpoint does not fit
            the templates (the message carries orbax's account of the paths).
        """
        self._manager.wait_until_finished()
        step = self.latest_step() if step is None else int(step)
        if step is None:
            raise CheckpointError(f"no complete checkpoint in {self.directory}")
        if step not in self.all_steps():
            raise CheckpointError(
                f"no checkpoint for step {step} in {self.directory}; available: {self.all_steps()}"
            )
        target = {"variables": variables, "opt_state": opt_state, "cstate": cstate}
        args = ocp.args.Composite(
            train=ocp.args.StandardRestore(_abstract(target)),
            compression_state=ocp.args.JsonRestore(),
        )
        try:
            restored = self._manager.restore(step, args=args)
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise CheckpointError(
                f"checkpoint step {step} in {self.directory} cannot be restored into this "
                f"model/optimizer/compression state: {e}"
            ) from e
        train = restored["train"]
        if ctrl is not None:
            ctrl.sync(train["variables"], train["cstate"])
        return Restored(
            step=step,
            variables=train["variables"],
            opt_state=train["opt_state"],
            cstate=train["cstate"],
            compression_state=dict(restored["compression_state"]),
        )

    def latest_step(self) -> int | None:
        """Latest complete step, or None."""
        return self._manager.latest_step()

    def all_steps(self) -> list[int]:
        """All complete steps, ascending."""
        return sorted(self._manager.all_steps())

    def wait_until_finished(self) -> None:
        """Blocks until asynchronous saves are on disk."""
        self._manager.wait_until_finished()

    def close(self) -> None:
        """Waits for pending saves and releases orbax's resources."""
        self._manager.wait_until_finished()
        self._manager.close()

    def __enter__(self) -> CheckpointManager:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
