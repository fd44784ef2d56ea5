"""``render-batch``: many expression videos from a jobs file, each exactly once, in this process or on Ray.

A jobs file is CSV (a header row) or JSON lines, one job a line: ``id`` (the video's name), ``seed`` or ``latents``
(``FILE.npz[:INDEX]``, a latents file from ``stylemotion embed``), ``script`` (``happy:2,surprise:1``) or
``predict`` (a count of emotions sampled from ``lstm``), and optionally ``fps``, ``seconds`` (per predicted
emotion), ``interp``, ``coeff``, ``transition``, ``trunc``; a field a job leaves out takes the run's
``JobDefaults`` (``render-batch --fps/--seconds/--interp/--coeff/--transition/--trunc``). Every job becomes
``OUT/<id>.mp4`` plus one line of ``OUT/manifest.jsonl`` (frames, ACD, render seconds, engine; or the error of a
job that kept failing).

Exactly once, under failure: a video is rendered under a temporary name (``OUT/.<id>.<host>-<pid>-<random>.partial
.mp4``), fsynced and renamed into place (``stylemotion.atomic.publish``), and only then is its manifest line
appended (and fsynced). A rerun skips every job whose video exists under its final name and whose manifest says
``ok``, removes stale temporaries and renders the
rest; a video is never visible under its final name before it is complete.

Without ``ray_address`` the jobs run here, one after another, through the same ``Renderer`` a Ray actor uses.
With it, Ray Data spreads them over an actor pool (``map_batches`` with ``ActorPoolStrategy``, one job per
batch): each actor opens the model, directions and engine once. Actor restarts and task retries are explicit
(``max_restarts``, ``max_task_retries``; Ray Data's default is unlimited), and a job whose rendering raises is
retried ``retries`` times in its actor and then reported as failed in the manifest while the others finish.
Ray is imported only on that path.
"""
from __future__ import annotations

import csv
import dataclasses
import json
import math
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable

from ..errors import ConfigError

MANIFEST = "manifest.jsonl"
ID_PATTERN = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,127}")
INTERPS = ("linear", "slerp", "smooth")


