"""The replay buffer: re-initialisation statistics, distinct draws, ages, labels, noise, errors."""

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from jaxebm import replay

SENTINEL = 7.0  # outside the buffer's [-1, 1]: a chain holding it was just re-initialised
CAPACITY, NUM_CLASSES = 64, 5

# Compiled once per static setting, and shared by the tests below (each compile of a draw costs
# about a second on a CI core). A reinit_prob passed to it is traced.
sample = jax.jit(replay.sample, static_argnums=2, static_argnames=("noise_fn", "num_classes"))
update = jax.jit(replay.update)


def sentinel_noise(key, shape):
    return jnp.full(shape, SENTINEL)


def aged_buffer(capacity=CAPACITY, num_classes=NUM_CLASSES, seed=0):
    """A buffer of 2-D chains whose chain ``i`` has age ``i + 1`` (a fresh chain's 0 stands out)."""
    buffer = replay.init(jax.random.key(seed), capacity, (2,), num_classes)
    return replay.ReplayBuffer(buffer.x, buffer.y, jnp.arange(1, capacity + 1, dtype=jnp.int32))


def is_fresh(drawn):
    return np.all(np.asarray(drawn.x) == SENTINEL, axis=-1)


@functools.cache
def many_draws():
    """400 independent draws of 120 of 128 chains (close to capacity) with reinit_prob 0.25."""
    buffer = aged_buffer(capacity=128)
    keys = jax.random.split(jax.random.key(1), 400)
    draw = lambda key: replay.sample(buffer, key, 120, 0.25, noise_fn=sentinel_noise)
    return buffer, jax.jit(jax.vmap(draw))(keys)


# ----------------------------------------------------------------------------------------------
# Re-initialisation and distinct draws.


def test_number_of_fresh_chains_is_binomial():
    _, drawn = many_draws()
    fresh = is_fresh(drawn)
    np.testing.assert_array_equal(fresh, np.asarray(drawn.age) == 0)  # fresh <=> age 0
    counts = fresh.sum(axis=1)
    num_draws, batch_size, p = 400, 120, 0.25
    n = num_draws * batch_size
    # The total over 48000 independent Bernoulli(0.25): within 4 standard deviations (p ~ 6e-5).
    assert abs(counts.sum() - n * p) < 4 * math.sqrt(n * p * (1 - p)), counts.sum()
    # A fixed fraction per draw (exactly 30 of 120) would pass the total but not the spread: the
    # per-draw variance is 120 p (1 - p) = 22.5; its estimate over 400 draws has a relative
    # standard error of sqrt(2 / 399) = 7%, and 28% is 4 of them.
    np.testing.assert_allclose(counts.var(ddof=1), batch_size * p * (1 - p), rtol=0.28)


def test_indices_are_distinct_and_uniform():
    _, drawn = many_draws()
    idx = np.sort(np.asarray(drawn.idx), axis=1)
    assert idx.min() >= 0 and idx.max() < 128
    assert np.all(np.diff(idx, axis=1) > 0)  # strictly increasing once sorted: no duplicates
    # Each slot is left out of a draw with probability 8/128: chi-square of the 128 counts of
    # left-out slots (mean 25 each) against uniform; p > 1e-4 fails a correct sampler once in 10^4.
    left_out = 400 - np.bincount(np.asarray(drawn.idx).ravel(), minlength=128)
    assert left_out.sum() == 400 * 8
    assert stats.chisquare(left_out).pvalue > 1e-4


def test_drawn_chains_come_from_their_slots():
    buffer, drawn = many_draws()
    fresh = is_fresh(drawn)
    stored_x = np.asarray(buffer.x)[np.asarray(drawn.idx)]
    np.testing.assert_array_equal(np.asarray(drawn.x)[~fresh], stored_x[~fresh])
    stored_age = np.asarray(buffer.age)[np.asarray(drawn.idx)]
    np.testing.assert_array_equal(np.asarray(drawn.age)[~fresh], stored_age[~fresh])


@pytest.mark.parametrize("p", [0.0, 1.0])
def test_reinit_probability_zero_and_one_even_when_traced(p):
    drawn = sample(aged_buffer(), jax.random.key(0), 40, p, noise_fn=sentinel_noise, num_classes=5)
    assert np.all(is_fresh(drawn) == bool(p))


# ----------------------------------------------------------------------------------------------
# Ages, write-back, labels and noise.


