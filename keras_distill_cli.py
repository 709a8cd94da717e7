"""The `keras-distill` command line (also `python -m keras_distill`).

This module lives outside the `keras_distill` package on purpose: importing
the package imports TensorFlow (seconds), and `keras-distill --help` or a
mistyped argument should answer at once. Each command imports what it needs.
Every mistake ends in one line, `keras-distill: error: ...`, and exit code 2.
"""

import argparse
import importlib.util
import os
import sys

_PACKAGE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "keras_distill")


def _package_info():
    """`keras_distill/version.py` (version, extras), read without the package.

    Importing `keras_distill.version` would run the package's `__init__`,
    which imports TensorFlow; the file itself needs only the standard library.
    """
    spec = importlib.util.spec_from_file_location(
        "_keras_distill_version", os.path.join(_PACKAGE, "version.py")
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _import_tensorflow_quietly():
    """Imports TensorFlow without its start-up banner (the rest of stderr kept).

    TensorFlow logs "oneDNN custom operations are on" from C++ before its
    logging is configured (twice, one per library it loads), whatever
    `TF_CPP_MIN_LOG_LEVEL` says; the command captures file descriptor 2
    during the import and writes back every other line.
    """
    if "tensorflow" in sys.modules:
        return
    import tempfile

    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), 2)
        try:
            import tensorflow  # noqa: F401
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            captured.seek(0)
            lines = captured.read().decode(errors="replace").splitlines()
            kept = [line for line in lines if not _is_banner(line)]
            if kept:
                print("\n".join(kept), file=sys.stderr)


def _is_banner(line):
    return "oneDNN custom operations are on" in line or line.startswith(
        "WARNING: All log messages before absl::InitializeLog() is called"
    )


def _import_library():
    """Imports keras_distill with every class saved files name (for commands)."""
    _import_tensorflow_quietly()
    import keras_distill

    keras_distill._import_saved_classes()


def _check_file(path, what):
    """A missing input file fails at once, before TensorFlow is imported."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: no such {what} file.")


def _check_config(path):
    """The config exists, PyYAML is installed, its values are valid (before TF).

    Everything `config.parse(library=False)` checks; the terms and schedules
    are checked once the library is imported.
    """
    _check_file(path, "config")
    _package_info().require("yaml", "Reading a YAML run configuration")
    from keras_distill.app import config

    config.load(path, library=False)


def _demo(args):
    _import_library()
    from keras_distill.app import demo

    demo.main(output_dir=args.output_dir, quick=args.quick)
    return 0


def _export(args):
    _check_file(args.model, "model")
    _import_library()
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
    _check_config(args.config)
    _import_library()
    from keras_distill.app import runs

    runs.train(args.config, overwrite=args.overwrite, verbose=args.verbose)
    return 0


def _tune(args):
    _check_config(args.config)
    _import_library()
    from keras_distill.app import runs

    runs.tune(args.config, overwrite=args.overwrite)
    return 0


def _compare(args):
    _check_config(args.config)
    _import_library()
    from keras_distill.app import compare

    compare.compare(args.config, seeds=args.seeds, overwrite=args.overwrite)
    return 0


def _evaluate(args):
    _check_file(args.model, "model")
    if args.teacher is not None:
        _check_file(args.teacher, "teacher")
    _import_library()
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
    parser.add_argument(
        "--version",
        action="version",
        version=f"keras-distill {_package_info().__version__}",
        help="Print the version and exit.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser(
        "demo", help="Teacher, student and distilled student on the bundled digits."
    )
    demo.add_argument(
        "--output-dir",
        default="distill_runs/demo",
        help="Where the demo writes its models, reports and plots "
        "(default: %(default)s).",
    )
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
        "--verbose",
        default="auto",
        type=_verbosity,
        help="Keras's fit() verbosity: auto, 0 (silent), 1 (progress bar) or 2 "
        "(one line per epoch; auto is 2 when the output is not a terminal).",
    )
    train.set_defaults(func=_train)

    tune = sub.add_parser(
        "tune", help="Keras Tuner search over temperature and alpha from a YAML config."
    )
    tune.add_argument("config", help="A YAML run configuration (uses its `tune` keys).")
    tune.add_argument(
        "--overwrite",
        action="store_true",
        help="Replace an existing search folder (the run's teacher is kept).",
    )
    tune.set_defaults(func=_tune)

    compare = sub.add_parser(
        "compare",
        help="Does distillation help on this config's data? Scratch, scratch with "
        "augmentation, the config's KD and KD on the augmented batches, over seeds, "
        "with intervals.",
    )
    compare.add_argument("config", help="A YAML run configuration.")
    compare.add_argument(
        "--seeds",
        type=int,
        default=3,
        help="Seeds per row (>= 2; default 3). Each seed trains 4 students.",
    )
    compare.add_argument(
        "--overwrite",
        action="store_true",
        help="Replace an existing comparison folder (<output>_compare).",
    )
    compare.set_defaults(func=_compare)

    evaluate = sub.add_parser(
        "evaluate",
        help="Test accuracy of a saved model, and its serving cost beside the "
        "teacher's.",
    )
    evaluate.add_argument("model", help="A saved distiller or student (.keras).")
    evaluate.add_argument(
        "--data",
        default="digits",
        help="The test data, as a config's `data.source` (digits, mnist1d, "
        "npz:<file>, tfds:<name>, ...; default: %(default)s).",
    )
    evaluate.add_argument(
        "--batch-size",
        type=int,
        default=64,
        help="Examples per evaluation batch (default: %(default)s).",
    )
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
    export.add_argument(
        "--version",
        type=int,
        default=None,
        help="The version folder to write (default: one above the highest).",
    )
    export.add_argument(
        "--input-name",
        default=None,
        help="The serving signature's input name (default: the student's).",
    )
    export.add_argument(
        "--warmup-requests",
        type=int,
        default=4,
        help="TF Serving warm-up requests to write into assets.extra/ "
        "(0 for none; default: %(default)s).",
    )
    export.set_defaults(func=_export)
    return parser


def _verbosity(value):
    if value == "auto":
        return value
    if value not in ("0", "1", "2"):
        raise argparse.ArgumentTypeError(
            f"expected auto, 0, 1 or 2, received {value!r}"
        )
    return int(value)


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


# Set while a command runs: `import keras_distill` then leaves TensorFlow to
# the command (`_import_library`), so config mistakes come before it loads.
COMMAND_RUNNING = False


def main(argv=None):
    global COMMAND_RUNNING
    COMMAND_RUNNING = True
    args = build_parser().parse_args(sys.argv[1:] if argv is None else argv)
    _quiet_tensorflow()
    if getattr(args, "verbose", None) == "auto" and not sys.stdout.isatty():
        args.verbose = 2  # one line per epoch in logs and files, no ANSI bars
    try:
        return args.func(args)
    except (OSError, ValueError, KeyError, TypeError, ImportError) as error:
        # Config and CLI mistakes (ConfigError is a ValueError), missing or
        # existing files, a missing optional package (the message names its
        # extra): one line, no traceback.
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
