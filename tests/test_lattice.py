"""Lattice Ising data by exact Gibbs sweeps against enumeration, and the coupling-learning
config (``ising_pcd``) end to end."""

import itertools

import jax
import numpy as np
import pytest

from experiments import train
from experiments.configs import ising_pcd
from jaxebm.data import lattice

SIDE, SIGMA, NUM = 4, 0.25, 20_000


def exact_magnetisation(coupling: np.ndarray) -> np.ndarray:
    """``P(sum s = m)`` for ``m = -L..L`` of ``log p = s^T J s`` by enumerating all states."""
    num_sites = len(coupling)
    states = np.array(list(itertools.product([-1.0, 1.0], repeat=num_sites)))
    log_p = np.einsum("ni,ij,nj->n", states, coupling, states)
    p = np.exp(log_p - log_p.max())
    total = states.sum(1).astype(int) + num_sites
    return np.bincount(total, weights=p / p.sum(), minlength=2 * num_sites + 1)


def sampled_magnetisation(x: np.ndarray) -> np.ndarray:
    num_sites = x.shape[1]
    total = (x[..., 1] - x[..., 0]).sum(1).astype(int) + num_sites
    return np.bincount(total, minlength=2 * num_sites + 1) / len(x)


# Tolerance: with N independent samples the TV distance of a histogram over K cells has mean at
# most sum_k sqrt(p_k (1 - p_k) / N) / 2 * sqrt(2 / pi) (~0.01 here: 9 cells of weight, N = 2e4)
# and it stays under 3x that. The sweeps leave a bias far below it: within each sign of the
# magnetisation a 16-site chain mixes in a few of its 200 sweeps, and the two signs are equally
# likely by the spin-flip symmetry that the uniform start shares. A sampler whose conditional
# uses half the local field (the factor 2 of s_i's two terms in s^T J s dropped) is off by ~0.1.
def tolerance(p: np.ndarray, n: int) -> float:
    return 3 * 0.5 * np.sqrt(2 / np.pi) * np.sum(np.sqrt(p * (1 - p) / n))


def test_gibbs_sweeps_sample_the_enumerated_lattice():
    coupling = lattice.lattice_coupling(SIDE, SIGMA)
    exact = exact_magnetisation(coupling)
    x = lattice.ising_samples(jax.random.key(0), coupling, NUM, num_sweeps=200)
    assert x.shape == (NUM, SIDE * SIDE, 2) and np.all(x.sum(-1) == 1)
    tv = 0.5 * np.abs(sampled_magnetisation(x) - exact).sum()
    assert tv < tolerance(exact, NUM), (tv, tolerance(exact, NUM))
    # The faulty conditional: half the field, i.e. the model with couplings J / 2.
    faulty = lattice.ising_samples(jax.random.key(0), coupling / 2, NUM, num_sweeps=200)
    tv_faulty = 0.5 * np.abs(sampled_magnetisation(faulty) - exact).sum()
    assert tv_faulty > 3 * tolerance(exact, NUM), tv_faulty


def test_ising_samples_refuses_an_asymmetric_coupling():
    with pytest.raises(ValueError, match="symmetric"):
        lattice.ising_samples(jax.random.key(0), np.triu(np.ones((4, 4)), 1), 2)


def test_log_rmse():
    true = lattice.lattice_coupling(3, 0.2)
    assert lattice.log_rmse(true + 0.1, true) == pytest.approx(np.log(0.1))


def test_ising_quick_trains_and_evaluates(tmp_path):
    config = ising_pcd.get_config("quick")
    summary = train.train_and_evaluate(config, str(tmp_path))
    assert summary["steps"] == config.train.num_steps
    couplings = summary["couplings"]
    assert couplings["true_sigma"] == config.data.lattice_sigma
    assert couplings["log_rmse"] == pytest.approx(np.log(couplings["rmse"]))
    assert (tmp_path / "couplings.png").stat().st_size > 0


@pytest.mark.slow
def test_ising_pcd_recovers_a_small_lattice(tmp_path):
    """300 updates on a 4 x 4 lattice (sigma 0.2) bring the learnt couplings to within ~0.03 of
    the truth (log-RMSE < -3.5; couplings of 0 are at log(0.2 * sqrt(64 / 256)) = -2.30)."""
    config = ising_pcd.get_config("quick")
    config.data.gibbs_sweeps = 200
    config.data.num_train = 2000
    config.train.batch_size = config.buffer.capacity = 128
    config.sampler.num_steps = 20
    config.train.num_steps = 300
    config.optim.learning_rate = 1e-2
    config.checkpoint.every_steps = 300
    summary = train.train_and_evaluate(config, str(tmp_path))
    assert summary["couplings"]["log_rmse"] < -3.5, summary["couplings"]
