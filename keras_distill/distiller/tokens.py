"""Token-level distillation: sequence outputs, their mask and its reduction.

A student (and teacher) whose outputs have a rank above 2, e.g. a language
model's `(batch, seq, vocab)` logits, is distilled per position: every term
compares the two distributions of each token (the class axis is the last),
and the token mask weights them. The mask is the batch's `sample_weight` of
shape `(batch, seq)` (what KerasHub's CausalLM preprocessors yield, as `(x, y,
sample_weight)`), else the `padding_mask` of dict inputs, else every token.
A per-sequence weight of shape `(batch,)` applies to each of its tokens.

The reduction (`Distiller(token_reduction=)`):

- `"tokens"` (the default): the mean over the real tokens of the batch,
  `sum(w * l) / sum(w)`. Every token counts the same, so a long sequence
  counts more than a short one (what TRL and KerasHub's perplexity do).
- `"sequences"`: the mean over sequences of each sequence's mean over its
  real tokens; a sequence without real tokens is left out.

A padded position (weight 0) adds exactly 0 to the loss and to every
gradient. A batch without any real token gives a loss of 0, not NaN.
Relational terms (whose value for one example depends on the others) are
refused: the padded positions would enter the other tokens' values.
"""

from keras import ops

from keras_distill.terms import common as kd_losses

TOKEN_REDUCTIONS = ("tokens", "sequences")
VOCABULARY_MAPS = ("same", "truncate")


def check_token_reduction(value):
    """Returns `value` if it is one of `TOKEN_REDUCTIONS`, else a ValueError."""
    if value not in TOKEN_REDUCTIONS:
        raise ValueError(
            f"`token_reduction` must be one of {TOKEN_REDUCTIONS}. Received: "
            f"token_reduction={value!r}"
        )
    return value


def check_vocabulary(value):
    """Returns `value` if it is one of `VOCABULARY_MAPS`, else a ValueError."""
    if value not in VOCABULARY_MAPS:
        raise ValueError(
            f"`teacher_vocabulary` must be one of {VOCABULARY_MAPS} ('truncate': "
            "use the teacher's first `vocab` logits, for a teacher whose "
            f"embedding is padded). Received: teacher_vocabulary={value!r}"
        )
    return value


def is_sequence(outputs):
    """Whether `outputs` (a tensor) has a static rank above 2."""
    rank = kd_losses._rank(outputs)
    return rank is not None and rank > 2


def output_rank(model):
    """The static rank of a single-output model's outputs, or None."""
    try:
        shape = model.output_shape
    except (AttributeError, ValueError, RuntimeError):
        return None
    if not isinstance(shape, tuple) or not all(
        d is None or isinstance(d, int) for d in shape
    ):
        return None
    return len(shape)


def token_weights(x, sample_weight, token_shape):
    """The batch's token weights, `(batch, seq...)` float32, or None.

    `sample_weight` of the tokens' shape is used as it is; one of shape
    `(batch,)` or `(batch, 1)` weights each sequence's tokens; without it,
    a `padding_mask` of dict inputs is the mask. `token_shape` is the
    outputs' shape without the class axis (static dims or None).
    """
    if sample_weight is None:
        if isinstance(x, dict) and "padding_mask" in x:
            sample_weight = x["padding_mask"]
        else:
            return None
    weights = ops.cast(sample_weight, "float32")
    expected = tuple(token_shape)
    if getattr(weights.shape, "rank", 0) is None:
        raise ValueError(
            "`sample_weight` reached the step with an unknown rank: Keras relaxes "
            "a traced step after calls with sample weights of different ranks. "
            "Pass one shape in every call: (batch, "
            f"{', '.join(str(d) for d in expected[1:])}) per token, or (batch,) "
            "per sequence."
        )
    if len(weights.shape) == len(expected) + 1 and weights.shape[-1] == 1:
        weights = ops.squeeze(weights, -1)  # (batch, seq, 1): one per token
    rank = len(weights.shape)
    if rank == 1:
        return ops.reshape(weights, (-1,) + (1,) * (len(expected) - 1))
    if rank == len(expected) and all(d == 1 for d in weights.shape[1:]):
        return weights  # one weight per sequence, broadcast over its tokens
    if rank != len(expected) or any(
        e is not None and g is not None and e != g
        for e, g in zip(expected[1:], weights.shape[1:])
    ):
        raise ValueError(
            "For sequence outputs, `sample_weight` (or the inputs' `padding_mask`) "
            "must be one weight per token, of shape (batch, "
            f"{', '.join(str(d) for d in expected[1:])}), or one per sequence, of "
            f"shape (batch,). Received a mask of shape {tuple(weights.shape)}."
        )
    return weights


