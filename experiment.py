"""Multi-seed experiments: ``python experiment.py {run,vae,list,report,tsne,features} --help``."""

import sys

from alvae_pl.experiments.cli import main

if __name__ == "__main__":
    sys.exit(main())
