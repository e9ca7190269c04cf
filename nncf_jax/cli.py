"""The ``nncf-jax`` command line.

Subcommands:

- ``nncf-jax train CONFIG [--epochs N] [--batch-size N] [--lr LR] [--seed S]
  [--out DIR] [--init-from RUN_DIR] [--overwrite] [--quiet]``: trains the
  digits CNN (`nncf_jax.examples.digits.run`) with the config's compression;
- ``nncf-jax stats RUN_DIR``: prints the compression statistics of the latest
  checkpoint of such a run (``RUN_DIR`` or ``RUN_DIR/checkpoints``).

Mistakes (a bad config value, a missing checkpoint, no scikit-learn) print
one line ``nncf-jax: error: ...`` to stderr and exit with status 2, as
argparse does for bad arguments.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from nncf_jax import __version__
from nncf_jax.errors import NNCFJaxError

__all__ = ["main"]

_PROG = "nncf-jax"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=_PROG, description="Training-time compression for JAX/Flax with NNCF configs."
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    train = commands.add_parser(
        "train",
        help="train the digits CNN with a config's compression",
        description="Train a small CNN on scikit-learn's digits with the compression of an "
        "NNCF JSON config; writes checkpoints, stripped weights and metrics.json.",
    )
    train.add_argument("config", metavar="CONFIG", help="NNCF JSON config file")
    train.add_argument("--epochs", type=int, help="override the config's 'epochs'")
    train.add_argument("--batch-size", type=int, help="override the config's 'batch_size'")
    train.add_argument("--lr", type=float, help="override the config's 'optimizer.base_lr'")
    train.add_argument("--seed", type=int, default=0, help="weight init and batch order (0)")
    train.add_argument(
        "--out", metavar="DIR", help="output directory (default runs/digits/<config name>)"
    )
    train.add_argument(
        "--init-from",
        metavar="RUN_DIR",
        help="start from the stripped weights of an earlier run (e.g. for const_sparsity)",
    )
    train.add_argument(
        "--overwrite", action="store_true", help="replace an earlier run in the output directory"
    )
    train.add_argument("--quiet", action="store_true", help="print nothing")

    stats = commands.add_parser(
        "stats",
        help="print the compression statistics of a run's latest checkpoint",
        description="Print the compression statistics of the latest checkpoint of a run "
        "written by 'nncf-jax train'.",
    )
    stats.add_argument("run_dir", metavar="RUN_DIR", help="the run's --out (or its checkpoints/)")
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
    )


def _stats(args: argparse.Namespace) -> None:
    from nncf_jax.examples import digits

    epoch, text = digits.latest_statistics(args.run_dir)
    print(f"{args.run_dir}: checkpoint of epoch {epoch}")
    print(text, end="")


def main(argv: Sequence[str] | None = None) -> int:
    """Runs the command line; returns the exit status.

    Args:
      argv: the arguments after the program name (default ``sys.argv[1:]``).

    Returns:
      0 on success, 2 when nncf-jax rejected the input (the reason is printed
      to stderr as one line), 130 on Ctrl-C. Bad arguments make argparse
      exit with status 2 (`SystemExit`).
    """
    args = _parser().parse_args(argv)
    try:
        {"train": _train, "stats": _stats}[args.command](args)
    except NNCFJaxError as e:
        message = " ".join(str(e).split("\n"))
        print(f"{_PROG}: error: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{_PROG}: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
