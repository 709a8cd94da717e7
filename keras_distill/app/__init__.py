"""The `keras-distill` application: command line, YAML runs, reports, demo.

Built on the library (`keras_distill`), never imported by it. It needs the
`app` extra (`pip install "keras-distill[app]"`: PyYAML, matplotlib,
scikit-learn); the library alone does not.
"""
