"""The exemplar memory of iCaRL: `herding` and `ExemplarMemory`."""

import os

import keras
import numpy as np

from keras_distill.continual.heads import _heads, _inputs

SELECTIONS = ("herding", "random")

# -- Exemplar memory -------------------------------------------------------------


def herding(features, count: int) -> np.ndarray:
    """iCaRL's herding: indices of `count` examples whose mean tracks the class's.

    Features are L2-normalised; the k-th pick is the example that brings the
    mean of the k picked closest to the mean of all (Rebuffi et al. 2017,
    Algorithm 4; Welling 2009). The order is a priority: the first `m`
    picks are the best `m`.

    Args:
        features: `(n, d)` features of one class's examples.
        count: Number of examples to pick (at most `n`).

    Returns:
        An int array of `min(count, n)` distinct indices, in order of choice.

    Example:

    ```pycon
    >>> herding(np.eye(3), 2).shape
    (2,)

    ```
    """
    features = np.asarray(features, "float64").reshape(len(features), -1)
    features = features / np.maximum(
        np.linalg.norm(features, axis=1, keepdims=True), 1e-12
    )
    mean = features.mean(axis=0)
    chosen, running = [], np.zeros_like(mean)
    available = np.ones(len(features), bool)
    for k in range(1, min(int(count), len(features)) + 1):
        distances = np.linalg.norm(mean - (running + features) / k, axis=1)
        distances[~available] = np.inf
        pick = int(np.argmin(distances))
        chosen.append(pick)
        available[pick] = False
        running += features[pick]
    return np.asarray(chosen, dtype="int64")


class ExemplarMemory:
    """A fixed budget of stored old examples, shared equally by the classes.

    After each task, every class seen so far keeps `size // classes`
    examples (iCaRL's memory): old classes drop their last-chosen ones, new
    classes choose theirs by `herding` in the model's feature space (the
    input of its head) or at random.

    Args:
        size: Total number of stored examples (>= 0).
        selection: `"herding"` or `"random"`. Defaults to `"herding"`.
        seed: Seed of the random selection. Defaults to `0`.

    Example:

    ```python
    memory = kd.continual.ExemplarMemory(200, selection="herding")
    memory.update(model, x_task, y_task)
    x_old, y_old = memory.arrays()
    ```
    """

    def __init__(self, size, selection="herding", seed=0):
        if isinstance(size, bool) or not isinstance(size, int | np.integer) or size < 0:
            raise ValueError(
                "`size` (the memory's number of stored examples) must be an "
                f"integer >= 0. Received: size={size!r}"
            )
        if selection not in SELECTIONS:
            raise ValueError(
                f"`selection` must be one of {SELECTIONS}. Received: "
                f"selection={selection!r}"
            )
        self.size = int(size)
        self.selection = selection
        self.seed = seed
        self._by_class = {}  # class -> inputs, in order of choice

    def __len__(self):
        return sum(len(x) for x in self._by_class.values())

    @property
    def classes(self):
        """The classes held, in order of arrival."""
        return list(self._by_class)

    def update(self, model, x, y):
        """Adds the classes of `(x, y)` and shrinks the others to the budget.

        Args:
            model: The model just trained (its head's input is the feature
                space for herding).
            x: The new task's inputs.
            y: Their labels (class ids, as stored and returned).
        """
        y = np.asarray(y).reshape(-1)
        if len(x) != len(y):
            raise ValueError(
                "`x` and `y` must hold the same number of examples (each stored "
                f"example keeps its label). Received: {len(x)} inputs and {len(y)} "
                "labels."
            )
        new = [c for c in dict.fromkeys(y.tolist()) if c not in self._by_class]
        total = len(self._by_class) + len(new)
        per_class = self.size // total if total else 0
        for c in list(self._by_class):
            self._by_class[c] = self._by_class[c][:per_class]
        features = None
        if self.selection == "herding" and per_class and new:
            _, feature_tensor = _heads(model)
            features = keras.Model(_inputs(model), feature_tensor).predict(
                x, batch_size=256, verbose=0
            )
        rng = np.random.default_rng([int(self.seed), total])
        for c in new:
            where = np.flatnonzero(y == c)
            if features is not None:
                order = herding(features[where], per_class)
            else:
                order = rng.permutation(len(where))[:per_class]
            self._by_class[c] = np.asarray(x)[where[order]]

    def arrays(self):
        """`(x, y)` of every stored example (empty arrays when empty)."""
        if not self._by_class:
            return None, np.zeros((0,), "int64")
        x = np.concatenate(list(self._by_class.values()))
        y = np.concatenate(
            [np.full(len(v), c) for c, v in self._by_class.items()]
        ).astype("int64")
        return x, y

    def nearest_mean_scores(self, model, x, classes):
        """iCaRL's nearest-mean-of-exemplars classifier: `(len(x), len(classes))`.

        The exemplars and `x` are mapped into the model's feature space (the
        input of its head), L2-normalised; each class's mean of its
        exemplars' features is normalised again, and an example's score for
        a class is minus its distance to that mean (Rebuffi et al. 2017,
        Algorithm 1), so `argmax` picks the nearest mean.

        Args:
            model: The model whose features classify.
            x: Inputs to classify.
            classes: The class ids, in the order of the score columns; each
                must have exemplars.
        """
        missing = [c for c in classes if len(self._by_class.get(c, ())) == 0]
        if missing:
            raise ValueError(
                f"The nearest-mean classifier needs exemplars of every class; "
                f"the memory has none of {missing} (its budget of {self.size} "
                f"gives {self.size // max(1, len(self._by_class))} per class)."
            )
        _, feature_tensor = _heads(model)
        extract = keras.Model(_inputs(model), feature_tensor)

        def features(inputs):
            values = extract.predict(inputs, batch_size=256, verbose=0)
            values = values.reshape(len(values), -1).astype("float64")
            return values / np.maximum(
                np.linalg.norm(values, axis=1, keepdims=True), 1e-12
            )

        means = np.stack([features(self._by_class[c]).mean(axis=0) for c in classes])
        means /= np.maximum(np.linalg.norm(means, axis=1, keepdims=True), 1e-12)
        queries = features(x)
        return -np.linalg.norm(queries[:, None, :] - means[None, :, :], axis=-1)

    def save(self, path):
        """Writes the memory to an `.npz` file (atomically)."""
        x, y = self.arrays()
        order = np.asarray(self.classes, "int64")
        tmp = f"{path}.tmp.npz"
        np.savez(tmp, x=x if x is not None else np.zeros((0,)), y=y, classes=order)
        os.replace(tmp, path)

    def load(self, path):
        """Reads a memory written by `save()` (keeps the order of choice)."""
        with np.load(path) as stored:
            x, y, classes = stored["x"], stored["y"], stored["classes"]
        self._by_class = {int(c): x[y == c] for c in classes}

    def get_config(self):
        return {"size": self.size, "selection": self.selection, "seed": self.seed}
