"""Golden values of the train steps: fixed-seed runs whose numbers must not change under refactors.

Each case builds a tiny model with the public constructors (``make_train_step``, ``make_jem_step``),
runs ``NUM_STEPS`` steps through ``jaxebm.parallel.data_parallel`` on a 1-device mesh, and records
the loss of every step and checksums of the final state. ``python tests/golden.py`` rewrites
``tests/golden/train_steps.json`` (only when the numbers are meant to change, saying why in the
commit); ``tests/test_golden.py`` compares against it.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import platform
import sys

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

import jaxebm

NUM_STEPS = 20
BATCH = 16
NUM_CLASSES = 3
PATH = os.path.join(os.path.dirname(__file__), "golden", "train_steps.json")


class _Logits(nn.Module):
    """A two-layer classifier on 2-D points: the JEM logits and the conditional energy."""

    @nn.compact
    def __call__(self, x):
        return nn.Dense(NUM_CLASSES)(nn.swish(nn.Dense(16)(x)))


def _points(step, *, labels=False, masks=False):
    rng = np.random.default_rng([7, step])
    x = rng.normal(size=(BATCH, 2)).astype(np.float32)
    batch = {"x": x}
    if labels:
        batch["y"] = (np.sign(x[:, 0]) + 1).astype(np.int32)  # classes 0 and 2 (and 1 at 0)
    if masks:
        batch["label_mask"] = (np.arange(BATCH) % 4 == 0).astype(np.float32)
        batch["gen_mask"] = (np.arange(BATCH) % 2 == 0).astype(np.float32)
    return batch


def _images(step):
    rng = np.random.default_rng([8, step])
    return {"x": rng.uniform(-1, 1, size=(8, 4, 4, 1)).astype(np.float32)}


def _half_masks(key, shape):
    """Hides one coordinate of each 2-D point (chosen at random)."""
    hidden = jax.random.bernoulli(key, 0.5, shape[:1])
    return jnp.stack([hidden, ~hidden], axis=-1)


_LANGEVIN = functools.partial(jaxebm.samplers.langevin, step_size=0.05, noise_scale=0.01)


def _cd_case(mode="persistent", *, ema_decay=None, sampler=_LANGEVIN, **kwargs):
    module = jaxebm.nets.MLPEnergy(hidden=(16, 16))
    params = module.init(jax.random.key(0), jnp.zeros((1, 2)))
    tx = optax.adam(1e-2)
    buffer = jaxebm.replay.init(jax.random.key(1), 64, (2,)) if mode == "persistent" else None
    state = jaxebm.TrainState.create(
        params, tx, buffer, jax.random.key(2), ema=ema_decay is not None
    )
    step = jaxebm.make_train_step(
        jaxebm.from_module(module),
        tx,
        sampler=sampler,
        num_chain_steps=3,
        mode=mode,
        ema_decay=ema_decay,
        **kwargs,
    )
    return state, step, _points


def _conditional_case(mode):
    module = _Logits()
    params = module.init(jax.random.key(0), jnp.zeros((1, 2)))
    tx = optax.adam(1e-2)
    buffer = None
    if mode == "persistent":
        buffer = jaxebm.replay.init(jax.random.key(1), 64, (2,), NUM_CLASSES)
    state = jaxebm.TrainState.create(params, tx, buffer, jax.random.key(2))
    step = jaxebm.make_train_step(
        jaxebm.energy.from_logits(module),
        tx,
        sampler=functools.partial(jaxebm.mala, step_size=0.05),
        num_chain_steps=3,
        mode=mode,
        conditional=True,
        num_classes=NUM_CLASSES,
        l2_coeff=0.1,
    )
    return state, step, functools.partial(_points, labels=True)


def _spectral_case():
    module = jaxebm.nets.ResNetEnergy(widths=(4,), downsample=(True,), stem_width=4)
    variables = module.init(jax.random.key(0), jnp.zeros((1, 4, 4, 1)))
    params, model_state = jaxebm.energy.split_variables(variables)
    tx = optax.adam(1e-3)
    buffer = jaxebm.replay.init(jax.random.key(1), 32, (4, 4, 1))
    state = jaxebm.TrainState.create(params, tx, buffer, jax.random.key(2), model_state)
    step = jaxebm.make_train_step(
        jaxebm.from_module(module),
        tx,
        sampler=functools.partial(jaxebm.langevin, step_size=10.0, noise_scale=0.005),
        num_chain_steps=3,
        l2_coeff=1.0,
        update_model_state=jaxebm.energy.state_updater(module, update_stats=True),
    )
    return state, step, _images


def _jem_case(*, pxy_weight=0.0, gen_weight=1.0, masks=False, ema_decay=None):
    module = _Logits()
    params = module.init(jax.random.key(0), jnp.zeros((1, 2)))
    tx = optax.adam(1e-2)
    buffer = jaxebm.replay.init(jax.random.key(1), 64, (2,), NUM_CLASSES)
    state = jaxebm.TrainState.create(
        params, tx, buffer, jax.random.key(2), ema=ema_decay is not None
    )
    step = jaxebm.train.make_jem_step(
        module.apply,
        tx,
        sampler=functools.partial(jaxebm.langevin, step_size=0.05, noise_scale=0.01),
        num_chain_steps=3,
        data_noise=0.01,
        gen_weight=gen_weight,
        pxy_weight=pxy_weight,
        num_classes=NUM_CLASSES,
        ema_decay=ema_decay,
    )
    return state, step, functools.partial(_points, labels=True, masks=masks)


CASES = {
    "cd_persistent": lambda: _cd_case(l2_coeff=0.1, data_noise=0.01),
    "cd_cd": lambda: _cd_case("cd", l2_coeff=0.1),
    "cd_short_run": lambda: _cd_case("short_run"),
    "cd_completions": lambda: _cd_case(
        completion_fraction=0.25, completion_mask_fn=_half_masks, completion_steps=4
    ),
    "cd_ema": lambda: _cd_case(ema_decay=0.9),
    "cd_mala": lambda: _cd_case(sampler=functools.partial(jaxebm.mala, step_size=0.05)),
    "cd_conditional_persistent": lambda: _conditional_case("persistent"),
    "cd_conditional_cd": lambda: _conditional_case("cd"),
    "cd_spectral_norm": _spectral_case,
    "jem": lambda: _jem_case(),
    "jem_pxy": lambda: _jem_case(pxy_weight=1.0),
    "jem_semisup": lambda: _jem_case(masks=True),
    "jem_ce": lambda: _jem_case(gen_weight=0.0),
    "jem_ema": lambda: _jem_case(ema_decay=0.9),
}


def _checksum(tree) -> dict:
    leaves = [np.asarray(jax.device_get(leaf)) for leaf in jax.tree.leaves(tree)]
    digest = hashlib.sha256()
    for leaf in leaves:
        digest.update(np.ascontiguousarray(leaf).tobytes())
    total = sum(float(np.sum(leaf, dtype=np.float64)) for leaf in leaves)
    total_abs = sum(float(np.sum(np.abs(leaf), dtype=np.float64)) for leaf in leaves)
    return {"sha256": digest.hexdigest(), "sum": total, "sum_abs": total_abs}


def run_case(name: str) -> dict:
    """Runs one case; ``{"loss": [hex floats], "params": checksum, "state": checksum}``."""
    state, step_fn, batch_at = CASES[name]()
    step = jaxebm.parallel.data_parallel(step_fn, jaxebm.parallel.make_mesh(1))
    losses = []
    for i in range(NUM_STEPS):
        state, metrics = step(state, batch_at(i))
        losses.append(float(metrics["loss"]).hex())
    arrays = state._replace(key=jax.random.key_data(state.key))
    return {
        "loss": losses,
        "params": _checksum(state.params),
        "state": _checksum(arrays),
        "nonfinite_skipped": int(state.num_nonfinite),
    }


def platform_id() -> dict:
    """What bitwise equality depends on: the JAX/XLA build and the processor."""
    model = platform.processor()
    try:
        with open("/proc/cpuinfo") as f:
            model = next((line.split(":", 1)[1].strip() for line in f if "model name" in line), "")
    except OSError:
        pass
    return {"jax": jax.__version__, "jaxlib": jax.lib.__version__, "cpu": model}


def main():
    records = {name: run_case(name) for name in CASES}
    os.makedirs(os.path.dirname(PATH), exist_ok=True)
    with open(PATH, "w") as f:
        json.dump({"platform": platform_id(), "cases": records}, f, indent=1, sort_keys=True)
    print(f"wrote {len(records)} cases to {PATH}", file=sys.stderr)


if __name__ == "__main__":
    os.environ.setdefault("JAX_PLATFORMS", "cpu")
    jax.config.update("jax_num_cpu_devices", 4)  # as tests/conftest.py
    jax.config.update("jax_numpy_rank_promotion", "raise")
    main()
