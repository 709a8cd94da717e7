"""The `keras-distill` command line (also `python -m keras_distill`)."""

import argparse
import sys


def _demo(args):
    from keras_distill import demo

    demo.main(output_dir=args.output_dir, quick=args.quick)
    return 0


def _export(args):
    from keras_distill import export

    model = export.load_for_export(args.model)
    export.export_student(
        model,
        args.base_dir,
        version=args.version,
        input_name=args.input_name,
        warmup_requests=args.warmup_requests,
    )
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

    export = sub.add_parser(
        "export",
        help="Export the student of a saved .keras model for TensorFlow Serving.",
    )
    export.add_argument("model", help="A saved distiller or student (.keras).")
    export.add_argument("base_dir", help="TF Serving model folder; writes <version>/.")
    export.add_argument("--version", type=int, default=None)
    export.add_argument("--input-name", default=None)
    export.add_argument("--warmup-requests", type=int, default=4)
    export.set_defaults(func=_export)
    return parser


def main(argv=None):
    args = build_parser().parse_args(sys.argv[1:] if argv is None else argv)
    return args.func(args)