def check_token_labels(labels, output_shape):
    """Raises a ValueError unless `labels` hold one class id per token.

    `output_shape` is the student's `(batch, seq..., vocab)`; sparse labels
    are `(batch, seq...)`.
    """
    expected = tuple(output_shape)[:-1]
    shape = tuple(labels.shape)
    if len(shape) == len(expected) + 1 and shape[-1] not in (None, 1):
        raise ValueError(
            f"The labels have shape {shape}: they look one-hot, but the loss is "
            "sparse categorical cross-entropy, which takes one token id per "
            f"position, of shape (batch, {', '.join(map(str, expected[1:]))}). "
            "Pass `np.argmax(y, axis=-1)`."
        )
    if len(shape) != len(expected) or any(
        e is not None and g is not None and e != g
        for e, g in zip(expected[1:], shape[1:])
    ):
        raise ValueError(
            "For sequence outputs the labels must be one token id per position, "
            f"of shape (batch, {', '.join(map(str, expected[1:]))}) for outputs of "
            f"shape {tuple(output_shape)}. Received labels of shape {shape}."
        )


def check_shapes(t_shape, s_shape, vocabulary, teacher="teacher"):
    """Raises a ValueError naming both shapes if the tokens cannot be compared.

    The ranks and the sequence lengths must match; the vocabularies too,
    unless `vocabulary` is `"truncate"` and the teacher's is the larger.
    `t_shape`, `s_shape`: static output shapes (None for unknown dims).
    """
    t_shape, s_shape = tuple(t_shape), tuple(s_shape)
    shapes = f"{teacher} outputs of shape {t_shape}, student outputs of shape {s_shape}"
    if len(t_shape) != len(s_shape):
        raise ValueError(
            "Teacher and student outputs must have the same rank: one "
            f"distribution per token for both. Received: {shapes}."
        )
    for t_dim, s_dim in zip(t_shape[1:-1], s_shape[1:-1]):
        if t_dim is not None and s_dim is not None and t_dim != s_dim:
            raise ValueError(
                "Teacher and student must output the same sequence length. "
                f"Received: {shapes}."
            )
    t_vocab, s_vocab = t_shape[-1], s_shape[-1]
    if t_vocab is None or s_vocab is None or t_vocab == s_vocab:
        return
    if vocabulary == "truncate" and t_vocab > s_vocab:
        return
    hint = (
        " Pass `teacher_vocabulary='truncate'` to use the teacher's first "
        f"{s_vocab} logits (a teacher whose embedding is padded)."
        if t_vocab > s_vocab
        else ""
    )
    raise ValueError(
        f"Teacher and student vocabularies differ: the {teacher} predicts "
        f"{t_vocab} tokens, the student {s_vocab} ({shapes}).{hint}"
    )


def check_token_shapes(teacher, student, vocabulary):
    """The teacher's logits mapped to the student's vocabulary (`check_shapes`)."""
    check_shapes(teacher.shape, student.shape, vocabulary)
    t_vocab, s_vocab = teacher.shape[-1], student.shape[-1]
    if t_vocab is not None and s_vocab is not None and t_vocab > s_vocab:
        return teacher[..., :s_vocab]
    return teacher


def reduce_tokens(values, weights, reduction="tokens"):
    """The mean of per-token `values` over the real tokens, a float32 scalar.

    Args:
        values: Per-token losses, `(batch, seq...)`.
        weights: Token weights of the same shape, or None (every token).
        reduction: `"tokens"` or `"sequences"` (see the module docstring).
    """
    values = ops.cast(values, "float32")
    ones = ops.ones_like(values)
    weights = ones if weights is None else ops.cast(weights, "float32") * ones
    weighted = values * weights
    if reduction == "tokens":
        return ops.divide_no_nan(ops.sum(weighted), ops.sum(weights))
    batch = ops.shape(values)[0]
    per_sequence = ops.divide_no_nan(
        ops.sum(ops.reshape(weighted, (batch, -1)), axis=1),
        ops.sum(ops.reshape(weights, (batch, -1)), axis=1),
    )
    has_tokens = ops.cast(
        ops.sum(ops.reshape(weights, (batch, -1)), axis=1) > 0, "float32"
    )
    return ops.divide_no_nan(ops.sum(per_sequence), ops.sum(has_tokens))


def flat(tensor):
    """`(batch, seq..., classes)` as `(tokens, classes)`."""
    return ops.reshape(tensor, (-1, ops.shape(tensor)[-1]))


