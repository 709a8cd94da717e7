"""Per-token divergences chunk by chunk, with hand-written gradients (TensorFlow).

The token-level pass (`tokens.term_losses`) over `(tokens, vocab)` logits
must not hold a `(tokens, vocab)` float32 temporary per softmax, log-ratio
or gradient: at a vocabulary of 32k, each is as large as the logits. Both
functions here run `chunk` tokens at a time in a `tf.while_loop` and give a
`tf.custom_gradient` whose student gradient is written, chunk by chunk and
in place, into one `(tokens, vocab)` buffer: the teacher logits' own buffer
when nothing else holds them (each chunk of them is read before it is
overwritten), else a copy of them (`tf.raw_ops.Snapshot` forwards the
buffer or copies it, at run time). Beyond the two logit tensors, a step
then holds about one chunk per temporary.

- `chunked_values`: any per-token functions (every divergence term); the
  backward pass recomputes each chunk under a tape.
- `closed_form_values`: the forward KL of the KD term and the hard-label
  cross-entropy. The forward pass computes the values and writes the KD
  gradient's direction `T * (softmax(s / T) - softmax(t / T))` where the
  teacher's logits were, so the backward pass does no teacher softmax and
  no autodiff: one student softmax per chunk for the cross-entropy's
  `softmax(s) - onehot(y)`, scaled and added.

TensorFlow backend only (the JAX step has its own). No gradient reaches the
teacher (it is frozen), `temperature` or anything the functions close over.
"""

import tensorflow as tf

FORWARD_KL = "forward_kl"
CROSS_ENTROPY = "cross_entropy"
CLOSED_FORMS = (FORWARD_KL, CROSS_ENTROPY)


def _exclusive(tensor):
    """`tensor`'s values in a buffer that may be written in place.

    Its own buffer if this is the last use of `tensor` (nothing else holds
    it), else a copy: `Snapshot` forwards or copies at run time.
    """
    return tf.raw_ops.Snapshot(input=tensor)


def _write_rows(buffer, start, part, after):
    """`buffer` with rows `start:start + len(part)` replaced by `part`, in place.

    `after`: the tensors that must be computed first (those read the rows).
    """
    rows = tf.range(start, start + tf.shape(part)[0])
    with tf.control_dependencies(after):
        return tf.raw_ops.InplaceUpdate(x=buffer, i=rows, v=part)


class _Chunks:
    """Row ranges of `count` tokens, `chunk` at a time, for `tf.while_loop`."""

    def __init__(self, count, chunk):
        self.chunk = chunk
        self.count = count
        self.size = (count + chunk - 1) // chunk

    def start(self, i):
        return i * self.chunk

    def piece(self, tensor, i):
        """Rows of chunk `i` of `tensor` (None stays None), with its rank."""
        if tensor is None:
            return None
        part = tensor[i * self.chunk : (i + 1) * self.chunk]
        part.set_shape([None, *tensor.shape[1:]])
        return part

    def copy(self, tensor, i):
        """A copy of chunk `i`'s rows (for rows overwritten once read)."""
        rows = tf.range(i * self.chunk, tf.minimum((i + 1) * self.chunk, self.count))
        part = tf.gather(tensor, rows)
        part.set_shape([None, *tensor.shape[1:]])
        return part

    def loop(self, body, state):
        """Runs `body(i, *state) -> (i + 1, *state)` over the chunks."""
        result = tf.while_loop(
            lambda i, *_: i < self.size,
            body,
            (tf.constant(0), *state),
            parallel_iterations=1,
        )
        return result[1:]

    def stack(self, array, like):
        """The `(tokens, k)` concatenation of a TensorArray of chunk rows."""
        result = tf.reshape(array.concat(), tf.shape(like))
        result.set_shape(like.shape)
        return result


def _cross_entropy(s, y):
    """The sparse cross-entropy of `(rows, vocab)` logits, from one softmax."""
    lse = tf.reduce_max(s, -1) - tf.math.log(tf.reduce_max(tf.nn.softmax(s), -1))
    return lse - tf.gather(s, tf.cast(y, "int32"), batch_dims=1)