def test_update_writes_back_and_ages_exactly():
    buffer = aged_buffer()
    drawn = sample(buffer, jax.random.key(3), 40, 0.3, noise_fn=sentinel_noise, num_classes=5)
    fresh = is_fresh(drawn)
    assert 0 < fresh.sum() < 40  # both kinds present at this seed
    idx = np.asarray(drawn.idx)
    # Drawn ages: the stored age, 0 for a fresh start.
    np.testing.assert_array_equal(drawn.age, np.where(fresh, 0, np.asarray(buffer.age)[idx]))

    advanced = drawn.x * 0.5 + 0.25  # stands for the chains' new positions
    new = update(buffer, drawn, advanced)
    np.testing.assert_array_equal(np.asarray(new.x)[idx], advanced)
    np.testing.assert_array_equal(np.asarray(new.y)[idx], drawn.y)
    # Advanced once more: drawn chains age by one, fresh ones are now 1.
    np.testing.assert_array_equal(np.asarray(new.age)[idx], np.asarray(drawn.age) + 1)
    np.testing.assert_array_equal(np.asarray(new.age)[idx][fresh], 1)
    # Undrawn chains are untouched, bitwise.
    rest = np.setdiff1d(np.arange(CAPACITY), idx)
    for field in ("x", "y", "age"):
        np.testing.assert_array_equal(
            np.asarray(getattr(new, field))[rest], np.asarray(getattr(buffer, field))[rest]
        )


def test_age_counts_updates_since_the_last_restart():
    @jax.jit
    def cycles(buffer, key):
        def body(buffer, key):
            drawn = replay.sample(buffer, key, 32, 0.0)  # the whole buffer
            return replay.update(buffer, drawn, drawn.x), None

        return jax.lax.scan(body, buffer, jax.random.split(key, 5))[0]

    buffer = replay.init(jax.random.key(0), 32, (3,))
    np.testing.assert_array_equal(buffer.age, 0)
    # Every chain is 5: drawing all 32 chains five times hit every slot exactly once each time.
    np.testing.assert_array_equal(cycles(buffer, jax.random.key(1)).age, 5)


def test_labels_of_conditional_buffers():
    buffer = replay.init(jax.random.key(0), 1000, (2,), num_classes=10)
    assert buffer.y.dtype == jnp.int32
    np.testing.assert_array_equal(np.unique(buffer.y), np.arange(10))  # every class, nothing else
    np.testing.assert_array_equal(replay.init(jax.random.key(0), 8, (2,)).y, 0)  # unconditional

    buffer = aged_buffer()
    buffer = replay.ReplayBuffer(buffer.x, jnp.full((CAPACITY,), 3, jnp.int32), buffer.age)
    drawn = sample(buffer, jax.random.key(1), 40, 0.5, noise_fn=sentinel_noise, num_classes=5)
    fresh = is_fresh(drawn)
    y = np.asarray(drawn.y)
    assert fresh.sum() >= 10
    np.testing.assert_array_equal(y[~fresh], 3)  # kept chains keep their labels
    assert y.min() >= 0 and y.max() < NUM_CLASSES
    assert np.any(y[fresh] != 3)  # fresh labels are drawn (all 3 has probability 0.2^10)


def test_default_noise_and_labels_without_num_classes():
    # Default noise: uniform on [-1, 1], float32. 8192 draws: the 99.9% KS quantile is
    # 1.95 / 90.5 = 0.022; 0.03 fails a correct sampler with probability ~1e-6.
    buffer = replay.init(jax.random.key(0), 4096, (2,))
    assert buffer.x.dtype == jnp.float32
    x = np.asarray(buffer.x).ravel()
    assert x.min() >= -1.0 and x.max() <= 1.0
    assert stats.kstest(x, stats.uniform(-1.0, 2.0).cdf).statistic < 0.03

    # Fresh chains drawn with the defaults: uniform noise, and (no num_classes) the slot's label.
    buffer = aged_buffer()
    drawn = sample(buffer, jax.random.key(1), 40, 0.5)
    fresh = np.asarray(drawn.age) == 0
    assert 0 < fresh.sum() < 40
    x = np.asarray(drawn.x)
    assert np.all(np.abs(x) <= 1.0)
    assert not np.any(x[fresh] == np.asarray(buffer.x)[np.asarray(drawn.idx)][fresh])
    np.testing.assert_array_equal(drawn.y, np.asarray(buffer.y)[np.asarray(drawn.idx)])


