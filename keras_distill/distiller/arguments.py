"""Arguments of the `Distiller`: checks, term resolution, the other APIs' names.

Resolves `distillation_loss` into terms (per output for multi-output models),
checks term names and weights, teacher weights and temperatures, and maps
keras-io's and `keras.distillation`'s argument names onto ours.
"""

import keras

from keras_distill import _compat
from keras_distill import params as kd_params
from keras_distill import terms as kd_terms


def check_alpha(value, warn=True):
    """Returns `value` as a float if it is a valid `alpha`, else raises."""
    return kd_params.check("alpha", value, warn=warn)


def check_temperature(value, warn=True):
    """Returns `value` as a float if it is a valid `temperature`, else raises.

    `warn=False`: no warning for an unusual value (its variable gives it).
    """
    return kd_params.check("temperature", value, warn=warn)


# Names a term may not take: its log key `<name>_loss` or weight `<name>_weight`
# would clash with the distiller's own.
_RESERVED_TERM_NAMES = ("student", "distillation", "hint", "total")


def _resolve_terms(distillation_loss):
    """The list of `DistillationTerm`s from `distillation_loss` (one or a list)."""
    specs = (
        list(distillation_loss)
        if isinstance(distillation_loss, list | tuple)
        else [distillation_loss]
    )
    if not specs:
        raise ValueError(
            "`distillation_loss` must name at least one term. Received: "
            f"distillation_loss={distillation_loss!r}"
        )
    terms = []
    for i, spec in enumerate(specs):
        argument = "distillation_loss" if len(specs) == 1 else f"distillation_loss[{i}]"
        terms.append(kd_terms.get_term(spec, argument))
    _check_term_names(terms)
    return terms


def _resolve_output_terms(distillation_loss, count):
    """Terms per output of a model with `count` outputs.

    `distillation_loss` is one spec (applied to every output) or a list with
    one entry per output: a spec, a list of specs, or `None` (no term on
    that output). Terms made from a name get the output's index in their
    name (`"kd_0"`, `"kd_1"`).

    Returns:
        `(terms, outputs, layout, given)`: the flat list of terms, the output
        index of each, the layout to save (per output: `None`, a term index
        or a list of them) and the name each term was given as (or `""`).
    """
    entries = (
        list(distillation_loss)
        if isinstance(distillation_loss, list | tuple)
        else [distillation_loss] * count
    )
    if len(entries) != count:
        raise ValueError(
            f"The student and teacher have {count} outputs, so `distillation_loss` "
            f"needs one entry per output (a term, a list of terms, or None to skip "
            f"the output). Received {len(entries)} entries: "
            f"distillation_loss={distillation_loss!r}"
        )
    terms, outputs, layout, given = [], [], [], []
    for output, entry in enumerate(entries):
        if entry is None:
            layout.append(None)
            continue
        many = isinstance(entry, list | tuple)
        indices = []
        for j, spec in enumerate(entry if many else [entry]):
            argument = f"distillation_loss[{output}]" + (f"[{j}]" if many else "")
            term = kd_terms.get_term(spec, argument)
            if isinstance(spec, str):
                term = kd_terms.make(spec, name=f"{term.name}_{output}")
            indices.append(len(terms))
            terms.append(term)
            outputs.append(output)
            given.append(spec if isinstance(spec, str) else "")
        layout.append(indices if many else indices[0])
    if not terms:
        raise ValueError(
            "`distillation_loss` must put a term on at least one output. Received: "
            f"distillation_loss={distillation_loss!r}"
        )
    _check_term_names(terms)
    return terms, outputs, layout, given


def _check_term_names(terms):
    names = [term.name for term in terms]
    for name in names:
        if not isinstance(name, str) or not name.isidentifier():
            raise ValueError(
                "A distillation term's name must be a Python identifier (it "
                f"names the `{name}_loss` log and `{name}_weight`). Received a "
                f"term named {name!r}; pass `name=` to the term."
            )
        if name in _RESERVED_TERM_NAMES:
            raise ValueError(
                f"A distillation term cannot be named {name!r}: its log key "
                f"`{name}_loss` would clash with the Distiller's own. Pass another "
                "`name=` to the term."
            )
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ValueError(
            "Each distillation term needs its own name (it names the "
            f"`<name>_loss` log and the `<name>_weight` variable). Received the "
            f"names {names}: {duplicates} appear more than once. Pass `name=` to "
            "the terms, e.g. `kd.terms.make('kd', standardize=True, name='ls_kd')`."
        )
    if len(set(map(id, terms))) != len(terms):
        raise ValueError("The same term instance appears twice in `distillation_loss`.")


