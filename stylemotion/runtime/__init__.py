"""The runtime every frame walks through: script / LSTM / live control -> latents -> engine -> frames.

``stream(model, ...)`` builds a ``Streamer`` from a checkpoint path, a built-in name, a ``Generator`` or an
``Engine``; iterate it for ``Frame``s, or ``run(*sinks)`` it into files and pipes. Its options are grouped as
``StreamSource``, ``StreamSettings``, ``StreamConfig`` and ``EngineOptions`` (options.py), or given flat.
"""
from __future__ import annotations

import os

import numpy as np
import torch

from ..errors import ConfigError
from .mapping import MappingView
from .options import FLAT_OPTIONS, EngineOptions, StreamSource, group_options
from .plan import CONTROL_FIELDS, PlannedBatch, Planner, StreamSettings
from .sinks import CallbackSink, FileSink, NullSink, RawSink
from .streamer import Batch, Frame, StreamConfig, Streamer

__all__ = ["Batch", "CONTROL_FIELDS", "CallbackSink", "EngineOptions", "FLAT_OPTIONS", "FileSink", "Frame",
           "NullSink", "PlannedBatch", "Planner", "RawSink", "StreamConfig", "StreamSettings", "StreamSource",
           "Streamer", "open_model", "stream"]


def open_model(model, *, backend: str = "auto", device: str | None = None, precision: str | None = None,
               onnx_path: str | os.PathLike | None = None, generator=None, max_batch: int = 64,
               noise_mode: str = "const", batch: int | None = None):
    """``(engine, generator)`` for a checkpoint path, a built-in name, a ``Generator`` or an ``Engine`` (which
    needs ``generator=`` for its mapping network: engines render ``ws`` only). ``batch``: the batch the caller
    will mostly run, where ``backend="auto"`` measures its candidates (default 1)."""
    from ..checkpoints import load_generator
    from ..engines import open_engine
    from ..engines.base import Engine
    from ..models.stylegan2 import Generator

    if isinstance(model, Engine) and not isinstance(model, Generator):
        if generator is None:
            raise ConfigError("an Engine renders ws only: pass generator= (the Generator whose mapping network "
                              "makes the latents)")
        return model, generator
    G = load_generator(model) if isinstance(model, (str, os.PathLike)) else model
    if not isinstance(G, Generator):
        raise ConfigError(f"model must be a checkpoint path, a built-in name, a Generator or an Engine, got "
                          f"{type(model).__name__}")
    return open_engine(G, backend=backend, device=device, precision=precision, onnx_path=onnx_path,
                       max_batch=max_batch, noise_mode=noise_mode, batch=batch), G


def _script(script, directions=None) -> list:
    """Script items from text or tuples; with ``directions``, an emotion they lack is an error listing theirs."""
    from ..pipeline.keyframes import ScriptItem, parse_script

    if isinstance(script, str):
        return parse_script(script, directions=directions)
    items = []
    for item in script:
        if isinstance(item, ScriptItem):
            items.append(item)
            continue
        if not isinstance(item, (tuple, list)) or len(item) not in (2, 3):
            raise ConfigError(f"script item {item!r}: expected (emotion, seconds[, intensity])")
        text = ":".join(str(v) for v in item)
        items.extend(parse_script(text, directions=directions))
    return items


def make_planner(G, device: torch.device, settings: StreamSettings, *, directions=None, script=None, lstm=None,
                 predict: int | None = None, latents=None, seed: int = 0, identity=None,
                 space: str | None = None, live: bool = False) -> Planner:
    """A planner for one stream on ``device`` (sources and ``directions`` as ``stream`` takes them). ``live``: the
    stream goes on after its script (a server's streams), so controls always have somewhere to go."""
    from ..checkpoints.bundled import own_asset
    from ..pipeline.directions import Directions, load_directions
    from ..pipeline.sequence import EmotionSampler, load_lstm

    # A bundled model brings its own directions and LSTM (None for any other model).
    if directions is None and latents is None:
        directions = own_asset(G, "directions")
    if lstm is None and predict is not None and script is None and latents is None:
        lstm = own_asset(G, "lstm")
    if sum(x is not None for x in (script, lstm, latents)) > 1:
        raise ConfigError("give one source: script, lstm or latents")
    if predict is not None and lstm is None:
        raise ConfigError("predict needs lstm (the emotion LSTM from `stylemotion train-lstm`)")
    endless = script is None and latents is None and (lstm is None or predict is None)
    if directions is not None and not isinstance(directions, Directions):
        directions = load_directions(directions, space=space, w_dim=G.w_dim)
    items = _script(script, directions) if script is not None else None
    sampler = None
    if lstm is not None:
        model_lstm = load_lstm(lstm) if isinstance(lstm, (str, os.PathLike)) else lstm
        sampler = EmotionSampler(model_lstm, [6], seed=seed)  # primed with neutral, as `video --predict` is
    ws = None
    if latents is not None:
        ws = torch.as_tensor(np.asarray(latents, np.float32) if not torch.is_tensor(latents) else latents)
        if ws.ndim == 2:
            ws = ws[:, None].expand(-1, G.num_ws, -1)
        if ws.ndim != 3 or tuple(ws.shape[1:]) != (G.num_ws, G.w_dim) or len(ws) == 0:
            raise ConfigError(f"latents must be ws [N, {G.num_ws}, {G.w_dim}] with N >= 1, got {list(ws.shape)}")
    if isinstance(identity, (str, os.PathLike)):  # "latents.npz[:INDEX]": an embedded face
        from ..pipeline.latents_io import read_identity

        identity = torch.as_tensor(read_identity(identity, num_ws=G.num_ws, w_dim=G.w_dim))[None]
    return Planner(MappingView(G, device), directions, settings=settings, items=items, sampler=sampler,
                   predict=predict, latents=ws, seed=seed, identity=identity, endless=endless or live, device=device)