def test_custom_noise_fills_the_buffer():
    buffer = replay.init(jax.random.key(0), 16, (2, 3), noise_fn=sentinel_noise)
    assert buffer.x.shape == (16, 2, 3) and buffer.x.dtype == jnp.float32
    np.testing.assert_array_equal(buffer.x, SENTINEL)
    # (Fresh chains in a draw come from noise_fn too: the sentinel marks them in the tests above.)


# ----------------------------------------------------------------------------------------------
# Errors.


def test_bad_inputs_raise_clear_errors():
    buffer = replay.init(jax.random.key(0), 8, (2,))
    key = jax.random.key(1)
    with pytest.raises(ValueError, match="cannot draw 9 distinct chains from a buffer of 8"):
        replay.sample(buffer, key, 9)
    with pytest.raises(ValueError, match="batch_size must be >= 1, got 0"):
        replay.sample(buffer, key, 0)
    for p in (1.5, -0.1, float("nan")):
        with pytest.raises(ValueError, match=r"reinit_prob must be in \[0, 1\]"):
            replay.sample(buffer, key, 4, p)
    with pytest.raises(ValueError, match="capacity must be >= 1, got 0"):
        replay.init(key, 0, (2,))
    drawn = replay.ReplaySample(
        x=jnp.zeros((4, 2)), y=jnp.zeros(4, jnp.int32), idx=jnp.arange(4), age=jnp.zeros(4)
    )
    with pytest.raises(
        ValueError, match=r"expected advanced chains of shape \(4, 2\), got \(3, 2\)"
    ):
        replay.update(buffer, drawn, jnp.zeros((3, 2)))


# ----------------------------------------------------------------------------------------------
# Token sequences: one-hot [N, L, V] and integer [N, L] chains.

VOCAB, SEQ_LENGTH = 4, 8
LAST_TOKEN = (0.0, 0.0, 0.0, 1.0)  # fresh chains of all token 3: a sentinel, as SENTINEL above


def aged_token_buffer(*, one_hot, capacity=CAPACITY):
    """Uniform token chains whose chain ``i`` has age ``i + 1``."""
    event_shape = (SEQ_LENGTH, VOCAB) if one_hot else (SEQ_LENGTH,)
    noise_fn = replay.token_noise(VOCAB, one_hot=one_hot)
    buffer = replay.init(jax.random.key(0), capacity, event_shape, noise_fn=noise_fn)
    return replay.ReplayBuffer(buffer.x, buffer.y, jnp.arange(1, capacity + 1, dtype=jnp.int32))


def test_one_hot_token_buffer_starts_from_the_unigram_frequencies():
    probs = np.array([0.5, 0.3, 0.2, 0.0])
    noise_fn = replay.token_noise(VOCAB, probs=probs)
    buffer = replay.init(jax.random.key(0), 1000, (SEQ_LENGTH, VOCAB), noise_fn=noise_fn)
    x = np.asarray(buffer.x)
    assert x.shape == (1000, SEQ_LENGTH, VOCAB) and x.dtype == np.float32
    assert np.all((x == 0) | (x == 1)) and np.all(x.sum(-1) == 1)  # every row one-hot
    counts = x.reshape(-1, VOCAB).sum(0)
    n = 1000 * SEQ_LENGTH
    # Each count is Binomial(8000, p): within 4 standard deviations (p ~ 6e-5 each); a token of
    # frequency 0 is never drawn.
    assert np.all(np.abs(counts - n * probs) <= 4 * np.sqrt(n * probs * (1 - probs))), counts
    assert counts[3] == 0
    # Without probs: uniform. Chi-square of the 4 counts, p > 1e-4 (fails once in 10^4).
    uniform = replay.init(
        jax.random.key(1), 1000, (SEQ_LENGTH, VOCAB), noise_fn=replay.token_noise(VOCAB)
    )
    assert stats.chisquare(np.asarray(uniform.x).reshape(-1, VOCAB).sum(0)).pvalue > 1e-4