def _keras_distillation_arguments(kwargs, distillation_loss, alpha):
    """Maps `keras.distillation.Distiller`'s argument names onto ours.

    `distillation_losses` is `distillation_loss` (our terms; keras's own loss
    objects are refused by `losses.get_term` with the equivalent call) and
    `student_loss_weight` is `alpha` (the same formula,
    `w * student + (1 - w) * distillation`). Removes them from `kwargs`.
    """
    if "distillation_losses" in kwargs:
        losses = kwargs.pop("distillation_losses")
        if distillation_loss != "kd":
            raise ValueError(
                "Pass the terms once: `distillation_loss=` or keras.distillation's "
                f"`distillation_losses=`. Received: distillation_loss="
                f"{distillation_loss!r}, distillation_losses={losses!r}"
            )
        distillation_loss = list(losses) if isinstance(losses, list | tuple) else losses
    if "student_loss_weight" in kwargs:
        weight = kwargs.pop("student_loss_weight")
        if alpha != kd_params.SPECS["alpha"].default:
            raise ValueError(
                "`student_loss_weight` (keras.distillation) is this Distiller's "
                f"`alpha`; pass one of them. Received: alpha={alpha!r}, "
                f"student_loss_weight={weight!r}"
            )
        alpha = weight
    return distillation_loss, alpha


def _check_term_weights(weights, terms):
    """One checked weight per term (a list of floats), or None."""
    if weights is None:
        return None
    names = [term.name for term in terms]
    if not isinstance(weights, list | tuple) and len(terms) == 1:
        weights = [weights]
    if not isinstance(weights, list | tuple) or len(weights) != len(terms):
        count = (
            f"{len(weights)} weight{'' if len(weights) == 1 else 's'}"
            if isinstance(weights, list | tuple)
            else f"a {type(weights).__name__}"
        )
        raise ValueError(
            f"`distillation_loss_weights` must be a list with one weight per "
            f"distillation term ({len(terms)}: {names}). Received {count}: "
            f"distillation_loss_weights={weights!r}"
        )
    return [
        kd_params.check(
            kd_params.term_weight_name(name), weight, f"distillation_loss_weights[{i}]"
        )
        for i, (name, weight) in enumerate(zip(names, weights))
    ]


def _check_teacher_weights(weights, count):
    """Normalised non-negative finite weights, one per teacher."""
    if weights is None:
        return [1.0 / count] * count
    message = (
        f"`teacher_weights` must be {count} finite non-negative numbers (one per "
        f"teacher) with a positive sum. Received: teacher_weights={weights!r}"
    )
    try:
        numbers = [kd_params.check_finite(w, "teacher_weights") for w in weights]
    except (TypeError, ValueError):
        raise ValueError(message) from None
    if len(numbers) != count or any(w < 0 for w in numbers) or sum(numbers) <= 0:
        raise ValueError(message)
    total = sum(numbers)
    return [w / total for w in numbers]


def _check_teacher_temperatures(temperatures, count):
    if temperatures is None:
        return [None] * count
    if len(temperatures) != count:
        raise ValueError(
            f"`teacher_temperatures` must have one entry per teacher ({count}). "
            f"Received: teacher_temperatures={temperatures!r}"
        )
    return [None if t is None else check_temperature(t) for t in temperatures]


def check_hint_weight(value):
    """Returns `value` as a float if it is a valid `hint_weight`, else raises."""
    return kd_params.check("hint_weight", value)