def _add_cross_entropy_gradient(gradient, s, y, u):
    """`gradient + u * (softmax(s) - onehot(y))`, `u` one scale per row."""
    gradient = gradient + tf.nn.softmax(s) * u[:, None]
    y = tf.cast(y, "int32")
    index = tf.stack([tf.range(tf.shape(y)[0]), y], 1)
    return tf.tensor_scatter_nd_sub(gradient, index, u)


def _as_float32(teacher, student):
    teacher = tf.stop_gradient(tf.cast(teacher, "float32"))
    return teacher, tf.cast(student, "float32")


def chunked_values(functions, teacher, student, labels, chunk):
    """Per-token `functions(teacher, student, labels)`, `chunk` tokens at a time.

    Each function maps `(rows, vocab)` logits (and `(rows,)` labels or None)
    to `(rows,)` values; the result stacks them, `(len(functions), tokens)`.
    The same values and student gradient as calling them on all the tokens,
    but their temporaries exist for one chunk at a time: the forward pass
    keeps only the values, and the backward pass recomputes each chunk and
    writes one gradient for all the functions in place (see the module
    docstring). A function with `closed_form = "cross_entropy"` (the
    hard-label loss, `sparse_categorical_crossentropy(labels, student,
    from_logits=True)`) is computed from its closed form instead, value and
    gradient, without the cross-entropy kernel or autodiff.
    """
    teacher, student = _as_float32(teacher, student)
    chunks = _Chunks(tf.shape(student)[0], chunk)
    count = len(functions)
    closed = [
        i
        for i, f in enumerate(functions)
        if getattr(f, "closed_form", None) == CROSS_ENTROPY
    ]
    general = [i for i in range(count) if i not in closed]

    def evaluate(t, s, y, rows=range(count)):  # `(rows, len(rows))`
        return tf.stack(
            [
                _cross_entropy(s, y) if i in closed else functions[i](t, s, y)
                for i in rows
            ],
            1,
        )

    def gradient_of(t, s, y, upstream):
        if general:
            with tf.GradientTape() as tape:
                tape.watch(s)
                value = evaluate(t, s, y, general)
            gradient = tape.gradient(
                value,
                s,
                output_gradients=tf.gather(upstream, general, axis=1),
                unconnected_gradients=tf.UnconnectedGradients.ZERO,
            )
        else:
            gradient = tf.zeros_like(s)
        if closed:
            u = tf.reduce_sum(tf.gather(upstream, closed, axis=1), 1)
            gradient = _add_cross_entropy_gradient(gradient, s, y, u)
        return gradient

    @tf.custom_gradient
    def values(student):
        # The teacher passes through the loop as the buffer the backward
        # pass writes into (taken here, where this is its last use).
        def forward(i, array, buffer):
            rows = evaluate(
                chunks.piece(buffer, i),
                chunks.piece(student, i),
                chunks.piece(labels, i),
            )
            return i + 1, array.write(i, rows), buffer

        array = tf.TensorArray("float32", size=chunks.size, infer_shape=False)
        array, buffer = chunks.loop(forward, (array, _exclusive(teacher)))
        result = chunks.stack(array, student[:, :count])

        def grad(upstream):
            upstream = tf.transpose(tf.reshape(upstream, [count, -1]))

            def backward(i, buffer):
                t = chunks.copy(buffer, i)
                s = chunks.piece(student, i)
                y = chunks.piece(labels, i)
                gradient = gradient_of(t, s, y, chunks.piece(upstream, i))
                return i + 1, _write_rows(buffer, chunks.start(i), gradient, [t])

            (out,) = chunks.loop(backward, (buffer,))
            return out

        return tf.transpose(result), grad

    return values(student)


