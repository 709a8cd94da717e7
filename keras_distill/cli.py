"""The `keras-distill` command line (also `python -m keras_distill`)."""

import argparse
import sys


def _demo(args):
    from keras_distill import demo

    demo.main(output_dir=args.output_dir, quick=args.quick)
    return 0


def build_parser():
    parser = argparse.ArgumentParser(
        prog="keras-distill",
        description="Knowledge distillation for Keras 3.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser(
        "demo", help="Teacher, student and distilled student on the bundled digits."
    )
    demo.add_argument("--output-dir", default="distill_runs/demo")
    demo.add_argument(
        "--quick", action="store_true", help="Fewer epochs (for tests and smoke runs)."
    )
    demo.set_defaults(func=_demo)
    return parser


def main(argv=None):
    args = build_parser().parse_args(sys.argv[1:] if argv is None else argv)
    return args.func(args)
