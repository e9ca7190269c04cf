"""The ``nncf-jax`` command line.

Subcommands (``nncf-jax COMMAND --help`` for each):

- ``train CONFIG``: trains the digits CNN, or any linen model given by
  ``--model module:factory``, on scikit-learn's digits with the config's
  compression (`nncf_jax.examples.digits.run`); accuracy-aware when the
  config has an ``accuracy_aware_training`` section;
- ``stats RUN_DIR``: the compression statistics of a run's latest checkpoint;
- ``export RUN_DIR``: the latest checkpoint as StableHLO, a TensorFlow
  SavedModel or OpenVINO IR (``ctrl.export_model``);
- ``plot CONFIG|RUN_DIR``: PNG plots (`nncf_jax.plots`);
- ``validate-config CONFIG``: checks a config as ``train`` would.

Mistakes (a bad config value, a missing file or checkpoint, a missing
extra) print one line ``nncf-jax: error: ...`` to stderr and exit with
status 2, as argparse does for bad arguments; ``--debug`` adds the traceback.
An unexpected exception (a bug) prints one line and exits with status 1.
"""

from __future__ import annotations

import argparse
import sys
import textwrap
import traceback
from collections.abc import Sequence
from pathlib import Path

from nncf_jax import __version__
from nncf_jax.errors import NNCFJaxError, UsageError

__all__ = ["main"]

_PROG = "nncf-jax"

_EPILOG = """\
examples:
  nncf-jax validate-config configs/digits_magnitude_sparsity.json
  nncf-jax plot configs/digits_magnitude_sparsity.json       # the schedule, before training
  nncf-jax train configs/digits_magnitude_sparsity.json      # -> runs/digits/digits_magnitude_sparsity/
  nncf-jax stats runs/digits/digits_magnitude_sparsity
  nncf-jax export runs/digits/digits_magnitude_sparsity --format openvino
  nncf-jax plot runs/digits/digits_magnitude_sparsity        # -> RUN_DIR/plots/*.png
  tensorboard --logdir runs/digits           # the metrics logs (pip install tensorboard)

Errors print one line 'nncf-jax: error: ...' and exit with status 2;
--debug also prints the traceback.
"""

_TRAIN_EPILOG = """\
A run directory holds config.json, checkpoints/, stripped/ (plain weights),
model.stablehlo, tensorboard/, plots/, history.json and metrics.json.

--model takes 'package.module:factory' or 'path/to/file.py:factory': factory()
returns a flax.linen.Module, initialised with zeros of the config's
input_info.sample_size (default [1, 8, 8, 1]; any shape with 64 values per
image, the images are reshaped to it) and returning (N, 10) logits, with no
mutable collections. Example: --model nncf_jax.examples.digits_model:mlp.
The config's own "model" key is used when it has that form.

--resume continues an interrupted run in --out from its latest complete
checkpoint (weights, optimizer and compression state) to --epochs (a finished
run can be extended): give the config, --seed, --batch-size, --lr, --model and
--init-from it was started with. The completed epochs' batch order is
replayed, so the result is bit for bit that of an uninterrupted run; the
earlier epochs' history comes from OUT/history.json. Not with --overwrite, and
not for accuracy-aware configs.

With an "accuracy_aware_training" section the loop of nncf_jax.accuracy_aware
drives the epochs (at most maximal_total_epochs) and keeps the best state.
Its reference accuracy: the --init-from weights, or else the model trained
for --pretrain-epochs epochs without compression (default: --epochs, the
config's "epochs").

examples:
  nncf-jax train configs/digits_magnitude_sparsity.json --epochs 5 --out runs/try
  nncf-jax train configs/digits_magnitude_sparsity.json --epochs 5 --out runs/try --resume
  nncf-jax train configs/digits_dense.json --model nncf_jax.examples.digits_model:mlp
  nncf-jax train configs/digits_const_sparsity.json --init-from runs/try
  nncf-jax train configs/digits_accuracy_aware.json --pretrain-epochs 10
"""


def _fill(text: str) -> str:
    return textwrap.fill(text, width=78)


def _common() -> argparse.ArgumentParser:
    # --debug is accepted before and after the command; SUPPRESS keeps a
    # subcommand's default from hiding a --debug given before it.
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--debug",
        action="store_true",
        default=argparse.SUPPRESS,
        help="print the traceback of an error",
    )
    return common


