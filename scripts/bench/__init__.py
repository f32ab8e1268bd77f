"""Throughput of jaxebm's samplers, convolutional energies and train steps, as JSON lines.

Run from the repository root:

  .venv/bin/python -m scripts.bench                                   # everything, 3 rounds
  .venv/bin/python -m scripts.bench --quick                           # tiny sizes, ~3 min
  taskset -c 0 .venv/bin/python -m scripts.bench --peers ../shared/peers \\
      --blackjax-python /tmp/venv-bj/bin/python \\
      --rounds 3 --out bench-1core.jsonl                              # steady one-core figures
  .venv/bin/python -m scripts.bench --only mlp,peak --rounds 5        # a subset
  taskset -c 0 .venv/bin/python -m scripts.bench --only peak,jem --peers ../shared/peers \\
      --torch-python /tmp/venv-torch/bin/python --rounds 3            # JEM against PyTorch
  taskset -c 0 .venv/bin/python -m scripts.bench --only discrete --peers ../shared/peers \\
      --torch-python /tmp/venv-torch/bin/python --rounds 3            # GWG, DMALA on Ising

The peers are scripts outside this repository, read only from the command line: ``--peers DIR``
names the folder holding ``blackjax_mala.py``, ``torch_jem.py`` and ``torch_gwg.py``
(``--peer-script``, ``--torch-script`` and ``--gwg-script`` name one of them directly), and
``--blackjax-python`` / ``--torch-python`` the interpreters that run them (the PyTorch peers
share one). Without them the peer figures are skipped, with a line on
stderr saying which arguments enable them.

Output: one JSON object per line on stdout (and in ``--out``), each with a ``"kind"``:

- ``"machine"`` (first line): versions, backend, device kind, CPU model and counts, load average.
- ``"figure"``: one measured quantity; ``"value"`` is the median over the interleaved rounds of
  ``"unit"``, ``"rounds"`` the per-round values, plus compile seconds, FLOP counts and the share
  of the matmul peak where they can be counted, and the sizes used.
- ``"ratio"``: quotients of two figures, the median of the per-round quotients (``> 1`` means
  the numerator is faster).
- ``"done"`` (last line): wall time and the load average at the end.

What is timed (see ``docs/benchmarks.md`` for figures and their reading):

- ``peak``: a float32 ``n x n`` matmul (``n = 4096``) back to back, the practical peak, GFLOP/s.
- ``mlp_ula``, ``mlp_mala``: ``jaxebm.samplers.langevin`` (calibrated, i.e. ULA) and ``mala`` on
  the 2-D MLP energy of the blackjax peer (``blackjax_mala.py``: 2 -> 128 -> 128 -> 1, SiLU,
  ``N(0, 1/fan_in)`` weights from key 0, plus ``0.05 |x|^2``), 4096 chains x 100 steps,
  step size 1, in one jitted ``run_chain``; chain-steps/s.
- ``plain_jax_ula``: the same ULA written in plain JAX as the peer writes it (``vmap(grad)`` of a
  per-example energy inside ``lax.scan``), the floor for what a framework kernel can cost.
- ``blackjax``: the peer itself (MALA, SGLD and its own plain-JAX ULA) in a subprocess with
  ``--blackjax-python``, once per round, interleaved with the rest.
- ``conv_scan_nn``, ``conv_scan``: ``ConvEnergy`` (widths 64, 64, 128, 128; strides 1, 2, 1, 2) on
  ``[64, 32, 32, 3]`` images, a 20-step tempered Langevin chain (step 1, noise 0.01) in one
  ``run_chain`` (``lax.scan``), with ``flax.linen.Conv`` (before) and ``jaxebm.nets.Conv`` (after).
- ``conv_loop_nn``, ``conv_loop``: the same 20 steps as a Python loop over a jitted single step.
- ``conv_unrolled_nn``, ``conv_unrolled``: the same chain with the scan fully unrolled
  (``run_chain(..., unroll=True)``): no loop body, so every convolution is at the top level.
- ``train_mlp``: ``make_train_step`` on the 2-D MLP, batch 1000, 10 MALA steps, persistent buffer.
- ``train_conv``, ``train_conv_nn``: ``make_train_step`` on ``ConvEnergy`` (``jaxebm.nets.Conv``,
  and ``flax.linen.Conv``), batch 64, 20 Langevin steps, persistent buffer; iterations/s.
- ``resnet_langevin``, ``train_resnet``: IGEBM's recipe (Langevin step 10, noise 0.005, gradient
  clipped to 0.01 per entry, spectral norm, L2 1, Adam with beta1 0) on a CPU-sized
  ``ResNetEnergy`` (stem 32, widths 32, 32, 64, 64), batch 32, K = 60: the chain alone
  (steps/s, Langevin image-steps/s) and the train step (iterations/s).
- ``resnet_igebm_langevin``, ``train_resnet_igebm``: the same at IGEBM's CIFAR-10 size (stem 64,
  widths 128, 128, 256, 256, 512, 512), batch 128, with a 2-step chain (a K = 60 iteration would
  take minutes); the train figure adds ``estimated_s_per_iteration_full_k``, the measured
  iteration plus 58 more chain steps at the chain figure's speed.
- ``jem_small`` (figures ``jem_wrn10_1``, ``jem_wrn10_2``) and ``jem_big`` (``jem_wrn28_10``):
  ``make_jem_step`` on a ``WideResNet`` (JEM's SGLD: step 1, noise 0.01, K = 20; 5% buffer
  re-initialisation, data noise 0.03, Adam 1e-4), batch 64 and 8; iterations/s and SGLD
  image-steps/s.
- ``torch_jem``: the eager PyTorch JEM step (``torch_jem.py --shared-batch``, the
  same work) at the ``jem_small`` sizes, NCHW and ``--channels-last``, run with
  ``--torch-python`` in a subprocess per size and layout once per round, with as many threads as
  this process may use cores (figures ``torch_jem_wrn10_1``, ``torch_jem_wrn10_1_cl``, ...).
- ``gwg_ising10``, ``gwg_ising50``, ``dmala_ising10``, ``dmala_ising50``:
  ``jaxebm.samplers.gibbs_with_gradients`` (proposal temperature 2) and ``dmala`` (``alpha =
  0.4``, the reference code's binary step 0.2) on ``lattice_ising(side, 0.1)`` (100 and 2,500
  spins, dense ``J``), 1,024 chains x 100 steps and 128 x 20, one jitted ``run_chain``;
  chain-steps/s, with the last step's mean acceptance and the final mean spin.
- ``plain_jax_gwg_ising10``, ``plain_jax_dmala_ising10``, ... : the same algorithms on binary
  states ``{0, 1}^L`` as the PyTorch code writes them (``torch_gwg.py``; ruqizhang's
  ``LangevinSampler``), a Python loop over a jitted step that evaluates ``log p`` and its gradient
  at the current state again every step; ``plain_jax_scan_gwg_ising10``, ...: the same moves in
  one ``lax.scan`` carrying ``log p`` and its gradient (one evaluation per step, as jaxebm).
- ``torch_gwg``: the eager PyTorch GWG peer (``torch_gwg.py``, one thread, ``python -O``) at the
  GWG sizes, with ``--torch-python``, once per size per round (``torch_gwg_ising10``, ...).

Compile seconds are ``jit(...).lower(...).compile()`` times. FLOPs come from XLA's cost analysis
(``cost_analysis()["flops"]``) of the *unoptimised* program with every chain ``lax.scan`` fully
unrolled: on the compiled program XLA counts a while-loop body once whatever its trip count (a
100-step chain reads as about three energy evaluations). Model FLOPs count two per multiply-add
of the network's matmuls or convolutions, forward plus input gradient, as the peer counts them.
Where the platform has ``resource``, figures also give this process's minor page faults, system
and user CPU seconds per call (allocation costs show up there). For the ResNet and WideResNet
figures the FLOPs of a K-step program are ``f(1) + (K - 1) (f(2) - f(1))`` from 1- and 2-step
unrolled lowerings (a chain step adds the same work each time). Groups for ``--only``: ``mlp``
(the sampler figures and the peer), ``conv``, ``train``, ``resnet``, ``igebm``, ``jem``
(``jem_small`` and ``torch_jem``), ``discrete`` (the Ising figures and ``torch_gwg``), ``peak``;
``jem_big`` is a name.

The package: ``measure`` (the machine line, timing and the ``Figure`` every benchmark returns),
``plan`` (sizes, names, groups and ratios), one module per group of benchmarks (``samplers``,
``conv``, ``train_steps``, ``jem``, ``discrete``) and ``__main__`` (the command line, rounds and
output).
"""
