"""Train a model or run an active-learning experiment: ``python train.py fit --config configs/<name>.yaml``."""

from alvae_pl.cli import main

if __name__ == "__main__":
    main()