def term_losses(
    terms,
    teacher,
    student,
    labels,
    weights,
    temperature,
    reduction,
    hard_label_loss=None,
):
    """Each term's loss over the tokens, and the hard-label loss if asked.

    The terms see `(tokens, classes)` logits (and `(tokens,)` labels), so
    every term of the registry applies per token unchanged. With
    `hard_label_loss={"from_logits": bool}`, the sparse cross-entropy of the
    labels is computed in the same pass (one student gradient for all).

    Returns:
        `(losses, hard)`: one scalar per term, and the hard-label loss (or
        None).
    """
    relational = [term.name for term in terms if term.relational]
    if relational:
        raise ValueError(
            f"The distillation terms {relational} are relational (an example's "
            "value depends on the other examples of the batch), so on sequence "
            "outputs the padded tokens would change the real tokens' values. Use "
            "a per-token term such as 'kd', 'reverse_kl' or 'jsd'."
        )
    token_shape = ops.shape(student)[:-1]
    flat_labels = None if labels is None else ops.reshape(labels, (-1,))
    functions = [
        (lambda t, s, y, term=term: term.compute(t, s, y, temperature))
        for term in terms
    ]
    if hard_label_loss is not None:
        functions.append(_SparseCrossEntropy(hard_label_loss["from_logits"]))
    fused = [not term.weights for term in terms] + [hard_label_loss is not None]
    chunk = chunk_size(student.shape[-1]) if _chunks_here() else 0
    values = [None] * len(functions)
    together = [i for i, f in enumerate(fused) if f and chunk]
    kinds = [term.closed_form for term in terms] + ["cross_entropy"]
    closed = all(kinds[i] is not None for i in together) and (
        hard_label_loss is None or hard_label_loss["from_logits"]
    )
    if together:
        if closed:
            stacked = closed_form_values(
                [kinds[i] for i in together],
                flat(teacher),
                flat(student),
                flat_labels,
                temperature,
                chunk,
            )
        else:
            stacked = chunked_values(
                [functions[i] for i in together],
                flat(teacher),
                flat(student),
                flat_labels,
                chunk,
            )
        for row, i in enumerate(together):
            values[i] = stacked[row]
    for i, function in enumerate(functions):
        if values[i] is None:
            values[i] = function(flat(teacher), flat(student), flat_labels)
    losses = [
        reduce_tokens(ops.reshape(v, token_shape), weights, reduction) for v in values
    ]
    if hard_label_loss is None:
        return losses, None
    return losses[:-1], losses[-1]


def _chunks_here() -> bool:
    """Whether large vocabularies go through `chunked_values` (TensorFlow only).

    Another backend (JAX) computes every token at once: the same values,
    with `(tokens, vocab)` temporaries for the whole batch.
    """
    import keras

    return keras.backend.backend() == "tensorflow"


class _SparseCrossEntropy:
    """The hard-label loss per token, `f(teacher, student, labels)`.

    From logits, it declares `closed_form = "cross_entropy"`, so a chunked
    pass may compute its value and gradient itself (`chunked_values`).
    """

    def __init__(self, from_logits):
        self.from_logits = from_logits
        self.closed_form = "cross_entropy" if from_logits else None

    def __call__(self, teacher, student, labels):
        return _sparse_ce(labels, student, self.from_logits)


def _sparse_ce(labels, logits, from_logits):
    import keras

    return keras.losses.sparse_categorical_crossentropy(
        labels, ops.cast(logits, "float32"), from_logits=from_logits
    )


# A chunk holds at most this many float32 per `(tokens, vocab)` temporary
# (2 MiB: a chunk's temporaries stay in the cache, which on 2 CPU cores made
# the KD step at vocab 32k ~15% faster than 8 MiB chunks), and vocabularies
# from this size on are chunked.
CHUNK_FLOATS = 2**19
CHUNK_VOCAB = 4096


def chunk_size(vocab, floats=None):
    """Tokens per chunk for a static vocabulary size, or 0 for no chunking."""
    if vocab is None or vocab < CHUNK_VOCAB:
        return 0
    return max(1, (floats or CHUNK_FLOATS) // vocab)


def chunked_values(functions, teacher, student, labels, chunk):
    """Per-token `functions(teacher, student, labels)`, `chunk` tokens at a time.

    Each function maps `(rows, vocab)` logits (and `(rows,)` labels or None)
    to `(rows,)` values; the result stacks them, `(len(functions), tokens)`.
    The same values and student gradient as calling them on all the tokens,
    but their temporaries (softmaxes, log-ratios, what their gradients keep)
    exist for one chunk at a time: the forward pass keeps only the values,
    and the backward pass recomputes each chunk and writes one gradient for
    all the functions, in place. Beyond the two logit tensors, a step then
    holds about one chunk per temporary (`distiller.chunked`).
    TensorFlow backend; no gradient reaches the teacher (it is frozen) or
    anything the functions close over.
    """
    from keras_distill.distiller import chunked

    return chunked.chunked_values(functions, teacher, student, labels, chunk)


def closed_form_values(kinds, teacher, student, labels, temperature, chunk):
    """`chunked_values` of closed forms (`DistillationTerm.closed_form`).

    `kinds` names each function: `"forward_kl"` (the KD term) or
    `"cross_entropy"` (the hard-label loss). Their gradients are written in
    the forward pass, so the backward pass does no autodiff and no teacher
    softmax (`distiller.chunked.closed_form_values`). TensorFlow backend.
    """
    from keras_distill.distiller import chunked

    return chunked.closed_form_values(
        kinds, teacher, student, labels, temperature, chunk
    )


def sparse_ce_tokens(labels, logits, weights, reduction, from_logits=True):
    """The hard-label cross-entropy over the real tokens (the default loss)."""
    import keras

    values = keras.losses.sparse_categorical_crossentropy(
        labels, ops.cast(logits, "float32"), from_logits=from_logits
    )
    return reduce_tokens(values, weights, reduction)