@dataclass(frozen=True)
class JobDefaults:
    """What a job takes for each of these fields when its jobs file leaves it out (``render-batch --fps ...``)."""

    fps: float = 10.0
    seconds: float = 1.0        # per predicted emotion
    interp: str = "smooth"
    coeff: float = 3.0
    transition: float = 0.5
    trunc: float = 0.7

    def validate(self) -> JobDefaults:
        for name in ("fps", "seconds", "coeff", "transition", "trunc"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise ConfigError(f"render-batch default --{name} must be a finite number, got {value!r}")
        for name in ("fps", "seconds"):
            if not getattr(self, name) > 0:
                raise ConfigError(f"render-batch default --{name} must be positive, got {getattr(self, name)!r}")
        if self.transition < 0:
            raise ConfigError(f"render-batch default --transition must be >= 0 seconds, got {self.transition!r}")
        if self.interp not in INTERPS:
            raise ConfigError(f"render-batch default --interp must be one of {INTERPS}, got {self.interp!r}")
        return self


@dataclass(frozen=True)
class Job:
    id: str
    seed: int | None = None
    latents: str | None = None
    script: str | None = None
    predict: int | None = None
    lstm: str | None = None
    fps: float = JobDefaults.fps
    seconds: float = JobDefaults.seconds
    interp: str = JobDefaults.interp
    coeff: float = JobDefaults.coeff
    transition: float = JobDefaults.transition
    trunc: float = JobDefaults.trunc


FIELDS = tuple(f.name for f in dataclasses.fields(Job))


def _job_from(record: dict[str, Any], where: str, defaults: JobDefaults | None = None) -> Job:
    unknown = sorted(set(record) - set(FIELDS))
    if unknown:
        raise ConfigError(f"{where}: unknown job fields {unknown}; known: {list(FIELDS)}")
    given = {k: v for k, v in record.items() if v is not None and v != ""}
    values = {**dataclasses.asdict(defaults), **given} if defaults is not None else given
    job_id = str(values.get("id", ""))
    if not ID_PATTERN.fullmatch(job_id):
        raise ConfigError(f"{where}: id {job_id!r} must be 1-128 letters, digits, '.', '_' or '-', not starting "
                          "with '.' or '-' (it names the output file)")
    try:
        for name, kind in (("seed", int), ("predict", int), ("fps", float), ("seconds", float), ("coeff", float),
                           ("transition", float), ("trunc", float)):
            if name in values:
                values[name] = kind(values[name])
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{where}: job {job_id!r}: {exc}") from exc
    job = Job(**values)
    if (job.seed is None) == (job.latents is None):
        raise ConfigError(f"{where}: job {job_id!r} needs exactly one of seed and latents")
    if (job.script is None) == (job.predict is None):
        raise ConfigError(f"{where}: job {job_id!r} needs exactly one of script and predict")
    if job.predict is not None and (job.lstm is None or job.predict < 1):
        raise ConfigError(f"{where}: job {job_id!r}: predict needs a positive count and an lstm file")
    if job.interp not in INTERPS:
        raise ConfigError(f"{where}: job {job_id!r}: interp must be one of {INTERPS}, got {job.interp!r}")
    for name in ("fps", "seconds"):
        if not getattr(job, name) > 0:
            raise ConfigError(f"{where}: job {job_id!r}: {name} must be positive, got {getattr(job, name)!r}")
    return job


def read_jobs(path: str | os.PathLike, *, defaults: JobDefaults | None = None) -> list[Job]:
    """Jobs from a CSV (header row) or JSON lines file; every error names the file, line and field. A field a job
    leaves out (empty or absent) takes ``defaults``' value (``JobDefaults()`` when None)."""
    defaults = (defaults or JobDefaults()).validate()
    path = Path(path)
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read the jobs file ({exc})") from exc
    records: list[tuple[str, dict]] = []
    if path.suffix.lower() == ".csv":
        reader = csv.DictReader(text.splitlines())
        for i, row in enumerate(reader, start=2):
            if None in row:
                raise ConfigError(f"{path}:{i}: more values than the header has columns")
            records.append((f"{path}:{i}", row))
    else:
        for i, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ConfigError(f"{path}:{i}: not JSON ({exc.msg})") from exc
            if not isinstance(record, dict):
                raise ConfigError(f"{path}:{i}: a job must be a JSON object, got {type(record).__name__}")
            records.append((f"{path}:{i}", record))
    jobs, seen = [], {}
    for where, record in records:
        job = _job_from(record, where, defaults)
        if job.id in seen:
            raise ConfigError(f"{where}: job id {job.id!r} repeats {seen[job.id]}")
        seen[job.id] = where
        jobs.append(job)
    if not jobs:
        raise ConfigError(f"{path}: no jobs")
    return jobs


# ---------------------------------------------------------------- outputs and the manifest


def final_path(out_dir: Path, job_id: str) -> Path:
    return out_dir / f"{job_id}.mp4"


def read_manifest(out_dir: Path) -> dict[str, dict]:
    """The last manifest line of each job id (a torn last line, from a kill mid-append, is ignored)."""
    path = out_dir / MANIFEST
    out: dict[str, dict] = {}
    if not path.exists():
        return out
    for line in path.read_text().splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(row, dict) and "id" in row:
            out[str(row["id"])] = row
    return out


def append_manifest(out_dir: Path, row: dict) -> None:
    path = out_dir / MANIFEST
    torn = False
    if path.exists() and path.stat().st_size:
        with open(path, "rb") as f:  # a line torn by a kill mid-append must not swallow this one
            f.seek(-1, os.SEEK_END)
            torn = f.read(1) != b"\n"
    with open(path, "a") as f:
        f.write(("\n" if torn else "") + json.dumps(row) + "\n")
        f.flush()
        os.fsync(f.fileno())


def completed(out_dir: Path) -> set[str]:
    """Job ids whose video is under its final name and whose manifest line says ok."""
    return {i for i, row in read_manifest(out_dir).items()
            if row.get("status") == "ok" and final_path(out_dir, i).is_file()}


def clean_temporaries(out_dir: Path) -> list[Path]:
    stale = sorted(out_dir.glob(".*.partial.mp4"))
    for p in stale:
        p.unlink(missing_ok=True)
    return stale


# ---------------------------------------------------------------- rendering


@dataclass(frozen=True)
class Settings:
    """What every worker needs to open its renderer (plain data: it travels to Ray actors)."""

    ckpt: str
    directions: str | None = None
    space: str | None = None
    backend: str = "auto"
    device: str | None = None
    precision: str | None = None
    onnx: str | None = None
    batch: int | None = None
    threads: int | None = None
    retries: int = 2


class Renderer:
    """Opens the model, the directions and the engine once; renders jobs into ``out_dir``."""

    def __init__(self, settings: Settings, out_dir: str | os.PathLike):
        import torch

        from ..checkpoints import load_generator
        from ..checkpoints.bundled import own_asset
        from ..engines import open_engine
        from ..pipeline.directions import load_directions, random_directions

        if settings.threads:
            torch.set_num_threads(settings.threads)
        self.settings, self.out_dir = settings, Path(out_dir)
        self.G = load_generator(settings.ckpt, device="cpu")
        own = own_asset(self.G, "directions")
        if settings.directions is None and own is not None:
            self.directions = load_directions(own, space=settings.space)
        elif settings.directions in (None, "random"):
            self.directions = random_directions(self.G.w_dim, seed=0)
        else:
            self.directions = load_directions(settings.directions, space=settings.space)
        self.engine = open_engine(self.G, backend=settings.backend, device=settings.device,
                                  precision=settings.precision, onnx_path=settings.onnx)
        self.engine_name = f"{self.engine.info.backend} {self.engine.info.precision} {self.engine.info.device}"

    def _identity(self, job: Job):
        if job.latents is None:
            return None
        import torch

        from ..errors import StylemotionError
        from ..pipeline.latents_io import read_identity

        try:
            row = read_identity(job.latents, num_ws=self.G.num_ws, w_dim=self.G.w_dim)
        except StylemotionError as exc:
            raise ConfigError(f"job {job.id!r}: latents {job.latents!r}: {exc}") from exc
        return torch.as_tensor(row)[None]

    def render_once(self, job: Job) -> dict:
        from ..pipeline.keyframes import parse_script
        from . import stream
        from .jobs import render_video

        if job.script:  # an emotion the directions lack is named with those they hold
            parse_script(job.script, directions=self.directions)
        source = {"script": job.script} if job.script else {"lstm": job.lstm, "predict": job.predict}
        streamer = stream(self.engine, generator=self.G, directions=self.directions, seed=job.seed or 0,
                          identity=self._identity(job), fps=job.fps, interp=job.interp, transition=job.transition,
                          intensity=job.coeff, truncation_psi=job.trunc, seconds=job.seconds,
                          batch=self.settings.batch, **source)
        # The video writer renders to a temporary (.<id>.<host>-<pid>-<random>.partial.mp4), fsyncs it, renames
        # it into place and fsyncs the folder (stylemotion.atomic.publish).
        result = render_video(streamer, out=final_path(self.out_dir, job.id), progress=False)
        return {"id": job.id, "status": "ok", "frames": int(result.frames), "acd": float(result.acd),
                "render_seconds": float(result.render_seconds), "engine": self.engine_name, "error": "",
                "attempts": 1, "worker": os.getpid()}

    def render(self, job: Job) -> dict:
        """Render with up to ``retries`` more attempts; a job that keeps failing comes back as ``failed``."""
        error = ""
        for attempt in range(1, self.settings.retries + 2):
            try:
                row = self.render_once(job)
                row["attempts"] = attempt
                return row
            except (KeyboardInterrupt, SystemExit):
                raise
            except Exception as exc:  # any failure of one job is reported in the manifest; the others go on
                error = f"{type(exc).__name__}: {exc}"
        return {"id": job.id, "status": "failed", "frames": 0, "acd": float("nan"), "render_seconds": 0.0,
                "engine": self.engine_name, "error": error, "attempts": self.settings.retries + 1,
                "worker": os.getpid()}


class _RayRenderer:
    """The Ray Data actor: one Renderer per actor; a batch is a few jobs (columns of a dict)."""

    def __init__(self, settings: dict, out_dir: str):
        self.renderer = Renderer(Settings(**settings), out_dir)
        marker = Path(out_dir) / ".workers"
        marker.mkdir(exist_ok=True)
        (marker / str(os.getpid())).touch()  # tests find actor processes here (and may kill one)

    def __call__(self, batch: dict) -> dict:
        n = len(batch["id"])
        rows = []
        for i in range(n):
            record = {k: _plain(batch[k][i]) for k in FIELDS if k in batch}
            rows.append(self.renderer.render(_job_from(record, "ray batch")))
        return {k: [r[k] for r in rows] for k in rows[0]}


def _plain(value):
    """numpy scalars (and NaN for a missing value) as plain Python values."""
    if value is None:
        return None
    if hasattr(value, "item"):
        value = value.item()
    if isinstance(value, float) and value != value:
        return None
    return value


@dataclass
class BatchResult:
    jobs: int
    skipped: int
    rendered: int
    failed: list[str]
    seconds: float
    manifest: Path


def render_batch(jobs: Iterable[Job] | str | os.PathLike, out_dir: str | os.PathLike, settings: Settings, *,
                 ray_address: str | None = None, actors: int = 1, gpus_per_actor: float = 0.0,
                 cpus_per_actor: float = 1.0, actor_resources: dict | None = None, max_restarts: int = 2,
                 defaults: JobDefaults | None = None, progress: bool = True,
                 log: Callable[[str], None] = print) -> BatchResult:
    """Render every job not yet complete in ``out_dir``. ``ray_address``: None (in this process), ``"local"``
    (start or join a Ray instance on this machine) or a cluster address (``"auto"``, ``"ray://host:10001"``).
    ``defaults``: the fields a jobs file leaves out (only for a jobs file; ``Job`` objects are taken as they are)."""
    if defaults is not None and not isinstance(jobs, (str, os.PathLike)):
        raise ConfigError("render_batch: defaults apply to a jobs file; give Job objects their values directly")
    jobs = read_jobs(jobs, defaults=defaults) if isinstance(jobs, (str, os.PathLike)) else list(jobs)
    out_dir = Path(out_dir)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"{out_dir}: cannot create the output folder ({exc})") from exc
    stale = clean_temporaries(out_dir)
    if stale:
        log(f"removed {len(stale)} unfinished temporary file(s) of an earlier run")
    done = completed(out_dir)
    todo = [j for j in jobs if j.id not in done]
    log(f"{len(jobs)} jobs: {len(jobs) - len(todo)} already complete, {len(todo)} to render")
    t0 = time.perf_counter()
    failed: list[str] = []
    if todo and ray_address is None:
        from tqdm.auto import tqdm

        renderer = Renderer(settings, out_dir)
        for job in tqdm(todo, desc="render-batch", unit="video", disable=not progress):
            row = renderer.render(job)
            append_manifest(out_dir, row)
            if row["status"] != "ok":
                failed.append(job.id)
    elif todo:
        failed = _render_on_ray(todo, out_dir, settings, ray_address, actors=actors, gpus=gpus_per_actor,
                                cpus=cpus_per_actor, resources=actor_resources, max_restarts=max_restarts, log=log)
    seconds = time.perf_counter() - t0
    return BatchResult(len(jobs), len(jobs) - len(todo), len(todo) - len(failed), failed, seconds, out_dir / MANIFEST)


