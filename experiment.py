"""Multi-seed experiments: ``python experiment.py {run,vae,list,report,tsne} --help``."""

import sys

from alvae_pl.analysis.experiment_cli import main

if __name__ == "__main__":
    sys.exit(main())
