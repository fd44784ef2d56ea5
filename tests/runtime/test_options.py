"""stream()'s options: the four groups and the flat keywords make the same stream; an unknown keyword, a group
given together with one of its flat keywords, and a group of the wrong type are errors that name the culprit."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from stylemotion.errors import ConfigError
from stylemotion.runtime import (FLAT_OPTIONS, EngineOptions, StreamConfig, StreamSettings, StreamSource,
                                 stream)
from stylemotion.runtime.options import GROUPS, group_options

# Every keyword stream() took before its options were grouped: each must still work.
FLAT_NAMES = {"directions", "script", "lstm", "predict", "latents", "seed", "identity", "fps", "mode", "backend",
              "device", "precision", "onnx_path", "batch", "lookahead", "max_late", "interp", "transition",
              "intensity", "speed", "truncation_psi", "temperature", "seconds", "space", "as_tensor", "generator",
              "noise_mode", "worker"}


def test_the_table_names_every_flat_keyword_and_a_real_field_for_each():
    assert set(FLAT_OPTIONS) == FLAT_NAMES
    for name, (group, field) in FLAT_OPTIONS.items():
        assert field in {f.name for f in dataclasses.fields(GROUPS[group])}, (name, group, field)
    for cls in (StreamSource, EngineOptions):  # the new groups hold nothing a flat keyword cannot set
        group = next(g for g, c in GROUPS.items() if c is cls)
        assert {f.name for f in dataclasses.fields(cls)} == {f for g, f in FLAT_OPTIONS.values() if g == group}


def test_flat_keywords_and_groups_give_the_same_groups():
    flat = group_options(script="happy:1", seed=3, space="w", fps=12, intensity=2.0, interp="linear",
                         mode="realtime", batch=2, lookahead=0.5, worker=False, backend="torch", noise_mode="const")
    grouped = group_options(source=StreamSource(script="happy:1", seed=3, space="w"),
                            settings=StreamSettings(fps=12, coefficient=2.0, interp="linear"),
                            config=StreamConfig(mode="realtime", batch=2, lookahead=0.5, worker=False),
                            engine=EngineOptions(backend="torch", noise_mode="const"))
    assert flat == grouped
    assert group_options() == (StreamSource(), StreamSettings(), StreamConfig(), EngineOptions())
    mixed = group_options(source=StreamSource(script="happy:1", seed=3, space="w"), fps=12, intensity=2.0,
                          interp="linear", config=StreamConfig(mode="realtime", batch=2, lookahead=0.5, worker=False),
                          backend="torch")
    assert mixed == flat


def test_a_stream_from_flat_keywords_equals_one_from_groups(G, dirs):
    flat = stream(G, directions=dirs, script="happy:0.5", seed=2, fps=6, intensity=2.0, batch=2, backend="torch")
    grouped = stream(G, source=StreamSource(directions=dirs, script="happy:0.5", seed=2),
                     settings=StreamSettings(fps=6, coefficient=2.0), config=StreamConfig(batch=2),
                     engine=EngineOptions(backend="torch"))
    assert flat.config == grouped.config and flat.fps == grouped.fps == 6
    assert flat.planner.settings == grouped.planner.settings
    a, b = [np.stack([f.image for f in s]) for s in (flat, grouped)]
    assert a.shape[0] == 3 and np.array_equal(a, b)


def test_unknown_keywords_conflicts_and_wrong_groups_are_named(G, dirs):
    with pytest.raises(ConfigError, match=r"no option 'fpss' \(did you mean 'fps'\?\)"):
        stream(G, directions=dirs, script="happy:1", fpss=12)
    with pytest.raises(ConfigError, match=r"no option 'colour'.*options: \["):
        stream(G, directions=dirs, script="happy:1", colour="red")
    with pytest.raises(ConfigError, match=r"both settings= and fps=: set fps in the StreamSettings"):
        stream(G, directions=dirs, script="happy:1", settings=StreamSettings(fps=12), fps=12)
    with pytest.raises(ConfigError, match=r"both settings= and intensity=: set coefficient"):
        stream(G, directions=dirs, script="happy:1", settings=StreamSettings(), intensity=2.0)
    with pytest.raises(ConfigError, match=r"both source= and script="):
        stream(G, source=StreamSource(directions=dirs), script="happy:1")
    with pytest.raises(ConfigError, match=r"both engine= and device="):
        stream(G, directions=dirs, script="happy:1", engine=EngineOptions(backend="torch"), device="cpu")
    with pytest.raises(ConfigError, match=r"source= must be a StreamSource, got str"):
        stream(G, source="happy:1")
    with pytest.raises(ConfigError, match="give one source"):
        stream(G, source=StreamSource(directions=dirs, script="happy:1", latents=np.zeros((1, G.num_ws, G.w_dim))))
    with pytest.raises(ConfigError, match="batch must be a positive integer"):  # a group is validated too
        stream(G, directions=dirs, script="happy:1", config=StreamConfig(batch=0))
