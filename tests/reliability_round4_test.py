"""Issue 29's fresh probe (reliability, round 4): the silent and unclear cases it found."""

import keras
import numpy as np
import pytest

import keras_distill as kd

RNG = np.random.default_rng(0)
X = RNG.normal(size=(32, 8)).astype("float32")
Y = RNG.integers(0, 10, 32)


def _model(classes=10):
    model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(classes)])
    return model


def _distiller(**kwargs):
    return kd.Distiller(_model(), _model(), **kwargs)


# -- compile() and fit() arguments -----------------------------------------------


def test_loss_weights_without_loss_refused():
    # Keras weighs only a compiled loss: with loss=None they were ignored.
    distiller = _distiller()
    with pytest.raises(ValueError, match=r"loss_weights=\[0.5\].*no `loss`"):
        distiller.compile(optimizer="adam", loss_weights=[0.5])
    distiller.compile(  # with the loss they weigh: accepted
        optimizer="adam",
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        loss_weights=[0.5],
    )


@pytest.mark.parametrize(
    "kwargs, name",
    [
        ({"batch_size": 0}, "batch_size"),  # Keras trained at 32
        ({"epochs": -3}, "epochs"),  # Keras trained nothing, no word
        ({"epochs": 2.5}, "epochs"),
        ({"initial_epoch": -1}, "initial_epoch"),
    ],
)
def test_fit_counts_checked(kwargs, name):
    distiller = _distiller()
    distiller.compile(optimizer="adam")
    before = [w.copy() for w in distiller.student.get_weights()]
    with pytest.raises(ValueError, match=f"`{name}` must be a whole number"):
        distiller.fit(X, Y, verbose=0, **kwargs)
    assert all(
        np.array_equal(a, b) for a, b in zip(before, distiller.student.get_weights())
    )


def test_fit_counts_checked_by_position():
    distiller = _distiller()
    distiller.compile(optimizer="adam")
    with pytest.raises(ValueError, match="`batch_size` must be a whole number"):
        distiller.fit(X, Y, 0, 1, 0)


# -- terms -----------------------------------------------------------------------


def test_attention_transfer_refuses_flat_features():
    # The map of (batch, units) features is one number per example, normalised
    # to 1: the hint's loss was always 0 and taught nothing.
    t = RNG.normal(size=(4, 16)).astype("float32")
    s = RNG.normal(size=(4, 8)).astype("float32")
    with pytest.raises(ValueError, match="spatial axes"):
        kd.losses.attention_transfer_loss(t, s)
    maps = RNG.normal(size=(4, 3, 3, 2)).astype("float32")
    assert np.all(np.isfinite(kd.losses.attention_transfer_loss(maps, maps * 2)))
