"""The `keras-distill` command line (also `python -m keras_distill`).

This module lives outside the `keras_distill` package on purpose: importing
the package imports TensorFlow (seconds), and `keras-distill --help` or a
mistyped argument should answer at once. Each command imports what it needs.
Every mistake ends in one line, `keras-distill: error: ...`, and exit code 2.
"""

import argparse
import os
import sys


def _demo(args):
    from keras_distill.app import demo

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


def _train(args):
    from keras_distill.app import runs

    runs.train(args.config, overwrite=args.overwrite, verbose=args.verbose)
    return 0


def _tune(args):
    from keras_distill.app import runs

    runs.tune(args.config, overwrite=args.overwrite)
    return 0


def _evaluate(args):
    from keras_distill.app import runs

    runs.evaluate(
        args.model,
        source=args.data,
        batch_size=args.batch_size,
        teacher=args.teacher,
        serving=args.serving,
        int8=args.int8,
    )
    return 0


def build_parser():
    parser = _Parser(
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

    train = sub.add_parser(
        "train", help="Run a YAML config: teacher, distillation, report, export."
    )
    train.add_argument("config", help="A YAML run configuration.")
    train.add_argument(
        "--overwrite", action="store_true", help="Replace an existing output folder."
    )
    train.add_argument(
        "--verbose", default="auto", type=lambda v: v if v == "auto" else int(v)
    )
    train.set_defaults(func=_train)

    tune = sub.add_parser(
        "tune", help="Keras Tuner search over temperature and alpha from a YAML config."
    )
    tune.add_argument("config", help="A YAML run configuration (uses its `tune` keys).")
    tune.add_argument("--overwrite", action="store_true")
    tune.set_defaults(func=_tune)

    evaluate = sub.add_parser(
        "evaluate",
        help="Test accuracy of a saved model, and its serving cost beside the "
        "teacher's.",
    )
    evaluate.add_argument("model", help="A saved distiller or student (.keras).")
    evaluate.add_argument("--data", default="digits")
    evaluate.add_argument("--batch-size", type=int, default=64)
    evaluate.add_argument(
        "--teacher",
        default=None,
        help="A saved teacher (.keras) to compare a plain student with "
        "(a distiller's own teacher by default).",
    )
    evaluate.add_argument(
        "--no-serving",
        dest="serving",
        action="store_false",
        help="Skip exporting and timing the SavedModels.",
    )
    evaluate.add_argument(
        "--int8",
        action="store_true",
        help="Also quantize the student to int8 TFLite and report it.",
    )
    evaluate.set_defaults(func=_evaluate)

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


class _Parser(argparse.ArgumentParser):
    def error(self, message):
        self.print_usage(sys.stderr)
        self.exit(2, f"keras-distill: error: {message}\n")


def _quiet_tensorflow():
    """TensorFlow's start-up logs once at most (users can still override)."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def _one_line(error):
    text = " ".join(str(error).split())
    return text if len(text) <= 2000 else text[:2000] + " ..."


def main(argv=None):
    args = build_parser().parse_args(sys.argv[1:] if argv is None else argv)
    _quiet_tensorflow()
    if getattr(args, "verbose", None) == "auto" and not sys.stdout.isatty():
        args.verbose = 2  # one line per epoch in logs and files, no ANSI bars
    try:
        return args.func(args)
    except (OSError, ValueError, KeyError, TypeError) as error:
        # Config and CLI mistakes (ConfigError is a ValueError), missing or
        # existing files: one line, no traceback.
        print(f"keras-distill: error: {_one_line(error)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(
            "keras-distill: interrupted; rerun the same command to resume.",
            file=sys.stderr,
        )
        return 130


if __name__ == "__main__":
    sys.exit(main())
