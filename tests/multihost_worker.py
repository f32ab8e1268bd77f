"""One process of a multi-process check (tests/test_multihost.py), started by
``scripts/launch_local.py`` (which sets ``JAXEBM_*`` and ``JAX_NUM_CPU_DEVICES``) or alone for the
one-process reference:

  python scripts/launch_local.py 2 --cpu_devices=2 -- python tests/multihost_worker.py \\
      --scenario=quickstart --steps=20 --out=DIR

It joins the others (``jaxebm.parallel.initialize_multihost``), trains a step from the README with
``shard_state``, ``shard_batch(process_share(batch))`` and ``data_parallel``, and process 0 writes
the final state to ``DIR/<scenario>.npz`` (every array of it, the buffer gathered from all
processes), with the process and device counts.
"""

import argparse
import functools
import os
import sys

import numpy as np

SCENARIOS = ("quickstart", "jem")


def parse(argv):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenario", action="append", choices=SCENARIOS, required=True)
    parser.add_argument("--steps", type=int, default=20, help="train to this step")
    parser.add_argument("--out", required=True, help="directory for <scenario>.npz")
    parser.add_argument("--checkpoints", help="save every --save_every steps here, resume from it")
    parser.add_argument("--save_every", type=int, default=5)
    parser.add_argument("--die_after", type=int, help="exit at once (status 9) after this step")
    parser.add_argument("--join_timeout", type=float, default=60.0)
    return parser.parse_args(argv)


def quickstart():
    """The README quickstart's state (as a function), step and data (``jaxebm.make_train_step``
    with MALA)."""
    import jax
    import jax.numpy as jnp
    import optax

    import jaxebm

    module = jaxebm.nets.MLPEnergy(hidden=(64, 64))
    energy_fn, tx = jaxebm.from_module(module), optax.adam(1e-3)

    def make_state():
        params = module.init(jax.random.key(0), jnp.zeros((1, 2)))
        buffer = jaxebm.replay.init(jax.random.key(1), 512, (2,))
        return jaxebm.TrainState.create(params, tx, buffer, jax.random.key(2))

    step = jaxebm.make_train_step(
        energy_fn, tx, sampler=functools.partial(jaxebm.mala, step_size=0.05), num_chain_steps=10
    )
    data = jax.jit(lambda: 0.5 * jax.random.normal(jax.random.key(3), (512, 2)) + 0.5)()
    data = {"x": np.asarray(data)}
    return make_state, step, lambda t: data


def classifier(num_classes):
    """A two-layer MLP classifier of 2-D points (JEM's logits), defined once JAX has started."""
    import flax.linen as nn

    class Classifier(nn.Module):
        @nn.compact
        def __call__(self, x):
            return nn.Dense(num_classes)(nn.swish(nn.Dense(32)(x)))

    return Classifier()


def jem():
    """The state (as a function), step and batches of JEM (``jaxebm.train.make_jem_step``) on a
    small MLP classifier of 2-D points, with label and generative masks that fall unevenly on the
    devices."""
    import jax
    import jax.numpy as jnp
    import optax

    import jaxebm

    num_classes, size = 3, 32
    module = classifier(num_classes)
    tx = optax.adam(1e-2)

    def make_state():
        params = module.init(jax.random.key(0), jnp.zeros((1, 2)))
        buffer = jaxebm.replay.init(jax.random.key(1), 64, (2,), num_classes)
        return jaxebm.TrainState.create(params, tx, buffer, jax.random.key(2))

    step = jaxebm.train.make_jem_step(
        module.apply,
        tx,
        sampler=functools.partial(jaxebm.langevin, step_size=0.1, noise_scale=0.01),
        num_chain_steps=5,
        data_noise=0.03,
        pxy_weight=0.5,
        num_classes=num_classes,
    )

    def batch(t):
        rng = np.random.default_rng([7, t])
        y = rng.integers(0, num_classes, size).astype(np.int32)
        x = rng.normal(size=(size, 2)).astype(np.float32) + 2.0 * y[:, None]
        label_mask = (rng.uniform(size=size) < 0.3).astype(np.float32)
        gen_mask = (rng.uniform(size=size) < 0.7).astype(np.float32)
        return {"x": x, "y": y, "label_mask": label_mask, "gen_mask": gen_mask}

    return make_state, step, batch


def host_state(state):
    """Every array of a global state as NumPy, named by its path (keys as their raw data)."""
    import jax
    from jax.experimental import multihost_utils

    arrays = {}
    for path, leaf in jax.tree_util.tree_flatten_with_path(state)[0]:
        if jax.dtypes.issubdtype(leaf.dtype, jax.dtypes.prng_key):
            leaf = jax.random.key_data(leaf)
        if leaf.is_fully_addressable:
            value = np.asarray(leaf)
        elif leaf.sharding.is_fully_replicated:
            value = np.asarray(leaf.addressable_data(0))
        else:
            value = np.asarray(multihost_utils.process_allgather(leaf, tiled=True))
        arrays[jax.tree_util.keystr(path)] = value
    return arrays


def train(name, args):
    """Trains ``name`` to ``args.steps`` (resuming from ``args.checkpoints``); returns the state."""
    import jax

    import jaxebm
    from jaxebm.data import pipeline

    make_state, step_fn, batch_at = {"quickstart": quickstart, "jem": jem}[name]()
    state = jax.jit(make_state)()  # one program, not one per operation: quicker to start
    mesh = jaxebm.parallel.make_mesh()
    step = jaxebm.parallel.data_parallel(step_fn, mesh)
    state = jaxebm.parallel.shard_state(state, mesh)
    manager = None
    if args.checkpoints:
        manager = jaxebm.checkpoint.make_manager(os.path.join(args.checkpoints, name))
        restored = jaxebm.checkpoint.restore_latest(manager, state)
        state = state if restored is None else restored
        print(f"{name}: from step {int(state.step)}", flush=True)
    for t in range(int(state.step), args.steps):
        batch = jaxebm.parallel.shard_batch(pipeline.process_share(batch_at(t)), mesh)
        state, metrics = step(state, batch)
        if manager is not None and (t + 1) % args.save_every == 0:
            jaxebm.checkpoint.save(manager, state)
        if args.die_after == t + 1:
            if manager is not None:
                manager.wait_until_finished()
            os._exit(9)  # as a kill would: no clean close, no later save
    print(f"{name}: loss {float(jax.device_get(metrics['loss'])):.6f}", flush=True)
    if manager is not None:
        manager.wait_until_finished()
        manager.close()
    return state


def main(argv):
    args = parse(argv)
    import jax

    import jaxebm

    jaxebm.parallel.initialize_multihost(timeout_s=args.join_timeout)
    print(
        f"process {jax.process_index()} of {jax.process_count()}: "
        f"{jax.local_device_count()} of {jax.device_count()} devices",
        flush=True,
    )
    for name in args.scenario:
        arrays = host_state(train(name, args))
        if jaxebm.parallel.is_primary():
            os.makedirs(args.out, exist_ok=True)
            counts = {"process_count": jax.process_count(), "device_count": jax.device_count()}
            np.savez(os.path.join(args.out, f"{name}.npz"), **arrays, **counts)


if __name__ == "__main__":
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    main(sys.argv[1:])
