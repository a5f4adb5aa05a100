"""`python -m model.train`: the training command (`make train`); the pipeline lives in `model.training`."""

import sys

from model.training.cli import main

if __name__ == "__main__":
    sys.exit(main())