def test_one_hot_token_buffer_samples_reinitialises_and_writes_back():
    buffer = aged_token_buffer(one_hot=True)
    fresh_noise = replay.token_noise(VOCAB, probs=LAST_TOKEN)
    keys = jax.random.split(jax.random.key(1), 200)
    draws = jax.jit(
        jax.vmap(lambda key: replay.sample(buffer, key, 48, 0.25, noise_fn=fresh_noise))
    )(keys)
    x, idx = np.asarray(draws.x), np.asarray(draws.idx)
    assert x.shape == (200, 48, SEQ_LENGTH, VOCAB) and x.dtype == np.float32
    fresh = np.asarray(draws.age) == 0
    np.testing.assert_array_equal(x[fresh].argmax(-1), 3)  # fresh chains come from the noise
    assert np.all(x.sum(-1) == 1)
    np.testing.assert_array_equal(x[~fresh], np.asarray(buffer.x)[idx][~fresh])
    # 9600 independent Bernoulli(0.25) restarts: within 4 standard deviations (p ~ 6e-5).
    n, p = 200 * 48, 0.25
    assert abs(fresh.sum() - n * p) < 4 * math.sqrt(n * p * (1 - p)), fresh.sum()

    drawn = jax.tree.map(lambda field: field[0], draws)  # the first draw
    advanced = jnp.roll(drawn.x, 1, axis=-1)  # every token t becomes t + 1 mod V
    new = update(buffer, drawn, advanced)
    assert new.x.dtype == jnp.float32
    np.testing.assert_array_equal(np.asarray(new.x)[np.asarray(drawn.idx)], advanced)
    np.testing.assert_array_equal(np.asarray(new.age)[np.asarray(drawn.idx)], drawn.age + 1)


def test_integer_token_buffer_keeps_int32():
    buffer = aged_token_buffer(one_hot=False)
    assert buffer.x.shape == (CAPACITY, SEQ_LENGTH) and buffer.x.dtype == jnp.int32
    assert int(buffer.x.min()) >= 0 and int(buffer.x.max()) < VOCAB
    fresh_noise = replay.token_noise(VOCAB, probs=LAST_TOKEN, one_hot=False)
    drawn = sample(buffer, jax.random.key(1), 40, 0.5, noise_fn=fresh_noise)
    assert drawn.x.dtype == jnp.int32
    fresh = np.asarray(drawn.age) == 0
    assert 0 < fresh.sum() < 40
    np.testing.assert_array_equal(np.asarray(drawn.x)[fresh], 3)
    np.testing.assert_array_equal(
        np.asarray(drawn.x)[~fresh], np.asarray(buffer.x)[np.asarray(drawn.idx)][~fresh]
    )
    advanced = (drawn.x + 1) % VOCAB
    new = update(buffer, drawn, advanced)
    assert new.x.dtype == jnp.int32
    np.testing.assert_array_equal(np.asarray(new.x)[np.asarray(drawn.idx)], advanced)
    # Float chains or float noise for an integer buffer would be truncated by a cast: refused.
    with pytest.raises(ValueError, match="holds int32 chains but the advanced chains are float32"):
        replay.update(buffer, drawn, advanced.astype(jnp.float32))
    with pytest.raises(ValueError, match="holds int32 chains but noise_fn gave float32 noise"):
        replay.sample(buffer, jax.random.key(1), 4)  # the default uniform noise


def test_token_noise_bad_inputs_raise_clear_errors():
    with pytest.raises(ValueError, match="integer vocab_size >= 2, got 1"):
        replay.token_noise(1)
    with pytest.raises(ValueError, match=r"must have shape \[vocab_size\] = \(4,\), got \(3,\)"):
        replay.token_noise(4, probs=[0.5, 0.25, 0.25])
    with pytest.raises(ValueError, match="probs must sum to 1, got a sum of 0.9"):
        replay.token_noise(4, probs=[0.3, 0.3, 0.2, 0.1])
    for probs in ([1.2, -0.2, 0.0, 0.0], [float("nan"), 0.5, 0.25, 0.25]):
        with pytest.raises(ValueError, match="probs must be finite and >= 0"):
            replay.token_noise(4, probs=probs)
    # One-hot noise takes the event shape (L, V); integer noise takes (L,).
    with pytest.raises(ValueError, match=r"shape ending with vocab_size = 4 .*got \(16, 8\)"):
        replay.init(jax.random.key(0), 16, (SEQ_LENGTH,), noise_fn=replay.token_noise(4))
    integer_noise = replay.token_noise(4, one_hot=False)
    short_noise = lambda key, shape: integer_noise(key, shape[:-1])  # drops the V axis
    with pytest.raises(ValueError, match=r"noise_fn returned shape \(16, 8\) for .*\(16, 8, 4\)"):
        replay.init(jax.random.key(0), 16, (SEQ_LENGTH, 4), noise_fn=short_noise)
