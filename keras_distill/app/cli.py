"""The `keras-distill` command line; see `keras_distill_cli` (kept light)."""

from keras_distill_cli import build_parser, main  # noqa: F401
