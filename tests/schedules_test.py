import math

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_distill import schedules

ALL = [
    schedules.constant(3.5),
    schedules.linear(8.0, 2.0, 10),
    schedules.linear(1.0, 2.0, 0, 3),
    schedules.cosine(0.1, 0.9, 10),
    schedules.exponential(8.0, 1.0, 3, 2),
    schedules.step([2, 2, 5], [1.0, 7.0, 0.5, 0.1]),
    schedules.join(
        [schedules.linear(8.0, 4.0, 4), 4.0, schedules.cosine(4.0, 1.0, 3)], [4, 6]
    ),
]


def test_constant():
    assert [schedules.constant(3.5)(s) for s in (0, 7, 10**6)] == [3.5, 3.5, 3.5]


def test_linear_known_points():
    schedule = schedules.linear(8.0, 2.0, 10)
    assert [schedule(s) for s in (0, 1, 5, 10, 25)] == [8.0, 7.4, 5.0, 2.0, 2.0]


def test_linear_transition_begin():
    schedule = schedules.linear(0.0, 1.0, 4, transition_begin=2)
    assert [schedule(s) for s in range(8)] == [0, 0, 0, 0.25, 0.5, 0.75, 1, 1]


def test_zero_length_transition_jumps_at_begin():
    assert [schedules.linear(1.0, 2.0, 0, 3)(s) for s in range(5)] == [1, 1, 1, 2, 2]
    assert [schedules.cosine(1.0, 2.0, 0)(s) for s in range(2)] == [2.0, 2.0]
    assert [schedules.exponential(8.0, 1.0, 0, 1)(s) for s in range(3)] == [8, 1, 1]


def test_cosine_known_points():
    schedule = schedules.cosine(0.1, 0.9, 10)
    expected_2_5 = 0.9 - 0.8 * 0.5 * (1 + math.cos(math.pi / 4))
    assert schedule(0) == pytest.approx(0.1)
    assert schedule(2.5) == pytest.approx(expected_2_5)
    assert schedule(5) == pytest.approx(0.5)
    assert schedule(10) == pytest.approx(0.9)
    assert schedule(30) == pytest.approx(0.9)


def test_exponential_known_points():
    schedule = schedules.exponential(8.0, 1.0, 3, transition_begin=2)
    values = [schedule(s) for s in range(7)]
    assert values == pytest.approx([8, 8, 8, 4, 2, 1, 1])
    assert schedule(3.5) == pytest.approx(8.0 * 0.125**0.5)


def test_step_with_zero_length_piece():
    schedule = schedules.step([2, 2, 5], [1.0, 7.0, 0.5, 0.1])
    assert [schedule(s) for s in range(7)] == [1, 1, 0.5, 0.5, 0.5, 0.1, 0.1]


def test_join_runs_schedules_from_their_own_start():
    schedule = ALL[-1]
    expected = [8, 7, 6, 5, 4, 4, 4, 3.25, 1.75, 1, 1]
    assert [schedule(s) for s in range(11)] == pytest.approx(expected)


def test_python_calls_return_floats():
    assert isinstance(schedules.linear(1.0, 2.0, 3)(np.int64(1)), float)


@pytest.mark.parametrize("schedule", ALL, ids=lambda s: type(s).__name__)
def test_tf_function_matches_python(schedule):
    traced = tf.function(lambda s: schedule(s))
    steps = np.arange(12)
    python = [schedule(int(s)) for s in steps]
    graph = [float(traced(tf.constant(s, tf.int64))) for s in steps]
    np.testing.assert_allclose(graph, python, rtol=1e-6, atol=1e-6)
    # One trace for all steps: the step is an input, not a constant.
    assert traced.experimental_get_tracing_count() == 1
    # Elementwise on a vector of steps, too.
    np.testing.assert_allclose(
        schedule(tf.range(12)).numpy(), python, rtol=1e-6, atol=1e-6
    )


@pytest.mark.parametrize("schedule", ALL, ids=lambda s: type(s).__name__)
def test_serialization_round_trip(schedule):
    config = keras.saving.serialize_keras_object(schedule)
    restored = keras.saving.deserialize_keras_object(config)
    assert type(restored) is type(schedule)
    assert restored == schedule
    assert [restored(s) for s in range(12)] == [schedule(s) for s in range(12)]


@pytest.mark.parametrize(
    "build, match",
    [
        (lambda: schedules.linear(1.0, 2.0, -1), "transition_steps.*>= 0.*-1"),
        (lambda: schedules.linear(1.0, 2.0, 2.5), "whole number.*2.5"),
        (lambda: schedules.linear(float("nan"), 2.0, 2), "init_value.*nan"),
        (lambda: schedules.constant("a"), "number.*'a'"),
        (lambda: schedules.exponential(1.0, 0.0, 3), "same sign.*end_value=0.0"),
        (
            lambda: schedules.step([1, 2], [1.0, 2.0]),
            "values.*one more entry.*2 entries",
        ),
        (lambda: schedules.step([3, 1], [1.0, 2.0, 3.0]), r"non-decreasing.*\[3, 1\]"),
        (
            lambda: schedules.join([1.0, 2.0], []),
            "schedules.*one more entry.*2 entries",
        ),
    ],
)
def test_bad_arguments(build, match):
    with pytest.raises(ValueError, match=match):
        build()


def test_join_rejects_non_schedules():
    with pytest.raises(TypeError, match="schedules\\[1\\].*'x'"):
        schedules.join([1.0, "x"], [2])


def test_the_documented_dkd_warm_up_and_ctkd_curriculum():
    # docs/terms.md: DKD's min(epoch / 20, 1) with epochs counted from 1, and
    # CTKD's reversal strength (1 - cos(pi * e / 10)) / 2, then 1.
    warm_up = schedules.linear(1 / 20, 1.0, 19)
    curriculum = schedules.cosine(0.0, 1.0, 10)
    for epoch in range(30):
        assert warm_up(epoch) == pytest.approx(min((epoch + 1) / 20, 1.0))
        strength = (1 - math.cos(math.pi * min(epoch, 10) / 10)) / 2
        assert curriculum(epoch) == pytest.approx(strength, abs=1e-12)


def test_check_over_reports_the_first_bad_step_between_checked_points():
    # Checked at the breakpoints (0, 8, 9); the first bad step, 5, is found
    # by bisection, not reported as the first checked bad one.
    seen = []

    def checker(schedule):
        def check(step):
            seen.append(step)
            if float(schedule(step)) < 0.1:
                raise ValueError(f"bad at {step}")

        return check

    falling = schedules.linear(1.0, -1.0, 9)
    with pytest.raises(ValueError, match="bad at 5"):
        schedules.check_over(falling, 10, checker(falling))
    assert len(seen) < 10
    gentle = schedules.linear(1.0, 0.5, 9)
    schedules.check_over(gentle, 10**12, checker(gentle))  # all good, at once
