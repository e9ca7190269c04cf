"""Train the digits CNN with an NNCF config: the README's main job.

Usage:
  python scripts/train_digits.py CONFIG [--model MODULE:FACTORY] [--epochs N]
      [--batch-size N] [--lr LR] [--seed S] [--out DIR] [--init-from RUN_DIR]
      [--pretrain-epochs N] [--overwrite | --resume] [--no-tensorboard] [--no-plots]
      [--quiet]

The same as ``nncf-jax train CONFIG ...`` (``nncf-jax train --help`` says
more); see `nncf_jax.examples.digits`.
"""

import sys

from nncf_jax.cli import main

if __name__ == "__main__":
    sys.exit(main(["train", *sys.argv[1:]]))
