"""Work the train step does not do: the replay buffer is written in place (a scatter of the drawn
slots under the non-finite guard, no select over the whole buffer), and a Langevin chain computes
no gradient after its last move; the numbers are the same as before."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax._src.interpreters import partial_eval as pe

import jaxebm

CAPACITY, SHAPE, BATCH = 96, (4, 4, 3), 8


def persistent_step():
    module = jaxebm.nets.MLPEnergy(hidden=(16,))
    params = module.init(jax.random.key(0), jnp.zeros((1, *SHAPE)))
    tx = optax.adam(1e-2)
    step = jaxebm.train.make_step(
        jaxebm.objectives.contrastive(jaxebm.energy.from_module(module)),
        tx,
        negatives=jaxebm.negatives.persistent(reinit_prob=0.25),
        sampler=functools.partial(jaxebm.langevin, step_size=0.01, noise_scale=0.005),
        num_chain_steps=2,
        axis_name=None,
    )
    buffer = jaxebm.replay.init(jax.random.key(1), CAPACITY, SHAPE)
    return step, jaxebm.TrainState.create(params, tx, buffer, jax.random.key(2))


def test_write_back_scatters_the_drawn_slots_in_place_and_nothing_on_a_skipped_step():
    step, state = persistent_step()
    x = jax.random.uniform(jax.random.key(3), (BATCH, *SHAPE), minval=-1.0, maxval=1.0)
    # Donated, as jaxebm.parallel.data_parallel compiles it: the new buffer may reuse the old.
    compiled = jax.jit(step, donate_argnums=0).lower(state, {"x": x}).compile()
    # Instructions giving a whole buffer, as (name, opcode): before, a copy of the old buffer,
    # the scatter into it and a select of the new and the old buffer (a fusion named so).
    shape = f"f32[{CAPACITY},{','.join(map(str, SHAPE))}]"
    whole = []
    for line in compiled.as_text().splitlines():
        name, _, rest = line.strip().removeprefix("ROOT ").partition(" = ")
        if rest.startswith(shape):
            whole.append((name, rest.split("(")[0].split()[-1]))
    assert any(op == "scatter" for _, op in whole), whole
    allowed = {"parameter", "get-tuple-element", "tuple", "conditional", "scatter"}
    for name, op in whole:
        assert op in allowed or (op == "fusion" and "scatter" in name), whole

    old = jax.tree.map(np.asarray, state.buffer)  # the calls below delete (donate) their input
    state, _ = compiled(state, {"x": x})
    assert int(state.num_nonfinite) == 0
    new = jax.tree.map(np.asarray, state.buffer)
    changed = np.any(old.x != new.x, axis=(1, 2, 3))
    aged = new.age != old.age
    assert aged.sum() == BATCH and not np.any(changed & ~aged)  # distinct slots, no other row
    state, _ = compiled(state, {"x": x.at[0, 0, 0, 0].set(jnp.nan)})
    assert int(state.num_nonfinite) == 1
    for got, want in zip(state.buffer, new, strict=True):
        np.testing.assert_array_equal(got, want)  # bitwise the buffer before the skipped step
    # Draws are without replacement: a scatter of distinct slots is a well-defined write.
    idx = jaxebm.replay.sample(state.buffer, jax.random.key(4), CAPACITY, 0.0).idx
    assert len(np.unique(np.asarray(idx))) == CAPACITY


def dot_flops(fn, *args, num_outputs):
    """FLOPs of the matrix products ``fn`` executes once its unused results are removed: each
    ``lax.scan`` body counted as many times as it runs."""
    closed = jax.make_jaxpr(fn)(*args)
    jaxpr, _ = pe.dce_jaxpr(closed.jaxpr, [True] * num_outputs)

    def walk(jaxpr, times):
        total = 0
        for eqn in jaxpr.eqns:
            if eqn.primitive.name == "dot_general":
                (contract, _), _ = eqn.params["dimension_numbers"]
                depth = np.prod([eqn.invars[0].aval.shape[d] for d in contract])
                total += times * 2 * np.prod(eqn.outvars[0].aval.shape) * depth
            inner_times = times * eqn.params.get("length", 1)
            for param in eqn.params.values():
                inner = getattr(param, "jaxpr", param)
                if isinstance(inner, jax.extend.core.Jaxpr):
                    total += walk(inner, inner_times)
        return total

    return walk(jaxpr, 1)


def test_langevin_chain_runs_k_gradients_and_keeps_its_numbers():
    module = jaxebm.nets.MLPEnergy(hidden=(32, 32))
    params = module.init(jax.random.key(0), jnp.zeros((1, 5)))
    energy = lambda x: module.apply(params, x)
    x0 = jax.random.normal(jax.random.key(1), (6, 5))
    num_steps, key = 4, jax.random.key(2)
    both = lambda x: jaxebm.samplers.base.energy_and_grad(energy, x)
    grad = dot_flops(lambda x: both(x)[1], x0, num_outputs=1)
    grad_and_energy = dot_flops(both, x0, num_outputs=2)
    for sampler, flops in (
        # Langevin: the chain start's gradient and one per move but the last (no energies).
        (functools.partial(jaxebm.langevin, step_size=0.05, noise_scale=0.01), num_steps * grad),
        # MALA: also the last move's, which its acceptance test reads with the energies.
        (functools.partial(jaxebm.mala, step_size=0.05), (num_steps + 1) * grad_and_energy),
    ):
        kernel = sampler(energy)

        def chain(x, kernel=kernel):
            state, info = jaxebm.samplers.run_chain(kernel, key, x, num_steps, trace=True)
            return state.x, info.grad_norm

        assert dot_flops(chain, x0, num_outputs=2) == flops
        # Every sample and diagnostic equals the kernel's steps taken one by one.
        x, info = jax.jit(chain)(x0)
        state = kernel.init(x0)
        norms = []
        for step_key in jax.random.split(key, num_steps):
            state, step_info = jax.jit(kernel.step)(step_key, state)
            norms.append(step_info.grad_norm)
        np.testing.assert_array_equal(x, state.x)
        np.testing.assert_array_equal(info, jnp.stack(norms))