def check_keras_io_distillation_loss(terms, loss_fn):
    """Accepts keras-io's `KLDivergence()` when this distiller's term is "kd"."""
    is_kl = isinstance(loss_fn, keras.losses.KLDivergence) or (
        loss_fn in ("kl_divergence", "kld", "KLD", keras.losses.kl_divergence)
    )
    terms = list(terms)
    if len(terms) == 1 and terms[0].matches_keras_loss(loss_fn):
        return
    if is_kl:
        raise ValueError(
            "`distillation_loss_fn=KLDivergence()` (keras-io) is the Hinton KD "
            "term, but this distiller was built with distillation_loss="
            f"{[t.name for t in terms]}. Drop `distillation_loss_fn` from "
            "`compile()`; the distiller's own terms are used."
        )
    raise ValueError(
        "`compile(distillation_loss_fn=...)` (the keras-io example's) accepts "
        "only `keras.losses.KLDivergence()`, which is this distiller's 'kd' term. "
        f"Received: distillation_loss_fn={loss_fn!r}. Choose the term when "
        "building the distiller instead, e.g. `kd.Distiller(student, teacher, "
        "distillation_loss='mse')` or a `kd.losses.DistillationTerm` "
        "subclass, and call `compile(optimizer=..., loss=..., metrics=...)`."
    )


def check_loss_reads_outputs(loss, student_outputs):
    """Raises if a cross-entropy `loss` reads the student's outputs wrongly.

    Keras's cross-entropies take probabilities by default
    (`from_logits=False`), the string forms always: on a logits student they
    compute a wrong loss without a word. Checks
    `(Sparse)CategoricalCrossentropy` (instances, their names, the
    functions) and each loss of a list or dict; other losses are the user's.
    """
    if isinstance(loss, dict):
        losses = list(loss.values())
    elif isinstance(loss, list | tuple):
        losses = list(loss)
    else:
        losses = [loss]
    for item in losses:
        from_logits = _cross_entropy_from_logits(item)
        if from_logits is None or from_logits == (student_outputs == "logits"):
            continue
        reads = "logits" if from_logits else "probabilities"
        sparse = "Sparse" if _is_sparse(item) else ""
        given = (
            repr(item)
            if isinstance(item, str)
            else getattr(item, "__name__", None)
            or f"{type(item).__name__}(from_logits={from_logits})"
        )
        raise ValueError(
            f"compile(loss={given}) reads the student's outputs as {reads} "
            f"(from_logits={from_logits}), but student_outputs="
            f"{student_outputs!r}: the hard-label loss would be wrong. Pass "
            f"`loss=keras.losses.{sparse}CategoricalCrossentropy(from_logits="
            f"{student_outputs == 'logits'})`, or leave `loss=None` (its default "
            "follows student_outputs)."
        )


def check_loss_weights_have_loss(loss, args, kwargs):
    """Raises if `compile()` is given `loss_weights` but no `loss`.

    Keras weighs only a compiled loss: with `loss=None` the distiller's
    default hard-label loss runs and `loss_weights` would be dropped without
    a word. (`alpha` is the weight of the hard-label loss.)
    """
    weights = args[0] if args else kwargs.get("loss_weights")
    if loss is None and weights is not None:
        raise ValueError(
            f"compile(loss_weights={weights!r}) weighs the compiled loss, but no "
            "`loss` was given, so the weights would be ignored. Pass the loss "
            "they weigh too (e.g. `loss=keras.losses.SparseCategoricalCrossentropy("
            "from_logits=True)`), or drop `loss_weights` and set the hard-label "
            "weight with `alpha`."
        )


def _cross_entropy_functions():
    return (
        keras.losses.sparse_categorical_crossentropy,
        keras.losses.categorical_crossentropy,
    )


def _resolved(loss):
    if isinstance(loss, str):
        try:
            return keras.losses.get(loss)
        except (ValueError, TypeError):
            return None
    return loss


def _cross_entropy_from_logits(loss):
    """The `from_logits` of a categorical cross-entropy loss, else None."""
    loss = _resolved(loss)
    if loss is None:
        return None
    if loss in _cross_entropy_functions():
        return False  # the function's default, and the string forms'
    wrapped = _compat.loss_function(loss)
    if wrapped is not None and wrapped[0] in _cross_entropy_functions():
        return bool(wrapped[1].get("from_logits", False))
    return None


def _is_sparse(loss):
    loss = _resolved(loss)
    wrapped = _compat.loss_function(loss) if loss is not None else None
    function = wrapped[0] if wrapped is not None else loss
    return function is keras.losses.sparse_categorical_crossentropy
