"""Exact log-densities of the 2-D toy densities of :mod:`jaxebm.data.toy`, and their constants.

The constants (FFJORD's shapes and scales) are shared with the samplers in
:mod:`jaxebm.data.toy`; ``toy.log_density`` is :func:`log_density` here.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.special import i0e, log_ndtr, logsumexp

from jaxebm.types import Array, ArrayLike

__all__ = ["NAMES", "log_density"]

NAMES: tuple[str, ...] = ("8gaussians", "rings", "checkerboard", "2spirals", "pinwheel")

# The plotting / integration box: every density puts at most ~2e-5 of its mass outside
# [-4.5, 4.5]^2 (pinwheel's radial tail is the widest; the others lose less than 1e-6).
_BOUNDS = {name: (-4.5, 4.5) for name in NAMES}

# 8gaussians (FFJORD): centres 4 * (cos k pi/4, sin k pi/4), noise 0.5 N(0, I), all divided by
# 1.414 (FFJORD's literal, not sqrt(2)): centres at radius 4 / 1.414, standard deviation
# 0.5 / 1.414.
_GAUSSIANS_RADIUS = 4.0 / 1.414
_GAUSSIANS_STD = 0.5 / 1.414
_GAUSSIANS_NUM = 8

# rings (FFJORD): unit circles scaled by (1, 0.75, 0.5, 0.25) * 3.0, noise 0.08 N(0, I).
_RING_RADII = (3.0, 2.25, 1.5, 0.75)
_RING_STD = 0.08

# checkerboard (FFJORD): 8 squares of side 2, area 32 in all.
_CHECKER_LOG_DENSITY = -math.log(32.0)

# 2spirals (FFJORD): n = sqrt(u) * 540 degrees (in radians, 3 pi); arm (-n cos n, n sin n) plus a
# U[0, 0.5)^2 offset, the second arm negated, everything divided by 3, then noise 0.1 N(0, I).
_SPIRAL_TURN = 3.0 * math.pi
_SPIRAL_SCALE = 3.0
_SPIRAL_OFFSET = 0.5 / 3.0  # width of the uniform offset after the division by 3
_SPIRAL_STD = 0.1
# Quadrature over n: Gauss-Legendre of order 8 on 64 panels of equal arc length per arm (1024 nodes
# for both arms). Against a float64 rule with 4x the panels the log-density differs by < 5e-6
# wherever it exceeds (max - 15); 32 panels give 4e-4.
_SPIRAL_PANELS = 64
_SPIRAL_ORDER = 8

# pinwheel (FFJORD): 5 classes, features N((1, 0), diag(0.3^2, 0.1^2)), rotation angle
# 2 pi k / 5 + 0.25 exp(f_0), output scaled by 2.
_PINWHEEL_CLASSES = 5
_PINWHEEL_RADIAL_STD = 0.3
_PINWHEEL_TANGENTIAL_STD = 0.1
_PINWHEEL_RATE = 0.25
_PINWHEEL_SCALE = 2.0
# Root finding: a scan over 128 nodes in f_0 then 24 bisection steps (the bracket width < 0.05
# shrinks to < 3e-9). Inside [-4.5, 4.5]^2 a class has at most 3 pre-images; wherever the density
# exceeds exp(-10) of a class's peak, its pre-image lies >= 0.099 from the others, so a node
# spacing below 0.05 never merges it with another (measured on a 361^2 grid with 4001 nodes).
_PINWHEEL_NODES = 128
_PINWHEEL_MAX_ROOTS = 3
_PINWHEEL_BISECTIONS = 24

_LOG_2PI = math.log(2.0 * math.pi)


def _check_name(name: str) -> None:
    if name not in NAMES:
        raise ValueError(f"unknown toy density {name!r}: choose one of {', '.join(NAMES)}")


# ----------------------------------------------------------------------------------------------
# Log-densities.


def _norm(x: Array) -> Array:
    """``|x|`` over the last axis with a zero (not NaN) gradient at the origin."""
    squared = jnp.sum(x * x, axis=-1)
    is_zero = squared == 0.0
    return jnp.where(is_zero, 0.0, jnp.sqrt(jnp.where(is_zero, 1.0, squared)))


def _log_normal(x: Array, mean: ArrayLike, std: float) -> Array:
    """Elementwise log N(x; mean, std^2)."""
    z = (x - mean) / std
    return -0.5 * z * z - math.log(std) - 0.5 * _LOG_2PI


def _log_density_8gaussians(x: Array) -> Array:
    angle = np.arange(_GAUSSIANS_NUM) * (2.0 * math.pi / _GAUSSIANS_NUM)
    centres = jnp.asarray(_GAUSSIANS_RADIUS * np.stack([np.cos(angle), np.sin(angle)], -1), x.dtype)
    squared = jnp.sum((x[:, None, :] - centres[None, :, :]) ** 2, axis=-1)  # [N, 8]
    log_component = -0.5 * squared / _GAUSSIANS_STD**2 - _LOG_2PI - 2.0 * math.log(_GAUSSIANS_STD)
    return logsumexp(log_component, axis=-1) - math.log(_GAUSSIANS_NUM)


def _log_density_rings(x: Array) -> Array:
    # A ring of radius r blurred by N(0, s^2 I), angle uniform:
    #   p(x) = 1 / (2 pi s^2) exp(-(|x|^2 + r^2) / (2 s^2)) I0(|x| r / s^2),
    # the Rice density over the plane; with I0(z) = i0e(z) e^z the exponent becomes
    # -(|x| - r)^2 / (2 s^2).
    norm = _norm(x)[:, None]  # [N, 1]
    radii = jnp.asarray(_RING_RADII, x.dtype)[None, :]  # [1, 4]
    variance = _RING_STD**2
    log_ring = (
        -0.5 * (norm - radii) ** 2 / variance
        + jnp.log(i0e(norm * radii / variance))
        - math.log(2.0 * math.pi * variance)
    )
    return logsumexp(log_ring, axis=-1) - math.log(len(_RING_RADII))


def _log_density_checkerboard(x: Array) -> Array:
    # Support: [-4, 4)^2 where floor(x0 / 2) + floor(x1 / 2) is even (FFJORD's floor(x0) % 2 rule).
    inside = jnp.all((x >= -4.0) & (x < 4.0), axis=-1)
    cell = jnp.floor(x / 2.0)
    is_black = jnp.mod(cell[:, 0] + cell[:, 1], 2.0) == 0.0
    return jnp.where(inside & is_black, _CHECKER_LOG_DENSITY, -jnp.inf).astype(x.dtype)


def _spiral_nodes() -> tuple[np.ndarray, np.ndarray]:
    """Quadrature nodes in ``n`` and log-weights ``log(w_i p(n_i))`` for one spiral arm.

    ``p(n) = 2 n / (3 pi)^2`` on ``[0, 3 pi]`` (``n = 3 pi sqrt(u)``). Panels have equal arc
    length ``s(n) = (n sqrt(1 + n^2) + asinh n) / 6`` of the arm ``m(n) / 3`` (speed
    ``sqrt(1 + n^2) / 3``), so each covers the same distance in the plane whatever ``n``.
    """
    arc = lambda n: (n * np.sqrt(1.0 + n * n) + np.arcsinh(n)) / 6.0
    table = np.linspace(0.0, _SPIRAL_TURN, 100_001)
    edges = np.interp(np.linspace(0.0, arc(_SPIRAL_TURN), _SPIRAL_PANELS + 1), arc(table), table)
    edges[0], edges[-1] = 0.0, _SPIRAL_TURN
    unit_nodes, unit_weights = np.polynomial.legendre.leggauss(_SPIRAL_ORDER)
    middle, half = (edges[1:] + edges[:-1]) / 2.0, (edges[1:] - edges[:-1]) / 2.0
    nodes = (middle[:, None] + half[:, None] * unit_nodes[None, :]).ravel()
    weights = (half[:, None] * unit_weights[None, :]).ravel() * 2.0 * nodes / _SPIRAL_TURN**2
    return nodes, np.log(weights)


def _log_ndtr_difference(upper: Array, lower: Array) -> Array:
    """``log(Phi(upper) - Phi(lower))`` for ``upper > lower``, stable in both tails."""
    # Reflect into the lower tail, where log_ndtr is accurate: Phi(a) - Phi(b) = Phi(-b) - Phi(-a).
    reflect = upper + lower > 0.0
    upper, lower = jnp.where(reflect, -lower, upper), jnp.where(reflect, -upper, lower)
    log_upper = log_ndtr(upper)
    return log_upper + jnp.log1p(-jnp.exp(log_ndtr(lower) - log_upper))


def _log_density_one_spiral(x: Array, nodes: Array, log_weights: Array) -> Array:
    """log of the density of ``(m(n) + 0.5 v) / 3 + N(0, 0.1^2 I)`` by quadrature over ``n``."""
    # Given n, each coordinate is mean + U[0, w) + N(0, s^2): its density is the Gaussian CDF
    # difference (Phi((x - mean) / s) - Phi((x - mean - w) / s)) / w.
    means = jnp.stack([-nodes * jnp.cos(nodes), nodes * jnp.sin(nodes)], -1) / _SPIRAL_SCALE
    z = (x[:, None, :] - means[None, :, :]) / _SPIRAL_STD  # [N, nodes, 2]
    log_coordinate = _log_ndtr_difference(z, z - _SPIRAL_OFFSET / _SPIRAL_STD)
    log_kernel = jnp.sum(log_coordinate, axis=-1) - 2.0 * math.log(_SPIRAL_OFFSET)
    return logsumexp(log_kernel + log_weights[None, :], axis=-1)


def _log_density_2spirals(x: Array) -> Array:
    nodes, log_weights = _spiral_nodes()
    nodes, log_weights = jnp.asarray(nodes, x.dtype), jnp.asarray(log_weights, x.dtype)
    # The second arm is the first negated, and the noise is symmetric: p_2(x) = p_1(-x).
    first = _log_density_one_spiral(x, nodes, log_weights)
    second = _log_density_one_spiral(-x, nodes, log_weights)
    return jnp.logaddexp(first, second) - math.log(2.0)


def _pinwheel_preimage(u: Array, angle_offset: Array, t: Array) -> tuple[Array, Array, Array]:
    """For ``u = x / 2`` and a candidate ``f_0 = t``: the feature ``f = R(a) u`` and ``f_0 - t``."""
    angle = angle_offset + _PINWHEEL_RATE * jnp.exp(t)
    cos, sin = jnp.cos(angle), jnp.sin(angle)
    feature0 = cos * u[..., 0] - sin * u[..., 1]
    feature1 = sin * u[..., 0] + cos * u[..., 1]
    return feature0, feature1, feature0 - t


def _log_density_pinwheel(x: Array) -> Array:
    # Class k maps f to x = 2 R(-a(f_0)) f with a = 2 pi k / 5 + 0.25 exp(f_0). Given x, u = x / 2,
    # a pre-image has f = R(a(t)) u with t = f_0 solving h(t) = [R(a(t)) u]_0 - t = 0; |f| = |u|
    # bounds t to [-|u|, |u|], where h changes sign (h(-|u|) >= 0 >= h(|u|)). The Jacobian
    # determinant of f -> u is 1 + a'(f_0) f_1 = 1 + 0.25 e^{f_0} f_1 = -h'(t) (matrix determinant
    # lemma on R(-a) (I - a' J f e_0^T)), so
    #   p(x) = 1/5 sum_k sum_roots N(f; (1, 0), diag(0.3^2, 0.1^2)) / (4 |1 + 0.25 e^{f_0} f_1|).
    u = x[:, None, :] / _PINWHEEL_SCALE  # [N, 1, 2]
    offsets = jnp.asarray(
        np.arange(_PINWHEEL_CLASSES) * (2.0 * math.pi / _PINWHEEL_CLASSES), x.dtype
    )[None, :]  # [1, K]
    angle_offset = jnp.broadcast_to(offsets, (x.shape[0], _PINWHEEL_CLASSES))  # [N, K]
    # Nodes span [-|u| - 1e-3, |u| + 1e-3]: the margin makes h strictly positive at the first node
    # and strictly negative at the last, even at u = 0.
    half_width = jax.lax.stop_gradient(_norm(u[:, 0, :]))[:, None] + 1e-3  # [N, 1]
    low = jnp.broadcast_to(-half_width, angle_offset.shape)  # [N, K]
    step = 2.0 * half_width / (_PINWHEEL_NODES - 1)  # [N, 1]
    u_const = jax.lax.stop_gradient(u)

    def h(t):
        return _pinwheel_preimage(u_const, angle_offset, t)[2]

    # Scan the nodes for sign changes of h, keeping the first _PINWHEEL_MAX_ROOTS brackets.
    def scan_node(carry, index):
        previous_t, previous_h, count, brackets = carry
        t = low + index.astype(x.dtype) * step
        value = h(t)
        is_change = (value > 0.0) != (previous_h > 0.0)
        slot = jax.nn.one_hot(count, _PINWHEEL_MAX_ROOTS, dtype=jnp.bool_) & is_change[..., None]
        brackets = jnp.where(
            slot[..., None], jnp.stack([previous_t, t], -1)[..., None, :], brackets
        )
        return (t, value, count + is_change.astype(jnp.int32), brackets), None

    empty = jnp.zeros((*angle_offset.shape, _PINWHEEL_MAX_ROOTS, 2), x.dtype)
    start = (low, h(low), jnp.zeros(angle_offset.shape, jnp.int32), empty)
    (_, _, count, brackets), _ = jax.lax.scan(scan_node, start, jnp.arange(1, _PINWHEEL_NODES))

    # Bisection inside each bracket: keep the half whose ends still differ in sign.
    offset3, u3 = angle_offset[..., None], u_const[..., None, :]
    h3 = lambda t: _pinwheel_preimage(u3, offset3, t)[2]
    lower_positive = h3(brackets[..., 0]) > 0.0

    def bisect(_, bracket):
        lower, upper = bracket
        middle = 0.5 * (lower + upper)
        keep_upper = (h3(middle) > 0.0) == lower_positive
        return jnp.where(keep_upper, middle, lower), jnp.where(keep_upper, upper, middle)

    lower, upper = jax.lax.fori_loop(
        0, _PINWHEEL_BISECTIONS, bisect, (brackets[..., 0], brackets[..., 1])
    )
    root = jax.lax.stop_gradient(0.5 * (lower + upper))  # [N, K, R]

    # One Newton step with the gradient flowing: it moves the root by less than the bisection error
    # but gives the implicit-function derivative dt/dx = -dh/dx / h'(t), so log_density is
    # differentiable in x (u3 here carries the gradient).
    u3 = u[..., None, :]
    feature0, feature1, value = _pinwheel_preimage(u3, offset3, root)
    determinant = 1.0 + _PINWHEEL_RATE * jnp.exp(root) * feature1  # = -h'(t)
    safe = jnp.where(jnp.abs(determinant) > 1e-6, determinant, 1e-6)
    root = root + value / safe
    feature0, feature1, _ = _pinwheel_preimage(u3, offset3, root)
    determinant = 1.0 + _PINWHEEL_RATE * jnp.exp(feature0) * feature1

    log_root = (
        _log_normal(feature0, 1.0, _PINWHEEL_RADIAL_STD)
        + _log_normal(feature1, 0.0, _PINWHEEL_TANGENTIAL_STD)
        - jnp.log(jnp.abs(determinant))
    )
    is_root = jnp.arange(_PINWHEEL_MAX_ROOTS)[None, None, :] < count[..., None]
    log_root = jnp.where(is_root, log_root, -jnp.inf).reshape(
        x.shape[0], _PINWHEEL_CLASSES * _PINWHEEL_MAX_ROOTS
    )
    return (
        logsumexp(log_root, axis=-1)
        - math.log(_PINWHEEL_CLASSES)
        - 2.0 * math.log(_PINWHEEL_SCALE)  # the Jacobian of x = 2 y in 2-D
    )


_LOG_DENSITIES = {
    "8gaussians": _log_density_8gaussians,
    "rings": _log_density_rings,
    "checkerboard": _log_density_checkerboard,
    "2spirals": _log_density_2spirals,
    "pinwheel": _log_density_pinwheel,
}


def log_density(name: str, x: ArrayLike) -> Array:
    """The normalised log-density of a toy at ``x``, in nats.

    Exact in closed form for ``8gaussians``, ``rings`` (a Rice density per ring, with a stable
    ``log I0`` from ``i0e``) and ``checkerboard`` (``-log 32`` on the support, ``-inf`` off it).
    ``2spirals`` integrates the arm parameter by Gauss-Legendre quadrature (1024 nodes; accurate to
    ~5e-6 nats where the density matters). ``pinwheel`` is an exact change of variables whose
    pre-images are found by a node scan plus bisection (float32 accuracy where the density exceeds
    ``e^-10`` of its peak; farther out a pre-image may be missed, which underestimates a density
    that is negligible there). All are pure JAX, jit-able, and differentiable in ``x`` (the
    checkerboard's gradient is zero).

    Args:
      name: One of :data:`NAMES`.
      x: Points, shape ``[N, 2]`` (any leading shape ``[..., 2]`` works).

    Returns:
      ``log p(x)``, shape ``[N]`` (``[...]``), in the floating dtype of ``x`` (float32 for
      integer input).

    Raises:
      ValueError: If ``name`` is unknown or ``x`` does not end in a dimension of size 2.

    Example:
      >>> import jax.numpy as jnp
      >>> float(log_density("checkerboard", jnp.zeros((1, 2)))[0])  # doctest: +ELLIPSIS
      -3.465...
    """
    _check_name(name)
    x = jnp.asarray(x)
    if x.ndim < 1 or x.shape[-1] != 2:
        raise ValueError(f"x must have shape [N, 2], got {x.shape}")
    if not jnp.issubdtype(x.dtype, jnp.floating):
        x = x.astype(jnp.float32)
    batch_shape = x.shape[:-1]
    flat = x.reshape(-1, 2)
    return _LOG_DENSITIES[name](flat).reshape(batch_shape)
