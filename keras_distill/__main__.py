"""`python -m keras_distill ...` is the `keras-distill` command."""

import sys

from keras_distill.app.cli import main

if __name__ == "__main__":
    sys.exit(main())
