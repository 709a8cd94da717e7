"""Sequence-level knowledge distillation: train on the teacher's own continuations.

Kim and Rush (EMNLP 2016, "Sequence-Level Knowledge Distillation") train the
student on the sequences the teacher generates (its beam or greedy output)
rather than on the reference text: the student learns the teacher's mode,
which is easier than its whole distribution. `transfer_set` generates that
set once, greedily (`decoding.greedy_continue`, one graph per batch), and
returns it in the `(inputs, targets, sample_weight)` form of `kd.text.encode`,
so the student trains with plain `fit()` (or a `Distiller`, adding
token-level KD on the same sequences).

With `path`, the set is stored as an `.npz` file, written beside the target
and renamed into place (a `kill -9` leaves no half-written file), with the
teacher's and the prompts' fingerprints and a digest of its own arrays: a
second call with the same teacher and prompts reads it instead of
generating; another teacher, other prompts or a damaged file are refused.
"""

import hashlib
import json
import os

import numpy as np

FORMAT = "keras_distill.sequence_kd/1"


def _digest(*arrays):
    digest = hashlib.sha256()
    for array in arrays:
        array = np.ascontiguousarray(array)
        digest.update(str((array.shape, array.dtype.str)).encode())
        digest.update(array.tobytes())
    return digest.hexdigest()


def _check_prompts(token_ids, prompt_lengths):
    ids = np.asarray(token_ids)
    if ids.ndim != 2 or not np.issubdtype(ids.dtype, np.integer):
        raise ValueError(
            "`token_ids` must be an integer array of shape (prompts, length). "
            f"Received: shape {ids.shape}, dtype {ids.dtype}."
        )
    lengths = np.asarray(prompt_lengths).reshape(-1)
    if len(lengths) != len(ids):
        raise ValueError(
            f"`prompt_lengths` must give one length per prompt: {len(ids)} prompts, "
            f"{len(lengths)} lengths."
        )
    bad = np.flatnonzero((lengths < 1) | (lengths > ids.shape[1]))
    if bad.size:
        raise ValueError(
            f"Each prompt length must be in [1, {ids.shape[1]}] (the window). "
            f"Received: prompt_lengths[{int(bad[0])}]={int(lengths[bad[0]])}."
        )
    return ids.astype("int32"), lengths.astype("int32")


def transfer_set(
    teacher,
    token_ids,
    prompt_lengths,
    path=None,
    batch_size=64,
    train_on_prompts=False,
    overwrite=False,
):
    """The teacher's greedy continuations of prompts, as a training set.

    Args:
        teacher: A causal `keras.Model`, `(batch, length)` int ids ->
            `(batch, length, vocab)` logits (`kd.models.causal_lm`, a
            KerasHub CausalLM's functional graph).
        token_ids: `(prompts, length)` int ids; row `i`'s first
            `prompt_lengths[i]` are its prompt (the rest is ignored).
        prompt_lengths: `(prompts,)` ints in `[1, length]`.
        path: Optional `.npz` file to store the set in (and read it from,
            when it holds this teacher's continuations of these prompts).
            Defaults to `None` (not stored).
        batch_size: Prompts per generation batch. Defaults to `64`.
        train_on_prompts: Whether the targets include the prompts' own
            next tokens (`True`) or only the generated ones. Defaults to
            `False`: the student learns what the teacher wrote.
        overwrite: Replace a stored set made by another teacher or from
            other prompts. Defaults to `False` (refused).

    Returns:
        `(inputs, targets, sample_weight)`: int32 `(prompts, length)` inputs
        (prompt + continuation), the next token of each position, and 1.0
        where that next token is trained on (0 for the last position, and for
        the prompts' tokens unless `train_on_prompts`).

    Example:

    ```python
    x, y, w = kd.sequence_kd.transfer_set(teacher, ids, lengths, "transfer.npz")
    student.fit(x, y, sample_weight=w, epochs=3)
    ```
    """
    from keras_distill.cache.fingerprint import same_teacher, teacher_fingerprint

    ids, lengths = _check_prompts(token_ids, prompt_lengths)
    if isinstance(batch_size, bool) or int(batch_size) != batch_size or batch_size < 1:
        raise ValueError(
            f"`batch_size` must be a positive integer. Received: {batch_size!r}"
        )
    prompts = _digest(ids * (np.arange(ids.shape[1]) < lengths[:, None]), lengths)
    continued = None
    if path is not None:
        continued = _read(os.fspath(path), teacher, prompts, overwrite, same_teacher)
    if continued is None:
        continued = _generate(teacher, ids, lengths, int(batch_size))
        if path is not None:
            _write(os.fspath(path), continued, teacher_fingerprint(teacher), prompts)
    return _as_training_set(continued, lengths, train_on_prompts)


def _generate(teacher, ids, lengths, batch_size):
    import tensorflow as tf

    from keras_distill.decoding import greedy_continue

    step = tf.function(
        lambda x, n: greedy_continue(teacher, x, n),
        input_signature=[
            tf.TensorSpec((None, ids.shape[1]), tf.int32),
            tf.TensorSpec((None,), tf.int32),
        ],
    )
    return np.concatenate(
        [
            step(ids[i : i + batch_size], lengths[i : i + batch_size]).numpy()
            for i in range(0, len(ids), batch_size)
        ]
    )


def _as_training_set(continued, lengths, train_on_prompts):
    inputs = continued
    targets = np.zeros_like(continued)
    targets[:, :-1] = continued[:, 1:]
    positions = np.arange(continued.shape[1])[None, :]
    # The last position has no next token.
    weights = np.broadcast_to(positions < continued.shape[1] - 1, continued.shape)
    if not train_on_prompts:
        weights = weights & (positions + 1 >= lengths[:, None])  # next generated
    return inputs, targets, weights.astype("float32")


def _read(path, teacher, prompts, overwrite, same_teacher):
    """The stored continuations, None to generate, or an error."""
    if not os.path.exists(path):
        return None
    try:
        with np.load(path, allow_pickle=False) as stored:
            meta = json.loads(str(stored["meta"]))
            continued = stored["continued"]
    except (OSError, ValueError, KeyError) as error:
        raise ValueError(
            f"The sequence-KD transfer set {path!r} cannot be read ({error}); it "
            "was not written by `transfer_set` or is damaged. Delete it or pass "
            "another `path`."
        ) from None
    if meta.get("format") != FORMAT or meta.get("digest") != _digest(continued):
        raise ValueError(
            f"The sequence-KD transfer set {path!r} is damaged (its arrays do not "
            "match its digest). Delete it to generate it again."
        )
    differ = [
        what
        for what, same in (
            ("teacher", same_teacher(teacher, meta.get("teacher", ""))),
            ("prompts", meta.get("prompts") == prompts),
        )
        if not same
    ]
    if differ and not overwrite:
        raise ValueError(
            f"The sequence-KD transfer set {path!r} holds the continuations of "
            f"another {' and other '.join(differ)}; reading it would train on "
            "them. Pass `overwrite=True` to generate it again, or another `path`."
        )
    return None if differ else continued


def _write(path, continued, teacher, prompts):
    meta = {
        "format": FORMAT,
        "teacher": teacher,
        "prompts": prompts,
        "digest": _digest(continued),
    }
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    tmp = os.path.join(folder, f".{os.path.basename(path)}.{os.getpid()}.partial.npz")
    try:
        np.savez(tmp, continued=continued, meta=np.asarray(json.dumps(meta)))
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
