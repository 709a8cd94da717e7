"""Greedy decoding for fixed-length causal language models, as one TF graph.

A model mapping `(batch, length)` token ids to `(batch, length, vocab)`
next-token logits (`kd.models.causal_lm`, a KerasHub CausalLM's functional
graph, any causal Keras model) continues each prompt: for every position
`i >= prompt_length`, token `i` becomes the argmax of the logits at `i - 1`.
The loop is a `tf.while_loop` over positions (no Python loop per token), and
the model runs once per new token on the whole window (no key/value cache:
simple and exact for a small model; KerasHub's own `generate()` caches).
"""


def greedy_continue(model, token_ids, prompt_lengths):
    """Greedy continuation of each prompt up to the model's window.

    Args:
        model: A causal `keras.Model`, `(batch, length)` int ids ->
            `(batch, length, vocab)` logits.
        token_ids: `(batch, length)` int32 ids; only the first
            `prompt_lengths[b]` of row `b` are read.
        prompt_lengths: `(batch,)` int32, each in `[1, length]`.

    Returns:
        `(batch, length)` int32: each prompt followed by its greedy
        continuation.

    Example:

    ```python
    model = kd.models.causal_lm(kd.text.VOCAB_SIZE, 32)
    ids, _, _ = kd.text.encode(["The movie"], 32)
    out = kd.decoding.greedy_continue(model, ids, [1 + len("The movie")])
    print(kd.text.decode(out[0]))
    ```
    """
    import tensorflow as tf

    ids = tf.cast(tf.convert_to_tensor(token_ids), "int32")
    lengths = tf.cast(tf.reshape(tf.convert_to_tensor(prompt_lengths), [-1]), "int32")
    length = tf.shape(ids)[1]
    tf.debugging.assert_equal(
        tf.shape(lengths)[0],
        tf.shape(ids)[0],
        message="prompt_lengths must give one length per row of token_ids",
    )
    tf.debugging.assert_greater_equal(
        lengths, 1, message="every prompt needs at least one token"
    )
    tf.debugging.assert_less_equal(
        lengths, length, message="a prompt is longer than the model's window"
    )
    positions = tf.range(length)[None, :]
    # Positions past the prompt start as 0 (any id would do: causal models
    # never read them before they are written).
    ids = tf.where(positions < lengths[:, None], ids, tf.zeros_like(ids))

    def body(i, ids):
        logits = model(ids, training=False)
        choice = tf.cast(tf.argmax(logits[:, i - 1], axis=-1), "int32")
        write = (positions == i) & (i >= lengths[:, None])
        return i + 1, tf.where(write, choice[:, None], ids)

    start = tf.maximum(tf.reduce_min(lengths), 1)
    _, ids = tf.while_loop(lambda i, _: i < length, body, (start, ids))
    return ids


def greedy_endpoint(model):
    """`greedy(token_ids, prompt_lengths) -> {"token_ids": ...}` for export.

    The function an exported SavedModel serves as its `greedy` signature
    (`kd.export_student` adds it for a token language model).
    """

    def greedy(token_ids, prompt_lengths):
        return {"token_ids": greedy_continue(model, token_ids, prompt_lengths)}

    return greedy