def _parser() -> argparse.ArgumentParser:
    common = _common()
    parser = argparse.ArgumentParser(
        prog=_PROG,
        description=_fill(
            "Training-time compression for JAX/Flax with NNCF configs: train, inspect, "
            "plot and export compressed models."
        ),
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        parents=[common],
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, help: str, description: str, epilog: str | None = None):
        return commands.add_parser(
            name,
            help=help,
            description=_fill(description),
            epilog=epilog,
            formatter_class=argparse.RawDescriptionHelpFormatter,
            parents=[common],
        )

    train = command(
        "train",
        "train on the digits data with a config's compression",
        "Train a model (the digits CNN by default) on scikit-learn's digits with the "
        "compression of an NNCF JSON config; shows progress and statistics, writes "
        "checkpoints, the exported model, a TensorBoard log, plots and metrics.json.",
        _TRAIN_EPILOG,
    )
    train.add_argument("config", metavar="CONFIG", help="NNCF JSON config file")
    train.add_argument("--model", metavar="MODULE:FACTORY", help="the model to train (see below)")
    train.add_argument("--epochs", type=int, metavar="N", help="override the config's 'epochs'")
    train.add_argument(
        "--batch-size", type=int, metavar="N", help="override the config's 'batch_size'"
    )
    train.add_argument("--lr", type=float, help="override the config's 'optimizer.base_lr'")
    train.add_argument(
        "--seed", type=int, default=0, metavar="S", help="weight init and batch order (0)"
    )
    train.add_argument(
        "--out", metavar="DIR", help="output directory (default runs/digits/<config name>)"
    )
    train.add_argument(
        "--init-from",
        metavar="RUN_DIR",
        help="start from the stripped weights of an earlier run (e.g. for const_sparsity)",
    )
    train.add_argument(
        "--pretrain-epochs",
        type=int,
        metavar="N",
        help="accuracy-aware: epochs without compression for the reference (default --epochs)",
    )
    train.add_argument(
        "--overwrite", action="store_true", help="replace an earlier run in the output directory"
    )
    train.add_argument(
        "--resume",
        action="store_true",
        help="continue the run in --out from its latest checkpoint (see below)",
    )
    train.add_argument("--no-tensorboard", action="store_true", help="write no TensorBoard log")
    train.add_argument("--no-plots", action="store_true", help="write no plots")
    train.add_argument("--quiet", action="store_true", help="print nothing")

    stats = command(
        "stats",
        "print the compression statistics of a run's latest checkpoint",
        "Print the compression statistics of the latest checkpoint of a run "
        "written by 'nncf-jax train'.",
    )
    stats.add_argument("run_dir", metavar="RUN_DIR", help="the run's --out (or its checkpoints/)")

    export = command(
        "export",
        "export a run's latest checkpoint (StableHLO, SavedModel, OpenVINO IR)",
        "Rebuild the controller of a run from its config.json and latest checkpoint and "
        "write the stripped model with ctrl.export_model, with a JSON sidecar.",
        "examples:\n  nncf-jax export runs/digits/digits_magnitude_sparsity\n"
        "  nncf-jax export RUN_DIR --format saved_model --out /tmp/digits_savedmodel\n\n"
        "saved_model needs the 'tf' extra, openvino the 'openvino' extra.",
    )
    export.add_argument("run_dir", metavar="RUN_DIR", help="the run's --out (or its checkpoints/)")
    export.add_argument(
        "--format",
        choices=("stablehlo", "saved_model", "openvino"),
        default="stablehlo",
        help="the artefact's format (stablehlo)",
    )
    export.add_argument(
        "--out",
        metavar="PATH",
        help="the artefact's path (default RUN_DIR/export/model.stablehlo, "
        "RUN_DIR/export/saved_model or RUN_DIR/export/model.xml)",
    )

    plot = command(
        "plot",
        "plot a config's schedule, or a run's schedule, sparsity and history",
        "Write PNG plots. For a CONFIG: the compression level its schedule puts in "
        "force per epoch (and per optimizer step for per-step schedules). For a "
        "RUN_DIR: also the per-layer sparsity of its latest checkpoint and its "
        "training history (test accuracy, loss, sparsity per epoch).",
    )
    plot.add_argument("target", metavar="CONFIG|RUN_DIR", help="a JSON config or a run directory")
    plot.add_argument(
        "--out",
        metavar="DIR",
        help="where the PNGs go (default RUN_DIR/plots, or plots/<config name>)",
    )
    plot.add_argument(
        "--epochs", type=int, metavar="N", help="epochs to plot the schedule over (config's)"
    )

    validate = command(
        "validate-config",
        "check a config as 'train' would, without training",
        "Check a config: the JSON schema and NNCF's rules, the training keys, the "
        "accuracy_aware_training section, and that its algorithms build on the model "
        "(scopes match). Prints 'ok: ...' or one error line (exit status 2).",
    )
    validate.add_argument("config", metavar="CONFIG", help="NNCF JSON config file")
    validate.add_argument(
        "--model", metavar="MODULE:FACTORY", help="the model to build on (as for train)"
    )
    return parser


def _train(args: argparse.Namespace) -> None:
    from nncf_jax.examples import digits

    digits.run(
        args.config,
        epochs=args.epochs,
        out_dir=args.out,
        seed=args.seed,
        batch_size=args.batch_size,
        lr=args.lr,
        init_from=args.init_from,
        overwrite=args.overwrite,
        quiet=args.quiet,
        model=args.model,
        pretrain_epochs=args.pretrain_epochs,
        tensorboard=not args.no_tensorboard,
        plots=not args.no_plots,
        resume=args.resume,
    )


