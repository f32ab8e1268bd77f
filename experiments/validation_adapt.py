"""The checks of domain adaptation and of the speech sets: what ``data.target_domain`` may name
(an image shift, a voice group, a held-out speaker), the fields only speech reads, the
data-scaled chain start and the adaptation terms of the loss (``validate_config`` calls
:func:`check_adaptation`)."""

from __future__ import annotations

import ml_collections

import jaxebm
from experiments.configs import base as base_config
from experiments.options import check, choose, is_number, non_negative, positive, same
from experiments.speech import FEATURE_NORMS, SPEECH_NAMES
from jaxebm.data import speech

__all__ = ["check_adaptation"]

_SPEECH_FIELDS = ("voices", "variants", "feature_norm")
BUFFER_INITS = ("uniform", "data_scaled")


def _target_domains(config: ml_collections.ConfigDict) -> tuple[str, ...]:
    """What ``data.target_domain`` may name for ``data.name``, ``""`` (no adaptation) first."""
    data = config.data
    if data.name == "spoken_digits":
        return ("", *(group for group in speech.VOICE_GROUPS if group != data.voices))
    if data.name == "spoken_digit":
        return ("", data.voices)
    return ("", *jaxebm.data.transfer.SHIFTS)


def _check_speech(config: ml_collections.ConfigDict) -> None:
    data, default = config.data, base_config.get_config().data
    if data.name not in SPEECH_NAMES:
        for field in _SPEECH_FIELDS:
            if not same(data[field], default[field]):
                raise ValueError(
                    f"data.{field} applies to the speech sets ({', '.join(SPEECH_NAMES)}) only: "
                    f"leave it at {default[field]!r}, got {data[field]!r}"
                )
        if config.model.name == "speech_classifier":
            raise ValueError(
                "model.name='speech_classifier' reads log-mel maps: use data.name in "
                f"{', '.join(map(repr, SPEECH_NAMES))}, got {data.name!r}"
            )
        return
    choose("data.feature_norm", "feature normalisation", data.feature_norm, FEATURE_NORMS)
    if data.name == "spoken_digits":
        choose("data.voices", "voice group", data.voices, tuple(speech.VOICE_GROUPS))
        check(data, "data.variants", lambda n: positive(n) and n >= 4, ">= 4 (every 4th is test)")
    else:
        speakers = [name for name in str(data.voices).split(",") if name]
        unknown = [name for name in speakers if name not in speech.SPEAKERS]
        if not speakers or unknown:
            raise ValueError(
                "data.voices names spoken_digit's held-out speakers, comma separated, from "
                f"{', '.join(speech.SPEAKERS)}; got {data.voices!r}"
            )
        if not same(data.variants, default.variants):
            raise ValueError(
                "data.variants applies to the synthetic spoken_digits only: leave it at "
                f"{default.variants}, got {data.variants}"
            )
    if config.model.name not in ("speech_classifier", "wideresnet"):
        raise ValueError(
            "the speech sets give log-mel maps [T, F, 1] for a classifier: use model.name="
            f"'speech_classifier' (or 'wideresnet'), got {config.model.name!r}"
        )


def _check_buffer_init(config: ml_collections.ConfigDict) -> None:
    buffer = config.buffer
    choose("buffer.init", "chain start", buffer.init, BUFFER_INITS)
    check(buffer, "buffer.init_scale", positive, "> 0 (standard deviations either side)")
    if buffer.init == "data_scaled" and (
        config.data.name not in SPEECH_NAMES and config.data.name != "digits"
    ):
        raise ValueError(
            "buffer.init='data_scaled' needs an in-memory set of continuous inputs (the speech "
            f"sets, digits), got data.name={config.data.name!r}"
        )


def _check_loss_terms(config: ml_collections.ConfigDict) -> None:
    loss = config.loss
    for field in ("im_weight", "pseudo_weight"):
        check(loss, f"loss.{field}", non_negative, ">= 0")
    check(
        loss,
        "loss.pseudo_threshold",
        lambda t: is_number(t) and 0 < t <= 1,
        "in (0, 1] (the confidence a pseudo-label needs)",
    )
    check(loss, "loss.adapt_warmup", non_negative, ">= 0 (steps before the adaptation terms)")
    if (loss.im_weight or loss.pseudo_weight) and loss.mode == "lm":
        raise ValueError(
            "loss.im_weight and loss.pseudo_weight adapt a classifier trained by chains; "
            "loss.mode='lm' is not supported with them: set both to 0"
        )


def check_adaptation(config: ml_collections.ConfigDict, *, labelled: bool) -> None:
    """``data.target_domain`` and ``data.gen_on_source``, the speech fields, ``buffer.init`` and
    the loss's adaptation terms; ``labelled``: ``data.name`` has labels."""
    data, name = config.data, config.data.name
    _check_speech(config)
    domains = _target_domains(config)
    if data.target_domain not in domains:
        what = {"spoken_digits": "target voice group", "spoken_digit": "target speaker"}
        raise ValueError(
            f"unknown {what.get(name, 'domain shift')} {data.target_domain!r}: choose one of "
            f"{', '.join(map(repr, domains))} for data.target_domain ('': no adaptation)"
        )
    if data.gen_on_source and not data.target_domain:
        raise ValueError(
            "data.gen_on_source applies to domain adaptation only: set data.target_domain too, "
            "or data.gen_on_source=False"
        )
    if data.labels_per_class or data.target_domain:
        field = "data.labels_per_class" if data.labels_per_class else "data.target_domain"
        if data.labels_per_class and data.target_domain:
            raise ValueError(
                "data.labels_per_class and data.target_domain do not combine: set one of them "
                f"(got {data.labels_per_class} and {data.target_domain!r})"
            )
        if not labelled:
            raise ValueError(f"{field} masks or shifts labelled data; {name!r} has no labels")
        if config.loss.objective != "jem":
            raise ValueError(
                f"{field} needs loss.objective='jem' (only JEM's loss reads the label and "
                f"generative masks), got {config.loss.objective!r}"
            )
    _check_buffer_init(config)
    _check_loss_terms(config)
