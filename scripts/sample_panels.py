"""Fresh samples of several trained image runs side by side, one titled grid each:

  python scripts/sample_panels.py docs/images/digits_samples.png \
      "IGEBM, 200 steps from noise=runs/igebm:200" \
      "short-run, 30 steps from noise=runs/shortrun:30" --data

Each ``TITLE=WORKDIR:STEPS`` restores the run's latest checkpoint and draws ``--num`` chains from
its config's noise with its training sampler for ``STEPS`` steps (a recovery-likelihood run:
``STEPS`` per level), as ``--task=generate`` does; ``--data`` adds a grid of test images.
"""

from __future__ import annotations

import argparse

import numpy as np

from experiments import eval_common, eval_images
from experiments import state as state_lib
from jaxebm import viz


def parse_run(text: str) -> tuple[str, str, int]:
    """``TITLE=WORKDIR:STEPS`` as ``(title, workdir, steps)``."""
    title, sep, rest = text.rpartition("=")
    workdir, colon, steps = rest.rpartition(":")
    if not sep or not colon or not title or not steps.isdigit() or int(steps) < 1:
        raise argparse.ArgumentTypeError(f"expected TITLE=WORKDIR:STEPS (STEPS >= 1), got {text!r}")
    return title, workdir, int(steps)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", help="PNG file to write")
    parser.add_argument("runs", nargs="+", type=parse_run, help="TITLE=WORKDIR:STEPS")
    parser.add_argument("--num", type=int, default=64, help="samples per run")
    parser.add_argument("--data", action="store_true", help="add a grid of test images")
    args = parser.parse_args(argv)
    panels, data = {}, None
    for title, workdir, steps in args.runs:
        config, dataset, model, state = state_lib.restore_run(workdir)
        config.eval.sample_steps = (steps,)
        run = eval_common.make_run(config, workdir, state, dataset, model)
        panels[title] = eval_images.fresh_chains(run, args.num)[0]
        data = np.asarray(dataset.test["x"][: args.num]) if data is None else data
    if args.data:
        panels["test images"] = data
    viz.plot_image_panels(args.out, panels, nrow=8, num_cols=len(panels))
    print(args.out)


if __name__ == "__main__":
    main()
