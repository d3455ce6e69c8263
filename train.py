"""Train a model or run an active-learning experiment: ``python train.py fit --config configs/<name>.yaml``.

Exit status: 0 the run finished (or has nothing left to do), 3 it waits for an expert's labels, 2 a one-line error
(bad input; nothing written), 143 stopped by SIGTERM (continue with ``--ckpt_path last``), 1 an unexpected error.
"""

import sys

from alvae_pl.cli import main

if __name__ == "__main__":
    cli = main()
    sys.exit(cli.exit_status() if cli is not None else 0)
