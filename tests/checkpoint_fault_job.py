"""A training job that checkpoints every step and can be made to hang inside a save.

Usage: python checkpoint_fault_job.py CKPT_DIR OUT_NPZ TOTAL_STEPS [--hang-in-save STEP --hang-at POINT]

Like a real preemptible job it resumes from the latest complete checkpoint in
CKPT_DIR if there is one (printing ``resumed from step N``), trains to
TOTAL_STEPS saving after every step (the last 2 kept), and writes every leaf
of params, optimizer state and compression state to OUT_NPZ.

With ``--hang-in-save STEP`` the save of STEP stops inside orbax, after orbax
created ``STEP.orbax-checkpoint-tmp`` and before it renamed it:

- ``--hang-at write``: in the array writes: the third array's write never
  starts (the others go on), so the ``train`` item is never committed;
- ``--hang-at commit``: in the step's commit (every item written and committed
  inside the temporary folder, the folder's own rename not done).

On reaching that point the job writes ``CKPT_DIR/../hung_in_save.txt`` (the
temporary folder and what it holds), then sleeps so the parent can SIGKILL it.
The hooks replace orbax 0.12.8 internals; if those move, the job fails loudly
instead of hanging somewhere else.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import os
import pathlib

from resume_job import batch, build, save_leaves  # the script's folder is on sys.path

from nncf_jax.checkpoint import CheckpointManager


def _signal(marker: pathlib.Path, where: str, tmp_dir: pathlib.Path) -> None:
    files = (
        sorted(str(p.relative_to(tmp_dir)) for p in tmp_dir.rglob("*")) if tmp_dir.exists() else []
    )
    text = f"{where}\n{tmp_dir}\n" + "\n".join(files) + "\n"
    partial = marker.with_suffix(".partial")
    partial.write_text(text)
    os.replace(partial, marker)  # the parent never sees half a marker


def install_hang(point: str, ckpt: pathlib.Path, step: int) -> None:
    marker = ckpt.parent / "hung_in_save.txt"
    tmp_dir = ckpt / f"{step}.orbax-checkpoint-tmp"
    if point == "commit":
        from orbax.checkpoint._src.path import atomicity

        original = atomicity.AtomicRenameTemporaryPath.finalize

        async def finalize(self):
            # Items (train/, ...) are committed inside the step folder first; hang
            # at the step's own rename, when every file is written.
            if pathlib.Path(self.get_final()) == ckpt / str(step):
                _signal(marker, f"commit of {self!r}", tmp_dir)
                await asyncio.sleep(3600)
            return await original(self)

        atomicity.AtomicRenameTemporaryPath.finalize = finalize
    elif point == "write":
        from orbax.checkpoint._src.serialization import serialization

        original = serialization.async_serialize_from_host
        calls = itertools.count()

        async def serialize(*args, **kwargs):
            if next(calls) == 2:
                _signal(marker, "array write 3", tmp_dir)
                await asyncio.sleep(3600)
            return await original(*args, **kwargs)

        serialization.async_serialize_from_host = serialize
    else:
        raise SystemExit(f"unknown --hang-at {point!r}")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("ckpt")
    parser.add_argument("out")
    parser.add_argument("total", type=int)
    parser.add_argument("--hang-in-save", type=int)
    parser.add_argument("--hang-at", choices=["write", "commit"], default="commit")
    args = parser.parse_args()
    ckpt = pathlib.Path(args.ckpt).resolve()

    ctrl, variables, opt_state, cstate, train_step = build()
    start = 0
    with CheckpointManager(ckpt, max_to_keep=2) as manager:
        if manager.latest_step() is not None:
            restored = manager.restore(
                variables=variables, opt_state=opt_state, cstate=cstate, ctrl=ctrl
            )
            variables, opt_state, cstate = restored.variables, restored.opt_state, restored.cstate
            start = restored.step
            print(f"resumed from step {start}", flush=True)
        for step in range(start, args.total):
            variables, opt_state, cstate = train_step(variables, opt_state, cstate, *batch(step))
            if args.hang_in_save == step + 1:
                manager.wait_until_finished()  # so the hook catches this save, not the last one
                install_hang(args.hang_at, ckpt, step + 1)
            manager.save(
                step + 1, ctrl=ctrl, variables=variables, opt_state=opt_state, cstate=cstate
            )
    save_leaves(args.out, variables, opt_state, cstate)


if __name__ == "__main__":
    main()