def _stats(args: argparse.Namespace) -> None:
    from nncf_jax.examples import digits

    epoch, text = digits.latest_statistics(args.run_dir)
    print(f"{args.run_dir}: checkpoint of epoch {epoch}")
    print(text, end="")


def _size(path: Path) -> int:
    if path.is_dir():
        return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    return path.stat().st_size


def _export(args: argparse.Namespace) -> None:
    from nncf_jax.examples.digits_restore import export_run

    run, artefact = export_run(args.run_dir, args.format, args.out)
    print(
        f"{run.path}: checkpoint of epoch {run.restored.step} exported as {args.format}\n"
        f"wrote {artefact.path} ({_size(artefact.path):,} B) and {artefact.sidecar}"
    )


def _plot(args: argparse.Namespace) -> None:
    from nncf_jax import plots
    from nncf_jax.config import NNCFConfig
    from nncf_jax.examples.digits_data import TRAIN_SIZE
    from nncf_jax.examples.digits_restore import restore_run
    from nncf_jax.examples.train_settings import TrainSettings

    plots.require_matplotlib()
    target = Path(args.target)
    if target.is_dir():
        run = restore_run(target)
        history = (run.metrics or {}).get("history")
        epochs = args.epochs or max((run.metrics or {}).get("epochs", 0), run.restored.step, 1)
        written = plots.write_plots(
            Path(args.out) if args.out else run.path / "plots",
            config=run.config,
            epochs=epochs,
            steps_per_epoch=run.steps_per_epoch,
            statistics=run.ctrl.statistics() if run.ctrl.algorithms else None,
            history=history,
        )
    else:
        config = NNCFConfig.from_json(target)
        settings = TrainSettings.from_config(config, epochs=args.epochs)
        curves = plots.schedule_curves(
            config,
            epochs=settings.epochs,
            steps_per_epoch=max(TRAIN_SIZE // settings.batch_size, 1),
        )
        if not curves:
            names = [s.name for s in config.algorithm_sections()]
            raise UsageError(
                f"{target}: nothing to plot before training: no algorithm with a schedule "
                f"(it has {', '.join(names) or 'no compression'}); plot a run directory instead"
            )
        out = Path(args.out) if args.out else Path("plots") / target.stem
        figure = plots.schedule_figure(curves, title=f"Compression schedule: {target.name}")
        written = [plots.save_figure(figure, out / "schedule.png")]
    for path in written:
        print(f"wrote {path}")
    if not written:
        print("nothing to plot (no schedule, no compression statistics, no history)")


def _validate_config(args: argparse.Namespace) -> None:
    import nncf_jax as nj
    from nncf_jax.examples.digits_data import TRAIN_SIZE
    from nncf_jax.examples.digits_model import resolve_model
    from nncf_jax.examples.digits_restore import init_variables
    from nncf_jax.examples.train_settings import TrainSettings, sample_shape

    config = nj.NNCFConfig.from_json(args.config)
    settings = TrainSettings.from_config(config)
    spec = resolve_model(args.model if args.model is not None else config.get("model"))
    variables = init_variables(spec.model, 0, sample_shape(config, digits_cnn=spec.is_default))
    steps_per_epoch = max(TRAIN_SIZE // settings.batch_size, 1)
    ctrl, _ = nj.create_compressed_model(
        spec.model, variables, config, steps_per_epoch=steps_per_epoch
    )
    names = [a.name for a in ctrl.algorithms]
    line = f"ok: {len(names)} algorithm(s): {', '.join(names) or 'none (float baseline)'}"
    if config.get("accuracy_aware_training") is not None:
        loop = nj.accuracy_aware.create_accuracy_aware_training_loop(config, ctrl, verbose=False)
        line += f"; accuracy-aware training ({loop.mode})"
    print(f"{line}; model {spec.spec}, {settings.epochs} epochs of {steps_per_epoch} steps")


_COMMANDS = {
    "train": _train,
    "stats": _stats,
    "export": _export,
    "plot": _plot,
    "validate-config": _validate_config,
}


def _one_line(e: BaseException) -> str:
    return " ".join(str(e).split())


def main(argv: Sequence[str] | None = None) -> int:
    """Runs the command line; returns the exit status.

    Args:
      argv: the arguments after the program name (default ``sys.argv[1:]``).

    Returns:
      0 on success; 2 when nncf-jax rejected the input or a file is missing
      (the reason is printed to stderr as one line); 1 on an unexpected
      error; 130 on Ctrl-C. Bad arguments make argparse exit with status 2
      (`SystemExit`).
    """
    args = _parser().parse_args(argv)
    debug = getattr(args, "debug", False)
    try:
        _COMMANDS[args.command](args)
    except (NNCFJaxError, OSError) as e:
        if debug:
            traceback.print_exc()
        print(f"{_PROG}: error: {_one_line(e)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{_PROG}: interrupted", file=sys.stderr)
        return 130
    except Exception as e:
        if debug:
            traceback.print_exc()
        hint = "" if debug else "; run with --debug for the traceback"
        print(
            f"{_PROG}: unexpected error: {type(e).__name__}: {_one_line(e)}{hint}", file=sys.stderr
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
