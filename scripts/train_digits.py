"""Train the digits CNN with an NNCF config: the README's main job.

Usage:
  python scripts/train_digits.py CONFIG [--epochs N] [--out DIR] [--seed S]
      [--batch-size N] [--lr LR] [--init-from RUN_DIR] [--overwrite] [--quiet]

The same as ``nncf-jax train CONFIG ...``; see `nncf_jax.examples.digits`.
"""

import sys

from nncf_jax.cli import main

if __name__ == "__main__":
    sys.exit(main(["train", *sys.argv[1:]]))
