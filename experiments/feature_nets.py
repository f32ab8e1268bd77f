"""Feature networks for sample-quality metrics that run offline.

FID and the Inception Score need features of a classifier trained on real images. Inception-v3
weights cannot ship with jaxebm (they are downloaded), so on the digits the features are the last
hidden layer of a small MLP classifier trained here, deterministically, in a few seconds: the
"digits-FID". For CIFAR-10 and other sets, pass any feature function to
``jaxebm.metrics.fid_from_features`` (docs/results.md, "Sample quality").
"""

from __future__ import annotations

from collections.abc import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

__all__ = ["DigitsClassifier", "train_classifier", "digits_features", "digits_reader"]


class DigitsClassifier(nn.Module):
    """An MLP on flattened images; ``features=True`` returns the last hidden layer."""

    hidden: tuple[int, ...] = (256, 64)
    num_classes: int = 10

    @nn.compact
    def __call__(self, x, *, features: bool = False):
        h = jnp.reshape(x, (x.shape[0], -1))
        for width in self.hidden:
            h = nn.relu(nn.Dense(width)(h))
        return h if features else nn.Dense(self.num_classes)(h)


def train_classifier(
    train: dict, *, num_steps: int = 1_000, seed: int = 0, noise: float = 0.1
) -> tuple[DigitsClassifier, dict]:
    """Full-batch Adam on cross-entropy with Gaussian input noise; returns ``(module, params)``."""
    module = DigitsClassifier()
    x, y = jnp.asarray(train["x"]), jnp.asarray(train["y"])
    key_init, key_noise = jax.random.split(jax.random.key(seed))
    params = module.init(key_init, x[:1])
    tx = optax.adamw(1e-3, weight_decay=1e-4)

    def loss_fn(params, key):
        noisy = x + noise * jax.random.normal(key, x.shape)
        logits = module.apply(params, noisy)
        return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

    @jax.jit
    def fit(params):
        def step(carry, key):
            params, opt_state = carry
            grads = jax.grad(loss_fn)(params, key)
            updates, opt_state = tx.update(grads, opt_state, params)
            return (optax.apply_updates(params, updates), opt_state), None

        keys = jax.random.split(key_noise, num_steps)
        (params, _), _ = jax.lax.scan(step, (params, tx.init(params)), keys)
        return params

    return module, fit(params)


def digits_features(train: dict, test: dict, *, seed: int = 0) -> tuple[Callable, float]:
    """The digits-FID feature function ``x[B, 8, 8, 1] -> [B, 64]`` and its test accuracy."""
    module, params = train_classifier(train, seed=seed)
    predicted = np.asarray(jnp.argmax(module.apply(params, jnp.asarray(test["x"])), axis=-1))
    accuracy = float(np.mean(predicted == np.asarray(test["y"])))
    features = jax.jit(lambda x: module.apply(params, x, features=True))
    return features, accuracy


def digits_reader(train: dict, *, seed: int = 0) -> Callable:
    """An independent reader of digit images ``x[B, 8, 8, 1] -> [B]`` predicted classes."""
    module, params = train_classifier(train, seed=seed)
    return jax.jit(lambda x: jnp.argmax(module.apply(params, x), axis=-1))