def stream(model, *, source: StreamSource | None = None, settings: StreamSettings | None = None,
           config: StreamConfig | None = None, engine: EngineOptions | None = None, **options) -> Streamer:
    """A ``Streamer`` of one face's expression video, from a checkpoint path, a built-in name, a ``Generator`` or
    an ``Engine``.

    The options come in four groups, each a frozen dataclass, given whole or as flat keywords (``FLAT_OPTIONS``
    maps each flat name to its group and field; a group and one of its flat names together, or an unknown name,
    raise ConfigError):

    - ``source=StreamSource(...)``: what plays. One of ``script`` (``"happy:2,surprise:1.5:4"`` or
      ``[(emotion, seconds[, intensity])]``), ``lstm`` (a path or an ``EmotionLSTM``; ``predict`` emotions of
      ``seconds`` each, endless when None), ``latents`` (``ws [N, num_ws, w_dim]`` rendered as given), or none
      (the identity, held until a control arrives). ``directions``: a ``Directions`` or anything ``--directions``
      takes (``space`` as ``--space``). ``identity``: the face, as ws ``[1, num_ws, w_dim]`` or
      ``"latents.npz[:INDEX]"`` (from ``embed`` or ``animate``); default the ``seed``'s face.
    - ``settings=StreamSettings(...)``: the path's shape: ``fps``, ``interp``, ``transition``, ``speed``,
      ``truncation_psi``, ``temperature``, ``seconds``; the flat keyword ``intensity`` sets ``coefficient``.
    - ``config=StreamConfig(...)``: how frames flow. ``mode``: ``"offline"`` (as fast as possible, every frame) or
      ``"realtime"`` (paced to ``fps``, at most ``lookahead`` seconds planned ahead, frames later than
      ``max_late`` dropped and counted); ``batch``; ``as_tensor``: ``Frame.image`` stays on the device;
      ``worker``: plan and render in a worker thread (default: on CUDA, where it overlaps rendering with delivery).
    - ``engine=EngineOptions(...)``: ``backend``, ``device``, ``precision``, ``onnx_path``, ``noise_mode`` as
      ``open_engine`` takes them; ``generator``: the Generator whose mapping network makes the latents, when
      ``model`` is an Engine.

    ``stream(G, script="happy:2", fps=24, backend="torch")`` and ``stream(G, source=StreamSource(script="happy:2"),
    settings=StreamSettings(fps=24), engine=EngineOptions(backend="torch"))`` make the same stream.
    """
    source, settings, config, engine = group_options(source=source, settings=settings, config=config,
                                                     engine=engine, **options)
    if source.endless and config.mode == "offline":
        raise ConfigError("offline mode renders a finite video: give a script, lstm with predict=N, or latents "
                          "(an endless stream needs mode='realtime')")
    # Everything about the stream is checked on the CPU first (script, directions, identity, latents), before an
    # engine is built: a typo must not cost a TensorRT build.
    from ..checkpoints import load_generator
    from ..engines.base import Engine

    if isinstance(model, (str, os.PathLike)):
        model = load_generator(model)
    G = engine.generator if isinstance(model, Engine) and engine.generator is not None else model
    planner_sources = dict(directions=source.directions, script=source.script, lstm=source.lstm,
                           predict=source.predict, latents=source.latents, seed=source.seed,
                           identity=source.identity, space=source.space)
    if not isinstance(model, Engine):
        make_planner(G, torch.device("cpu"), settings, **planner_sources)
    renderer, G = open_model(model, backend=engine.backend, device=engine.device, precision=engine.precision,
                             onnx_path=engine.onnx_path, generator=engine.generator, noise_mode=engine.noise_mode,
                             batch=config.batch or (1 if config.mode == "realtime" else None))  # auto measures there
    planner = make_planner(G, torch.device(renderer.info.device), settings, **planner_sources)
    return Streamer(renderer, planner, fps=settings.fps, config=config)
