"""What the bench measures: the sizes (full and ``--quick``), figure names, groups and ratios."""

__all__ = ["DISCRETE", "FULL", "GROUPS", "NAMES", "QUICK", "RATIOS"]

FULL = {
    "peak_n": 4096,
    "peak_seconds": 3.0,
    "chains": 4096,
    "chain_steps": 100,
    "hidden": 128,
    "layers": 2,
    "mlp_calls": 5,
    "peer_repeats": 5,
    "conv_batch": 64,
    "conv_image": (32, 32, 3),
    "conv_widths": (64, 64, 128, 128),
    "conv_strides": (1, 2, 1, 2),
    "conv_steps": 20,
    "conv_calls": 1,
    "train_mlp_batch": 1000,
    "train_mlp_steps": 10,
    "train_mlp_calls": 5,
    "train_conv_batch": 64,
    "train_conv_steps": 20,
    "train_conv_calls": 2,
    "train_conv_nn_calls": 1,
    # IGEBM's ResNet energy: a CPU-sized one at the full recipe (K = 60), and their CIFAR-10 model
    # (128 filters) at batch 128 with a 2-step chain (a K = 60 iteration is ~2e13 FLOPs: minutes).
    "resnet_cpu": {"stem_width": 32, "widths": (32, 32, 64, 64)},
    "resnet_batch": 32,
    "resnet_steps": 60,
    "resnet_calls": 1,
    "resnet_igebm": {"stem_width": 64, "widths": (128, 128, 256, 256, 512, 512)},
    "igebm_batch": 128,
    "igebm_chain_steps": 2,
    "igebm_full_steps": 60,
    "igebm_calls": 1,
    # JEM: WRN-10-1 and WRN-10-2 at batch 64 against the PyTorch peer; WRN-28-10 (JEM's own
    # network) at batch 8, the size the peer's README times.
    "jem_wrn": ((10, 1), (10, 2)),
    # Both places for a downsampling block's stride, the same network on both sides: "first"
    # (Zagoruyko & Komodakis; the peer's --stride-first) and "second" (JEM's wide_basic).
    "jem_strides": ("first", "second"),
    "jem_batch": 64,
    "jem_steps": 20,
    "jem_calls": 3,  # the median of 3 timed iterations a round, as the peer's --iters 3
    "jem_big": (28, 10),
    "jem_big_batch": 8,
    "jem_big_calls": 1,
    "torch_iters": 3,
    # Discrete samplers on lattice Ising models (dense J): side -> (chains, steps). A 50 x 50
    # step costs ~2 * 2500^2 multiply-adds per chain and evaluation, hence fewer chains and steps.
    "ising": {10: (1024, 100), 50: (128, 20)},
    "ising_sigma": 0.1,
    "ising_calls": 2,
    "gwg_temperature": 2.0,
    "dmala_binary_step": 0.2,  # the reference's binary step s (its default); jaxebm's alpha = 2 s
    "torch_gwg_warmup": 3,
    # Generation (experiments.chains): (batch, chain steps, config variant) of the digits JEM
    # and of a CIFAR-10-sized one (WRN-28-10; two steps, as a step costs the same every time).
    "generate_digits": (512, 100, None),
    "generate_cifar10": (8, 2, None),
    "generate_calls": 1,
}
QUICK = {
    **FULL,
    "peak_n": 256,
    "peak_seconds": 0.2,
    "chains": 256,
    "chain_steps": 10,
    "mlp_calls": 2,
    "peer_repeats": 2,
    "conv_batch": 2,
    "conv_image": (16, 16, 3),
    "conv_widths": (8, 8, 16, 16),
    "conv_steps": 3,
    "conv_calls": 1,
    "train_mlp_batch": 64,
    "train_mlp_steps": 2,
    "train_mlp_calls": 2,
    "train_conv_batch": 2,
    "train_conv_steps": 2,
    "train_conv_calls": 1,
    "resnet_cpu": {"stem_width": 4, "widths": (4, 8)},
    "resnet_batch": 2,
    "resnet_steps": 2,
    "resnet_igebm": {"stem_width": 4, "widths": (8, 8)},
    "igebm_batch": 2,
    "igebm_chain_steps": 2,
    "jem_wrn": ((10, 1),),
    "jem_batch": 2,
    "jem_steps": 2,
    "jem_big": (10, 2),
    "jem_big_batch": 2,
    "torch_iters": 1,
    "ising": {10: (8, 3), 50: (2, 2)},
    "ising_calls": 1,
    "torch_gwg_warmup": 1,
    "generate_digits": (8, 2, "quick"),
    "generate_cifar10": (4, 1, "quick"),
}
# The discrete figures: name -> (variant, sampler, side) of ``discrete.build_discrete``.
DISCRETE = {
    f"{prefix}{sampler}_ising{side}": (variant, sampler, side)
    for side in (10, 50)
    for sampler in ("gwg", "dmala")
    for variant, prefix in (
        ("jaxebm", ""),
        ("plain_jax", "plain_jax_"),
        ("plain_jax_scan", "plain_jax_scan_"),
    )
}
NAMES = (
    "peak",
    "mlp_ula",
    "mlp_mala",
    "plain_jax_ula",
    "blackjax",
    "conv_scan_nn",
    "conv_scan",
    "conv_loop_nn",
    "conv_loop",
    "conv_unrolled_nn",
    "conv_unrolled",
    "train_mlp",
    "train_conv",
    "train_conv_nn",
    "resnet_langevin",
    "train_resnet",
    "resnet_igebm_langevin",
    "train_resnet_igebm",
    "jem_small",
    "jem_big",
    "torch_jem",
    "generate",
    *DISCRETE,
    "torch_gwg",
)
GROUPS = {
    "mlp": ("mlp_ula", "mlp_mala", "plain_jax_ula", "blackjax"),
    "conv": (
        "conv_scan_nn",
        "conv_scan",
        "conv_loop_nn",
        "conv_loop",
        "conv_unrolled_nn",
        "conv_unrolled",
    ),
    "train": ("train_mlp", "train_conv", "train_conv_nn"),
    "resnet": ("resnet_langevin", "train_resnet"),
    "igebm": ("resnet_igebm_langevin", "train_resnet_igebm"),
    "jem": ("jem_small", "torch_jem"),
    "generate": ("generate",),
    "discrete": (*DISCRETE, "torch_gwg"),
}
# (name, numerator figure, denominator figure, target or None).
RATIOS = (
    ("jaxebm_mala_over_blackjax_mala", "mlp_mala", "blackjax_mala", 1.0),
    ("jaxebm_ula_over_plain_jax_ula", "mlp_ula", "plain_jax_ula", 1.0),
    ("jaxebm_ula_over_blackjax_sgld", "mlp_ula", "blackjax_sgld", None),
    ("jaxebm_ula_over_peer_plain_jax_ula", "mlp_ula", "peer_plain_jax_ula", None),
    ("conv_scan_over_loop_before", "conv_scan_nn", "conv_loop_nn", None),
    ("conv_scan_over_loop_after", "conv_scan", "conv_loop", None),
    ("conv_scan_after_over_before", "conv_scan", "conv_scan_nn", None),
    ("conv_scan_over_unrolled_before", "conv_scan_nn", "conv_unrolled_nn", None),
    ("conv_scan_over_unrolled_after", "conv_scan", "conv_unrolled", None),
    ("train_conv_after_over_before", "train_conv", "train_conv_nn", None),
    ("jem_wrn10_1_over_torch", "jem_wrn10_1", "torch_jem_wrn10_1", 1.0),
    ("jem_wrn10_1_over_torch_channels_last", "jem_wrn10_1", "torch_jem_wrn10_1_cl", None),
    ("jem_wrn10_2_over_torch", "jem_wrn10_2", "torch_jem_wrn10_2", 1.0),
    ("jem_wrn10_2_over_torch_channels_last", "jem_wrn10_2", "torch_jem_wrn10_2_cl", None),
    *(
        (
            f"jem_wrn10_{w}_second{over}",
            f"jem_wrn10_{w}_second",
            f"torch_jem_wrn10_{w}_second{cl}",
            t,
        )
        for w in (1, 2)
        for over, cl, t in (("_over_torch", "", 1.0), ("_over_torch_channels_last", "_cl", None))
    ),
    *(
        ratio
        for side in (10, 50)
        for sampler in ("gwg", "dmala")
        for ratio in (
            (
                f"{sampler}_ising{side}_over_plain_jax",
                f"{sampler}_ising{side}",
                f"plain_jax_{sampler}_ising{side}",
                1.0,
            ),
            (
                f"{sampler}_ising{side}_over_plain_jax_scan",
                f"{sampler}_ising{side}",
                f"plain_jax_scan_{sampler}_ising{side}",
                None,
            ),
        )
    ),
    *(
        (f"gwg_ising{side}_over_torch", f"gwg_ising{side}", f"torch_gwg_ising{side}", None)
        for side in (10, 50)
    ),
)
