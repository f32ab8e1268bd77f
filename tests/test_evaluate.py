"""The evaluation registry: what each task needs, what "all" picks, and the refusals."""

import pytest

from experiments import builders, evaluate
from jaxebm.data import lattice, text

# One (dataset, model) per kind of run a config can build; nothing is trained or called.
POINTS = builders.Dataset({}, {}, (2,), (-4.0, 4.0), None)
IMAGES = builders.Dataset({}, {}, (8, 8, 1), (-1.0, 1.0), None, 10)
TOKENS = builders.Dataset({}, {}, (16, 5), None, None, tokenizer=text.char_tokenizer("abcd"))
SPINS = builders.Dataset({}, {}, (9, 2), None, None, coupling=lattice.lattice_coupling(3, 0.2))
SUMS = TOKENS._replace(tokenizer=text.arithmetic_tokenizer(), is_correct=text.is_correct)
MAPS = builders.Dataset({}, {}, (61, 40, 1), None, None, 10, domains={"source": {}})
RESIDUAL = builders.Model(None, None, None, False, None, base_lm=object())
RECOVERY = builders.Model(None, None, None, False, None, schedule=object())
KINDS = {
    "toy": (POINTS, builders.Model(None, None, None, False, None)),
    "igebm": (IMAGES, builders.Model(None, None, None, False, None)),
    "igebm_conditional": (IMAGES, builders.Model(None, None, None, True, 10)),
    "drl": (IMAGES, RECOVERY),
    "jem": (IMAGES, builders.Model(None, None, None, False, 10, logits_fn=lambda v, x: x)),
    "speech": (MAPS, builders.Model(None, None, None, False, 10, logits_fn=lambda v, x: x)),
    "text": (TOKENS, builders.Model(None, None, None, False, None)),
    "lattice": (SPINS, builders.Model(None, None, None, False, None)),
    "residual": (TOKENS, RESIDUAL),
    "residual_sums": (SUMS, RESIDUAL),
}
EXPECTED = {
    "toy": ("density", "sample"),
    "igebm": ("generate", "inpaint", "denoise", "ood", "likelihood"),
    "drl": ("generate", "inpaint", "ood", "likelihood"),  # its chains run down the levels
    "igebm_conditional": (
        "generate",
        "inpaint",
        "denoise",
        "ood",
        "likelihood",
        "cross_class",
        "compose",
        "classify",
        "attack",
        "cas",
    ),
    "jem": (
        "generate",
        "inpaint",
        "denoise",
        "ood",
        "likelihood",
        "jem_classify",
        "jem_ood",
        "jem_attack",
        "jem_samples",
        "cas",
    ),
    "speech": (
        "generate",
        "inpaint",
        "denoise",
        "ood",
        "likelihood",
        "jem_classify",
        "jem_ood",
        "jem_attack",
        "jem_samples",
        "speech",
    ),
    "text": ("text_samples", "text_ranking", "infill"),
    "lattice": ("couplings",),
    "residual": ("text_samples", "text_ranking", "infill", "perplexity", "rerank"),
    "residual_sums": (
        "text_samples",
        "text_ranking",
        "infill",
        "perplexity",
        "rerank",
        "arithmetic",
    ),
}


@pytest.mark.parametrize("kind", list(KINDS))
def test_all_is_every_task_that_applies(kind):
    dataset, model = KINDS[kind]
    assert evaluate.applicable(dataset, model) == EXPECTED[kind]
    assert evaluate.select(dataset, model, "all") == EXPECTED[kind]
    # "all" among other names adds each task once, in the order asked.
    first = EXPECTED[kind][-1]
    assert evaluate.select(dataset, model, (first, "all")) == (first, *EXPECTED[kind][:-1])


def test_every_task_applies_to_some_run_and_needs_only_known_things():
    covered = {name for names in EXPECTED.values() for name in names}
    assert covered == set(evaluate.TASKS)
    for name, task in evaluate.TASKS.items():
        assert task.needs and set(task.needs) <= set(evaluate.NEEDS), name


@pytest.mark.parametrize(
    "kind, task, needs",
    [
        ("igebm", "classify", "needs a class-conditional energy"),
        ("jem", "attack", "needs a class-conditional energy"),
        ("igebm_conditional", "jem_ood", r"needs a classifier's logits"),
        ("toy", "inpaint", r"needs images \[H, W, C\]"),
        ("igebm_conditional", "density", "needs 2-D points"),
        ("text", "generate", r"needs images \[H, W, C\]"),
        ("igebm", "infill", r"needs token sequences \(a text set\)"),
        (
            "text",
            "perplexity",
            r"needs a base LM \(loss.mode='lm': a residual EBM, a text JEM by NCE\)",
        ),
        ("residual", "arithmetic", r"needs text whose correctness can be checked"),
        ("jem", "speech", r"needs log-mel maps of a speech set"),
        ("speech", "cas", r"needs class-conditional chains on an image set \(a class-"),
        ("drl", "denoise", r"needs chains on one energy of the data \(a recovery-likelihood"),
    ],
)
def test_a_task_that_does_not_apply_is_refused_with_the_tasks_that_do(kind, task, needs):
    dataset, model = KINDS[kind]
    listed = ", ".join(EXPECTED[kind])
    with pytest.raises(ValueError, match=f"{needs}.*; the tasks of this run are {listed}$"):
        evaluate.select(dataset, model, task)
    with pytest.raises(ValueError, match=needs):
        evaluate.select(dataset, model, ("all", task))


def test_an_unknown_task_is_refused_with_every_name():
    dataset, model = KINDS["toy"]
    with pytest.raises(ValueError, match="unknown task 'samples': choose from all, density, "):
        evaluate.select(dataset, model, "samples")


def test_a_refused_task_runs_nothing(tmp_path):
    # The run is checked before any task starts: nothing is written.
    dataset, model = KINDS["toy"]
    run = evaluate.Run(None, str(tmp_path), None, dataset, model, None, None)
    with pytest.raises(ValueError, match="needs images"):
        evaluate.run_tasks(run, ("density", "generate"))
    assert list(tmp_path.iterdir()) == []
