"""The WideResNet's stride placement (``stride_on``): JEM's network against a plain ``lax``
reference, equal parameter shapes, and the forward FLOPs of both placements; and the networks'
bfloat16 compute (``dtype``): float32 parameters and energies, a bfloat16 JEM config that trains."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

import jaxebm
from experiments import builders, train, validation
from experiments import state as run_state
from experiments.configs import cifar10_jem, digits_jem, speech_jem, text_jem, toy2d


def reference_logits(params, x, stride_on, slope=0.2):
    """WRN-10-k logits from the parameter tree, written with ``lax`` convolutions only.

    JEM's block (``stride_on="second"``): ``conv_b(act(conv_a(act(x))))`` with 1-pixel padding
    and the stride on ``conv_b``, plus a strided 1x1 projection of ``x`` where the shape changes.
    """
    act = lambda h: jnp.where(h >= 0, h, slope * h)

    def conv(p, h, stride, padding):
        out = lax.conv_general_dilated(
            h, p["kernel"], (stride, stride), padding, dimension_numbers=("NHWC", "HWIO", "NHWC")
        )
        return out + p["bias"].reshape(1, 1, 1, -1)

    pad = "SAME" if stride_on == "first" else ((1, 1), (1, 1))
    h = conv(params["Conv_0"], x, 1, "SAME")
    for index, stride in enumerate((1, 2, 2)):
        block = params[f"_WideBlock_{index}"]
        first, second = (stride, 1) if stride_on == "first" else (1, stride)
        out = conv(block["Conv_1"], act(conv(block["Conv_0"], act(h), first, pad)), second, pad)
        shortcut = conv(block["Conv_2"], h, stride, "VALID") if "Conv_2" in block else h
        h = out + shortcut
    h = jnp.mean(act(h), axis=(1, 2))
    return h @ params["Dense_0"]["kernel"] + params["Dense_0"]["bias"][None]


def conv_flops(fn, *args):
    """Multiply-adds x 2 of every convolution in ``fn``'s jaxpr, padding included (as
    ``torch.utils.flop_counter`` counts a convolution)."""

    def walk(jaxpr):
        total = 0
        for eqn in jaxpr.eqns:
            if eqn.primitive.name == "conv_general_dilated":
                kernel, out = eqn.invars[1].aval.shape, eqn.outvars[0].aval.shape
                total += 2 * np.prod(out) * np.prod(kernel[:-1])
            for param in eqn.params.values():
                inner = getattr(param, "jaxpr", param)
                if isinstance(inner, jax.extend.core.Jaxpr):
                    total += walk(inner)
        return total

    return walk(jax.make_jaxpr(fn)(*args).jaxpr)


@pytest.mark.parametrize("stride_on", ["first", "second"])
def test_wideresnet_matches_a_lax_reference_of_its_block(stride_on):
    module = jaxebm.nets.WideResNet(depth=10, widen_factor=1, num_classes=3, stride_on=stride_on)
    x = jax.random.uniform(jax.random.key(0), (2, 8, 8, 1), minval=-1.0, maxval=1.0)
    params = jax.jit(module.init)(jax.random.key(1), x)["params"]
    reference = jax.jit(reference_logits, static_argnums=2)
    got = jax.jit(module.apply)({"params": params}, x)
    np.testing.assert_allclose(got, reference(params, x, stride_on), rtol=1e-5, atol=1e-5)
    # The other placement's reference differs: the check tells the two apart.
    other = reference(params, x, "second" if stride_on == "first" else "first")
    assert np.max(np.abs(np.asarray(got - other))) > 1e-3


def test_stride_placements_share_parameters_and_differ_in_flops():
    # Shapes only: nothing runs. A batch of 16 (16,384 output positions at 32x32) is where
    # jaxebm.nets.conv starts folding narrow convolutions; FLOPs below are per image.
    x = jax.ShapeDtypeStruct((16, 32, 32, 3), jnp.float32)
    shapes, model, executed, xla = {}, {}, {}, {}
    for stride_on in ("first", "second"):
        module = jaxebm.nets.WideResNet(depth=10, widen_factor=1, stride_on=stride_on)
        params = jax.eval_shape(module.init, jax.random.key(0), x)
        shapes[stride_on] = jax.tree.map(lambda leaf: leaf.shape, params)
        reference = functools.partial(reference_logits, stride_on=stride_on)
        model[stride_on] = conv_flops(reference, params["params"], x) / 16e6
        executed[stride_on] = conv_flops(module.apply, params, x) / 16e6
        lowered = jax.jit(module.apply).lower(params, x)
        xla[stride_on] = lowered.cost_analysis()["flops"] / 16e6
    assert shapes["first"] == shapes["second"]
    # WRN-10-1 on 32x32x3, per image: 25.0 and 39.2 MFLOP, as counted for the PyTorch peer.
    assert model["first"] == pytest.approx(25.0, abs=0.01)
    assert model["second"] == pytest.approx(39.16, abs=0.01)
    # jaxebm.nets.conv folds pairs of columns into the features of its three stride-1
    # convolutions with at most 16 features (the stem, 3 -> 16, and the first group's two
    # 16 -> 16), with the zero taps of the folded kernels: per image 1.207 MFLOP for the stem
    # (a [3, 2, 6, 32] kernel over 32 x 16 column pairs, the last column on its own) in place of
    # 0.885, and 6.439 in place of 4.719 for each 16 -> 16: 3.76 MFLOP more in either placement.
    for stride_on in model:
        assert executed[stride_on] == pytest.approx(model[stride_on] + 3.76, abs=0.01)
    # XLA counts no multiplications by padding; elementwise work is small.
    for stride_on in executed:
        assert 0.9 * executed[stride_on] < xla[stride_on] < executed[stride_on], xla
    with pytest.raises(ValueError, match="stride_on must be one of first, second"):
        jax.eval_shape(jaxebm.nets.WideResNet(stride_on="both").init, jax.random.key(0), x)


def test_jem_configs_build_jems_network_and_others_refuse_the_field():
    assert digits_jem.get_config().model.stride_on == "second"
    assert cifar10_jem.get_config("quick").model.stride_on == "second"
    assert speech_jem.get_config().model.stride_on == "first"  # not a WideResNet: unused
    config = digits_jem.get_config("quick")
    dataset = builders.make_dataset(config)
    assert builders.make_energy(config, dataset).module.stride_on == "second"
    config.model.stride_on = "third"
    with pytest.raises(ValueError, match="unknown stride placement 'third'"):
        validation.validate_config(config)
    config = toy2d.get_config("quick")
    config.model.stride_on = "second"
    with pytest.raises(ValueError, match="model.stride_on applies to model.name='wideresnet'"):
        validation.validate_config(config)


# --- bfloat16 compute ----------------------------------------------------------------------------


def operand_dtypes(fn, *args):
    """``{primitive: {dtypes of its inputs}}`` of the convolutions and products ``fn`` runs."""
    found = {}

    def walk(jaxpr):
        for eqn in jaxpr.eqns:
            if eqn.primitive.name in ("conv_general_dilated", "dot_general"):
                found.setdefault(eqn.primitive.name, set()).update(
                    str(v.aval.dtype) for v in eqn.invars
                )
            for param in eqn.params.values():
                inner = getattr(param, "jaxpr", param)
                if isinstance(inner, jax.extend.core.Jaxpr):
                    walk(inner)

    walk(jax.make_jaxpr(fn)(*args).jaxpr)
    return found


@pytest.mark.parametrize(
    "module, takes_label",
    [
        (jaxebm.nets.WideResNet(depth=10, widen_factor=1, num_classes=3, stride_on="second"), 0),
        pytest.param(  # spectral norm's compile: slow; the WideResNet covers the convolutions
            jaxebm.nets.ResNetEnergy(widths=(8,), stem_width=8, num_classes=3),
            1,
            marks=pytest.mark.slow,
        ),
        (jaxebm.nets.ConvEnergy(widths=(8, 8), strides=(1, 2)), 0),
        (jaxebm.nets.MLPEnergy(hidden=(16, 16), quadratic=0.5), 0),
    ],
    ids=["wideresnet", "resnet", "conv", "mlp"],
)
def test_bfloat16_networks_keep_float32_parameters_and_outputs(module, takes_label):
    x = jax.random.uniform(jax.random.key(0), (4, 8, 8, 1), minval=-1.0, maxval=1.0)
    labels = (jnp.array([0, 1, 2, 0]),) if takes_label else ()
    variables = jax.jit(module.init)(jax.random.key(1), x, *labels)
    half = module.clone(dtype=jnp.bfloat16)
    assert {leaf.dtype for leaf in jax.tree.leaves(variables)} == {jnp.dtype(jnp.float32)}
    energy = lambda x: half.apply(variables, x, *labels)

    @jax.jit
    def outputs(x):
        grad = jax.grad(lambda x: jnp.sum(energy(x)))(x)
        return module.apply(variables, x, *labels), energy(x), grad

    full_out, half_out, grad = outputs(x)
    assert half_out.dtype == jnp.float32 and half_out.shape == full_out.shape
    scale = float(jnp.max(jnp.abs(full_out)))
    assert 0 < float(jnp.max(jnp.abs(half_out - full_out))) < 0.05 * scale
    assert grad.dtype == jnp.float32 and bool(jnp.all(jnp.isfinite(grad)))
    dtypes = operand_dtypes(energy, x)
    # Every convolution computes in bfloat16; so does every product of the MLP (a spectral
    # norm's power iteration on the float32 kernels is the only float32 product elsewhere).
    assert dtypes.get("conv_general_dilated", {"bfloat16"}) == {"bfloat16"}, dtypes
    if isinstance(module, jaxebm.nets.MLPEnergy):
        assert dtypes["dot_general"] == {"bfloat16"}, dtypes


@pytest.mark.slow  # compiling the bfloat16 JEM step takes ~45 s on one core (seconds if cached)
def test_bfloat16_quick_config_trains_with_finite_numbers():
    config = digits_jem.get_config("bf16,quick")
    assert config.model.dtype == "bfloat16" and config.train.num_steps == 4
    config.train.num_devices = 1
    run = train.build(config)
    assert run.model.module.dtype == jnp.bfloat16
    state = run_state.init_state(config, run.dataset, run.model, run.tx, run.mesh)
    start = jax.tree.map(np.asarray, state.params)
    for step in range(2):
        batch = builders.train_batch(config, run.dataset, step)
        state, metrics = run.step_fn(state, jaxebm.parallel.shard_batch(batch, run.mesh))
        assert all(np.isfinite(value) for value in jax.device_get(metrics).values()), metrics
    assert int(state.num_nonfinite) == 0
    assert {leaf.dtype for leaf in jax.tree.leaves(state.params)} == {jnp.dtype(jnp.float32)}
    assert state.buffer.x.dtype == jnp.float32 and bool(jnp.all(jnp.isfinite(state.buffer.x)))
    moved = jax.tree.map(lambda a, b: bool(np.any(np.asarray(a) != b)), state.params, start)
    assert all(jax.tree.leaves(moved))


def test_model_dtype_is_validated():
    config = digits_jem.get_config("quick")
    config.model.dtype = "float16"
    with pytest.raises(ValueError, match="unknown compute dtype 'float16'"):
        validation.validate_config(config)
    config = text_jem.get_config("quick")
    config.model.dtype = "bfloat16"
    with pytest.raises(ValueError, match="model.dtype applies to model.name="):
        validation.validate_config(config)