def closed_form_values(kinds, teacher, student, labels, temperature, chunk):
    """Per-token values of closed-form functions, `chunk` tokens at a time.

    Args:
        kinds: One of `CLOSED_FORMS` per function: `"forward_kl"`, the KD
            term's `T^2 * KL(softmax(t / T) || softmax(s / T))`, or
            `"cross_entropy"`, the sparse cross-entropy of `labels` and the
            student's logits.
        teacher, student: `(tokens, vocab)` logits.
        labels: `(tokens,)` class ids (needed for `"cross_entropy"`).
        temperature: A scalar `T > 0`.
        chunk: Tokens per chunk.

    Returns:
        `(len(kinds), tokens)` float32 values, whose student gradient is
        the closed form: `T * (softmax(s / T) - softmax(t / T))` and
        `softmax(s) - onehot(y)` (see the module docstring).
    """
    unknown = [k for k in kinds if k not in CLOSED_FORMS]
    if unknown:
        raise ValueError(
            f"Unknown closed forms {unknown}: expected each of {CLOSED_FORMS}."
        )
    kl_rows = [i for i, k in enumerate(kinds) if k == FORWARD_KL]
    ce_rows = [i for i, k in enumerate(kinds) if k == CROSS_ENTROPY]
    if ce_rows and labels is None:
        raise ValueError("The cross-entropy needs labels. Received: labels=None.")
    teacher, student = _as_float32(teacher, student)
    temperature = tf.stop_gradient(tf.cast(temperature, "float32"))
    chunks = _Chunks(tf.shape(student)[0], chunk)
    unit = tf.equal(temperature, 1.0)

    def log_normalizer(logits, probabilities):
        # logsumexp from the softmax: max(x) - log(max(softmax(x))).
        return tf.reduce_max(logits, -1) - tf.math.log(tf.reduce_max(probabilities, -1))

    def soften(logits):  # logits / T, without an op at T = 1
        return tf.cond(unit, lambda: logits, lambda: logits / temperature)

    def cross_entropy(s, y, soft_normalizer):
        # At T = 1 the softened normalizer is the cross-entropy's own.
        lse = tf.cond(unit, lambda: soft_normalizer, lambda: tf.reduce_logsumexp(s, -1))
        return lse - tf.gather(s, tf.cast(y, "int32"), batch_dims=1)

    @tf.custom_gradient
    def values(student):
        def forward(i, array, buffer):
            s = chunks.piece(student, i)
            s_soft = soften(s)
            q = tf.nn.softmax(s_soft)
            lse_s = log_normalizer(s_soft, q)
            rows = [None] * len(kinds)
            for row in ce_rows:
                rows[row] = cross_entropy(s, chunks.piece(labels, i), lse_s)
            if not kl_rows:
                return i + 1, array.write(i, tf.stack(rows, 1)), buffer
            t = chunks.copy(buffer, i)
            t_soft = soften(t)
            p = tf.nn.softmax(t_soft)
            kl = (
                tf.reduce_sum(p * (t_soft - s_soft), -1)
                + lse_s
                - log_normalizer(t_soft, p)
            )
            for row in kl_rows:
                rows[row] = tf.square(temperature) * kl
            rows = tf.stack(rows, 1)
            # The KD gradient's direction, where this chunk of the teacher was.
            direction = q - p
            direction = tf.cond(
                unit, lambda: direction, lambda: temperature * direction
            )
            buffer = _write_rows(buffer, chunks.start(i), direction, [t, rows])
            return i + 1, array.write(i, rows), buffer

        array = tf.TensorArray("float32", size=chunks.size, infer_shape=False)
        buffer = _exclusive(teacher) if kl_rows else teacher
        array, buffer = chunks.loop(forward, (array, buffer))
        result = chunks.stack(array, student[:, : len(kinds)])

        def grad(upstream):
            upstream = tf.reshape(upstream, [len(kinds), -1])
            if kl_rows:
                kl_scale = tf.reduce_sum(tf.gather(upstream, kl_rows), 0)[:, None]
                if not ce_rows:
                    return buffer * kl_scale
            ce_scale = tf.reduce_sum(tf.gather(upstream, ce_rows), 0)

            def backward(i, out):
                s = chunks.piece(student, i)
                y = tf.cast(chunks.piece(labels, i), "int32")
                u = chunks.piece(ce_scale, i)
                gradient = tf.nn.softmax(s) * u[:, None]
                read = [gradient]
                if kl_rows:
                    direction = chunks.copy(out, i)
                    gradient = gradient + direction * chunks.piece(kl_scale, i)
                    read.append(direction)
                index = tf.stack([tf.range(tf.shape(y)[0]), y], 1)
                gradient = tf.tensor_scatter_nd_sub(gradient, index, u)
                return i + 1, _write_rows(out, chunks.start(i), gradient, read)

            out = buffer if kl_rows else _exclusive(teacher)
            (out,) = chunks.loop(backward, (out,))
            return out

        return tf.transpose(result), grad

    return values(student)
