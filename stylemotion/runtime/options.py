"""``stream()``'s options in four groups, each a frozen dataclass: ``StreamSource`` (what plays, on which face),
``StreamSettings`` (the path's shape: fps, interpolation, intensity; plan.py), ``StreamConfig`` (how frames flow;
streamer.py) and ``EngineOptions`` (which engine renders). ``FLAT_OPTIONS`` maps each flat keyword ``stream()``
also takes to its group and field, and ``group_options`` turns either form into the four groups."""
from __future__ import annotations

import difflib
import os
from dataclasses import dataclass
from typing import Any

from ..errors import ConfigError
from .plan import StreamSettings
from .streamer import StreamConfig


@dataclass(frozen=True)
class StreamSource:
    """What plays and on which face. One source at most: ``script`` (``"happy:2,surprise:1.5:4"`` or
    ``[(emotion, seconds[, intensity])]``), ``lstm`` (a path or an ``EmotionLSTM``; ``predict`` emotions, endless
    when None), ``latents`` (``ws [N, num_ws, w_dim]`` rendered as given), or none (the identity, held until a
    control arrives). ``identity``: the face, as ws ``[1, num_ws, w_dim]`` or ``"latents.npz[:INDEX]"``; default
    the ``seed``'s face. ``directions``: a ``Directions`` or anything ``--directions`` takes (``space`` as
    ``--space``)."""

    script: Any = None
    lstm: Any = None
    predict: int | None = None
    latents: Any = None
    seed: int = 0
    identity: Any = None
    directions: Any = None
    space: str | None = None

    @property
    def endless(self) -> bool:
        """Whether the source never ends (no script, no latents, and no LSTM told how many emotions to predict)."""
        return self.script is None and self.latents is None and (self.lstm is None or self.predict is None)

    def validate(self) -> "StreamSource":
        if sum(x is not None for x in (self.script, self.lstm, self.latents)) > 1:
            raise ConfigError("give one source: script, lstm or latents")
        return self


@dataclass(frozen=True)
class EngineOptions:
    """Which engine renders, as ``open_engine`` takes them (``backend``, ``device``, ``precision``, ``onnx_path``,
    ``noise_mode``); ``generator``: the Generator whose mapping network makes the latents, when the model given to
    ``stream()`` is an Engine."""

    backend: str = "auto"
    device: str | None = None
    precision: str | None = None
    onnx_path: str | os.PathLike | None = None
    noise_mode: str = "const"
    generator: Any = None

    def validate(self) -> "EngineOptions":
        return self  # open_engine checks the values against what is installed


GROUPS = {"source": StreamSource, "settings": StreamSettings, "config": StreamConfig, "engine": EngineOptions}

# Each flat keyword of stream() -> (its group, the field it sets there).
FLAT_OPTIONS: dict[str, tuple[str, str]] = {
    **{name: ("source", name) for name in ("script", "lstm", "predict", "latents", "seed", "identity", "directions",
                                           "space")},
    **{name: ("settings", name) for name in ("fps", "interp", "transition", "speed", "truncation_psi",
                                             "temperature", "seconds")},
    "intensity": ("settings", "coefficient"),
    **{name: ("config", name) for name in ("mode", "batch", "lookahead", "max_late", "as_tensor", "worker")},
    **{name: ("engine", name) for name in ("backend", "device", "precision", "onnx_path", "noise_mode", "generator")},
}


def group_options(*, source: StreamSource | None = None, settings: StreamSettings | None = None,
                  config: StreamConfig | None = None, engine: EngineOptions | None = None,
                  **options) -> tuple[StreamSource, StreamSettings, StreamConfig, EngineOptions]:
    """``(source, settings, config, engine)``, each validated: a group given as is, else built from its flat
    keywords in ``options`` (``FLAT_OPTIONS``), else its defaults. ConfigError names an unknown keyword, a group
    of the wrong type, or a flat keyword given together with its group."""
    unknown = sorted(set(options) - set(FLAT_OPTIONS))
    if unknown:
        name = unknown[0]
        close = difflib.get_close_matches(name, list(FLAT_OPTIONS) + list(GROUPS), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else f"; options: {sorted(FLAT_OPTIONS)}"
        raise ConfigError(f"stream() has no option {name!r}{hint}")
    given = {"source": source, "settings": settings, "config": config, "engine": engine}
    values: dict[str, dict] = {group: {} for group in GROUPS}
    for name, value in options.items():
        group, field = FLAT_OPTIONS[name]
        if given[group] is not None:
            raise ConfigError(f"stream() got both {group}= and {name}=: set {field} in the {GROUPS[group].__name__} "
                              f"or leave {group}= out")
        values[group][field] = value
    for group, cls in GROUPS.items():
        if given[group] is None:
            given[group] = cls(**values[group])
        elif not isinstance(given[group], cls):
            raise ConfigError(f"stream(): {group}= must be a {cls.__name__}, got {type(given[group]).__name__}")
    for group in ("config", "settings", "source", "engine"):  # the order stream() has always checked them in
        given[group].validate()
    return given["source"], given["settings"], given["config"], given["engine"]