def _render_on_ray(todo: list[Job], out_dir: Path, settings: Settings, address: str, *, actors: int, gpus: float,
                   cpus: float, resources: dict | None, max_restarts: int, log) -> list[str]:
    from .._optional import require

    ray = require("ray", extra="ray")
    if not ray.is_initialized():
        ray.init(address=None if address == "local" else address, ignore_reinit_error=True,
                 log_to_driver=False)
    ds = ray.data.from_items([dataclasses.asdict(j) for j in todo])
    # Explicit restarts (Ray Data's default is unlimited): a dead actor comes back at most max_restarts times, and
    # its unfinished job is retried on it; passed per worker through ray_remote_args_fn (ray_remote_args is
    # deprecated from Ray 2.60).
    restarts = {"max_restarts": max_restarts, "max_task_retries": max_restarts}
    results = ds.map_batches(
        _RayRenderer, fn_constructor_kwargs={"settings": dataclasses.asdict(settings), "out_dir": str(out_dir)},
        compute=ray.data.ActorPoolStrategy(size=actors), batch_size=1, num_gpus=gpus or None, num_cpus=cpus,
        resources=dict(resources) if resources else None, ray_remote_args_fn=lambda: dict(restarts))
    failed = []
    for row in results.iter_rows():
        row = {k: _plain(v) for k, v in row.items()}
        if row.get("acd") is None:
            row["acd"] = float("nan")
        append_manifest(out_dir, row)  # the video was renamed into place before the actor returned this row
        if row["status"] != "ok":
            failed.append(row["id"])
        log(f"{row['id']}: {row['status']} ({row['frames']} frames, worker {row['worker']})")
    return failed
