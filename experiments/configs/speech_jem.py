r"""JEM on spoken digits: log-mel maps of synthetic voices, sized for a 2-core CPU (offline).

  python -m experiments.train --config=experiments/configs/speech_jem.py --workdir=runs/speech_jem
The cross-entropy baseline (same network, data and budget; no chains): speech_ce.py.
Smoke test (about a minute, mostly compilation): speech_jem.py:quick.

The ten digits spoken by the four voices of the group "us" (espeak-ng's en-us with the m1, m3,
f1 and f2 variants; jaxebm.data.speech.VOICE_GROUPS), 16 utterances per voice and digit with
their own speaking rate and pitch, every fourth held out for testing. Each utterance is 1 s at
8 kHz, as 61 frames of 40 log-mel bands (32 ms windows, 16 ms hop), each band normalised by the
training maps' statistics. The classifier is a 1-D convolutional network over the frames
(jaxebm.nets.SpeechClassifier); SGLD runs on the maps, fresh chains uniform over each
dimension's mean +- 1 standard deviation (buffer.init="data_scaled").

Evaluation: jem_classify (accuracy, ECE), speech (accuracy by domain, confusion, OOD AUROC of
E(x) against the chains' noise, logmel.png with real and sampled maps), jem_ood. Results:
docs/results.md, "Speech".
"""

from experiments.configs import base, jem, variants


def get_config(arg: str | None = None):
    config = jem.recipe("spoken_digits")
    config.experiment = "speech_jem"
    config.data.voices = "us"
    config.data.variants = 16  # 640 utterances, 480 for training
    config.model.name = "speech_classifier"
    config.model.stride_on = base.get_config().model.stride_on  # a WideResNet field: unused
    config.model.widths = (64, 64, 128)
    config.model.strides = (1, 2, 2)
    config.sampler.num_steps = 10  # the persistent buffer carries the chains on
    config.buffer.capacity = 1_000
    config.buffer.init = "data_scaled"  # features are not images in [-1, 1]
    # +-1 standard deviation, not the +-3 of nnet_pytorch's SGLD: from +-3 the 10-step chains stay
    # far from the data (energy gap ~8 against ~1.5) and the generative term only tells maps from
    # noise (docs/results.md, "Speech").
    config.buffer.init_scale = 1.0
    config.train.num_steps = 600
    config.optim.learning_rate = 1e-3
    config.optim.warmup_steps = 100
    config.optim.decay_steps = (480, 540)
    config.train.log_every = 20
    config.checkpoint.every_steps = 200
    config.eval.tasks = ("jem_classify", "speech", "jem_ood")
    config.eval.num_eval_examples = 400
    config.eval.num_sample_steps = 100
    return variant(config, arg)


def quick(config):
    """The smoke-test size: JEM's quick settings, a tiny 1-D network, 4 utterances a voice."""
    config = jem.quick(config)
    default = base.get_config().model  # the WideResNet's fields stay unused
    config.model.depth, config.model.widen_factor = default.depth, default.widen_factor
    config.model.widths = (16, 16)
    config.model.strides = (1, 2)
    config.data.variants = 4
    return config


def variant(config, arg: str | None):
    """Applies the ``:quick`` suffix; rejects unknown ones."""
    return variants.apply(config, arg, quick)
