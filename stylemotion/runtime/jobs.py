"""Offline jobs on the runtime: images from latents, an emotion video to a file, the ACD evaluation.

Each renders through a ``Streamer`` in offline mode, so every frame goes planner -> engine -> uint8 like a live
stream's: there is one rendering path.
"""
from __future__ import annotations

import contextlib
import math
import os
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from ..errors import ConfigError
from .. import ops
from ..pipeline.video import VideoResult, random_walk_schedule
from . import Streamer, open_model, stream


def render_images(model, ws: torch.Tensor, *, batch: int | None = None, progress: bool = True,
                  **engine_options) -> np.ndarray:
    """Render ``ws [N, num_ws, w_dim]`` (or ``[N, w_dim]``); frames ``[N, H, W, 3]`` uint8 on the host.
    ``model`` and ``engine_options`` (backend, device, precision, onnx_path, noise_mode, generator) as
    ``stream``."""
    from tqdm.auto import tqdm

    streamer = stream(model, latents=ws, batch=batch, **engine_options)
    out = []
    with streamer, tqdm(total=len(ws), desc="render", unit="image", disable=not progress) as bar:
        for b in streamer.batches():
            out.append(np.asarray(b.frames))
            bar.update(len(b.frames))
    return np.concatenate(out)


def render_video(streamer: Streamer, *, out: str | os.PathLike | None, sheet: str | os.PathLike | None = None,
                 progress: bool = True, scale: int = 1) -> VideoResult:
    """Every frame of an offline ``streamer`` to ``out`` (.mp4, .gif or a PNG folder; None: only measure), with
    pixel ACD (``ops.acd``, streamed across batches), the RMS latent acceleration of the ws, and a contact sheet
    of 8 frames. ``scale``: the file and the sheet get frames enlarged that many times (metrics use the
    generator's own pixels)."""
    from tqdm.auto import tqdm

    from ..imaging import make_grid, save_png, upscale
    from ..pipeline.video_io import VideoWriter

    upscale(np.zeros((1, 1, 1, 3), np.uint8), scale)  # a bad factor fails before anything is rendered
    n = streamer.planner.finite_frames
    if n is None:
        raise ConfigError("render_video needs a finite offline stream (a script, a predicted count or latents)")
    distance_sum, pairs, previous = 0.0, 0, None
    sheet_at = set(np.linspace(0, n - 1, min(8, n)).round().astype(int).tolist())
    sheet_frames: list[np.ndarray] = []
    accel_sum, accel_n, tail = None, 0, None  # accumulated on the device: no host sync per batch
    t0 = time.perf_counter()
    # The writer finishes the file on success and on Ctrl-C / SIGTERM (a playable file of the frames done), and
    # removes its temporary file on any other error.
    with (VideoWriter(out, streamer.fps) if out is not None else contextlib.nullcontext()) as writer, \
            tqdm(total=n, desc="video", unit="frame", disable=not progress) as bar, streamer:
        for batch in streamer.batches():
            frames = np.asarray(batch.frames)
            if writer is not None:
                writer.write(upscale(frames, scale))
            distances = ops.acd(torch.from_numpy(frames), previous=previous)
            distance_sum, pairs = distance_sum + float(distances.sum()), pairs + len(distances)
            previous = torch.from_numpy(frames[-1])
            flat = batch.ws.reshape(len(batch.ws), -1).double()
            seq = flat if tail is None else torch.cat([tail, flat])
            if len(seq) >= 3:
                accel = (seq[2:] - 2 * seq[1:-1] + seq[:-2]).square().sum()
                accel_sum = accel if accel_sum is None else accel_sum + accel
                accel_n += len(seq) - 2
            tail = seq[-2:]
            sheet_frames += [f for i, f in enumerate(frames, batch.first) if i in sheet_at]
            bar.update(len(frames))
    path = writer.path if writer is not None else None
    seconds = time.perf_counter() - t0
    sheet_path = (save_png(sheet, make_grid(upscale(np.stack(sheet_frames), scale), cols=len(sheet_frames)))
                  if sheet else None)
    total = float(accel_sum) if accel_sum is not None else 0.0
    rms_accel = (total / max(accel_n, 1)) ** 0.5  # as interpolate.latent_acceleration, streamed
    # pixel ACD as pipeline.metrics defines it: the RMS difference of frames scaled to [0, 1]
    acd_value = distance_sum / max(pairs, 1) / (255.0 * math.sqrt(frames[0].size)) if pairs else 0.0
    return VideoResult(path, n, seconds, acd_value, rms_accel, sheet_path)


def evaluate(G, directions, *, videos: int, emotions_per_video: int = 4, seconds: float = 1.0, fps: float = 10.0,
             modes: Sequence[str] = ("linear", "smooth"), transition: float = 0.5, coefficient: float = 3.0,
             truncation_psi: float = 0.7, lstm=None, batch: int | None = None, progress: bool = True,
             ray_address: str | None = None, actors: int = 1, **engine_options) -> dict[str, dict[str, float]]:
    """ACD and latent acceleration over ``videos`` random identities (seeds 0..N-1), per interpolation mode, and
    for a random latent walk with the same timing. Sequences come from ``lstm`` when given, else uniformly at
    random (seeded). Returns ``{row: {acd_mean, acd_std, accel_mean, accel_std}}``.

    Without ``ray_address`` one engine here renders every video; with it (``"local"``, ``"auto"`` or an address)
    Ray Data spreads the videos over ``actors`` actors, each with its own engine (the actor pool render-batch
    uses). Each video's emotions are drawn here, in order, so both paths evaluate the same videos."""
    from tqdm.auto import tqdm

    from ..models.emotion_cnn import EMOTIONS
    from ..pipeline.interpolate import MODES
    from ..pipeline.sequence import sample_emotions

    if videos < 1 or emotions_per_video < 1:
        raise ConfigError("videos and emotions_per_video must be >= 1")
    unknown = [m for m in modes if m not in MODES]
    if unknown or ("slerp" in modes and directions.space != "z"):
        raise ConfigError(f"modes {list(modes)}: each must be one of {MODES}, and slerp needs Z directions")
    available = [EMOTIONS.index(e) for e in directions.emotions if e in EMOTIONS]
    if lstm is None and not available:
        raise ConfigError("the directions file has no FER-2013 emotions to draw from")
    rng = np.random.default_rng(0)
    plans = []
    for v in range(videos):
        if lstm is not None:
            ids = sample_emotions(lstm, [6], emotions_per_video + 1, temperature=0.8, seed=v)[1:]
        else:
            ids = rng.choice(available, emotions_per_video).tolist()
        plans.append({"video": v, "emotions": [EMOTIONS[int(i)] for i in ids]})
    settings = dict(directions=directions, seconds=seconds, fps=fps, modes=list(modes), transition=transition,
                    coefficient=coefficient, truncation_psi=truncation_psi, batch=batch, engine_options=engine_options)
    rows: dict[str, list[tuple[float, float]]] = {m: [] for m in modes}
    rows["random walk"] = []
    if ray_address is None:
        evaluator = _VideoEvaluator(G, settings)
        results = (evaluator.one(p) for p in tqdm(plans, desc="eval", unit="video", disable=not progress))
    else:
        results = _evaluate_on_ray(G, settings, plans, ray_address, actors)
    for result in sorted(results, key=lambda r: r["video"]):
        for name in rows:
            rows[name].append((result[f"{name}/acd"], result[f"{name}/accel"]))
    out = {}
    for name, values in rows.items():
        a = np.array(values)
        out[name] = {"acd_mean": float(a[:, 0].mean()), "acd_std": float(a[:, 0].std()),
                     "accel_mean": float(a[:, 1].mean()), "accel_std": float(a[:, 1].std())}
    return out


class _VideoEvaluator:
    """One engine; renders one evaluation video per call (every mode, and the random walk) without writing it."""

    def __init__(self, G, settings: dict):
        self.settings = settings
        self.engine, self.G = open_model(G, **settings["engine_options"])

    def one(self, plan: dict) -> dict:
        from ..pipeline.interpolate import build_segments
        from ..pipeline.keyframes import ScriptItem

        st, v = self.settings, int(plan["video"])
        items = [ScriptItem(str(e), st["seconds"]) for e in plan["emotions"]]
        common = dict(directions=st["directions"], fps=st["fps"], transition=st["transition"],
                      intensity=st["coefficient"], truncation_psi=st["truncation_psi"], batch=st["batch"],
                      generator=self.G)
        out = {"video": v}
        for mode in st["modes"]:
            r = render_video(stream(self.engine, script=items, seed=v, interp=mode, **common), out=None,
                             progress=False)
            out[f"{mode}/acd"], out[f"{mode}/accel"] = float(r.acd), float(r.latent_acceleration)
        segments = build_segments([i.seconds for i in items], st["fps"], st["transition"])
        walk = random_walk_schedule(self.G, len(items) + 1, segments, seed=10_000 + v,
                                    truncation_psi=st["truncation_psi"])
        ws = walk.latents(0, walk.num_frames)
        r = render_video(stream(self.engine, latents=ws, fps=st["fps"], batch=st["batch"], generator=self.G),
                         out=None, progress=False)
        out["random walk/acd"], out["random walk/accel"] = float(r.acd), float(r.latent_acceleration)
        return out


class _RayEvaluator:
    def __init__(self, G, settings: dict):
        self.evaluator = _VideoEvaluator(G, settings)

    def __call__(self, batch: dict) -> dict:
        rows = [self.evaluator.one({"video": batch["video"][i], "emotions": list(batch["emotions"][i])})
                for i in range(len(batch["video"]))]
        return {k: [r[k] for r in rows] for k in rows[0]}


def _evaluate_on_ray(G, settings: dict, plans: list[dict], address: str, actors: int) -> list[dict]:
    from .._optional import require

    ray = require("ray", extra="ray")
    if not ray.is_initialized():
        ray.init(address=None if address == "local" else address, ignore_reinit_error=True, log_to_driver=False)
    ds = ray.data.from_items(plans).map_batches(
        _RayEvaluator, fn_constructor_kwargs={"G": G, "settings": settings},
        compute=ray.data.ActorPoolStrategy(size=actors), batch_size=1, num_cpus=1,
        ray_remote_args_fn=lambda: {"max_restarts": 2, "max_task_retries": 2})
    return [{k: (v.item() if hasattr(v, "item") else v) for k, v in row.items()} for row in ds.iter_rows()]


def label_samples(G, classifier, out: str | os.PathLike, *, n: int, seed: int = 0,
                  batch: int = 64, progress: bool = True, **engine_options) -> dict:
    """Label ``n`` random faces of a face generator (seeds ``seed .. seed+n-1``, no truncation) with the emotion
    classifier: writes ``out/latents.npz`` (``ws``, ``z``, ``probabilities``), ``out/labels.csv``
    (``frame_index,emotion``: the argmax) and ``out/labels.png`` (the 8 most confident faces per emotion), the
    inputs of ``stylemotion directions``. Frames are rendered through the runtime."""
    from ..atomic import atomic_path
    from ..imaging import make_grid, save_png
    from ..models.emotion_cnn import EMOTIONS
    from ..models.stylegan2 import z_from_seed
    from ..pipeline.labeling import classify_crops
    from ..pipeline.latents_io import write_latents

    if n < 1:
        raise ConfigError(f"n must be >= 1, got {n}")
    out = Path(out)
    z = torch.cat([z_from_seed(seed + i, G.z_dim) for i in range(n)])
    with torch.no_grad():
        ws = torch.cat([G.mapping(z[i:i + 1024]) for i in range(0, n, 1024)])
    frames = render_images(G, ws, batch=batch, progress=progress, **engine_options)
    probs = classify_crops(frames, classifier)
    labels = probs.argmax(1)
    write_latents(out / "latents.npz", ws=ws.numpy(), frame_index=np.arange(n), source=np.full(n, "samples"),
                  loss=np.zeros(n), z=z.numpy(), probabilities=probs.astype(np.float32),
                  seeds=np.arange(seed, seed + n))
    with atomic_path(out / "labels.csv") as tmp:
        tmp.write_text("frame_index,emotion\n" + "".join(f"{i},{EMOTIONS[k]}\n" for i, k in enumerate(labels)))
    rows = []
    for k in range(len(EMOTIONS)):
        best = np.argsort(-probs[:, k])[:8]
        rows.append(frames[best])
    save_png(out / "labels.png", make_grid(np.concatenate(rows), cols=8))
    counts = {e: int((labels == k).sum()) for k, e in enumerate(EMOTIONS)}
    return {"n": n, "counts": counts, "fractions": {e: c / n for e, c in counts.items()}}


def direction_effect(G, directions, classifier, emotion: str, *, seeds: Sequence[int],
                     coefficient: float, truncation_psi: float = 0.7, batch: int = 64,
                     **engine_options) -> dict:
    """Does moving along ``emotion``'s direction make that emotion more likely? For each identity (a seed),
    renders the ``-coefficient`` and ``+coefficient`` edits through the runtime and asks the classifier.
    Returns the fraction of identities whose P(emotion) rises, the mean P at both ends and the mean rise."""
    from ..models.emotion_cnn import EMOTIONS
    from ..models.stylegan2 import z_from_seed
    from ..pipeline.keyframes import apply_direction
    from ..pipeline.labeling import classify_crops

    k = EMOTIONS.index(emotion)
    direction = directions[emotion]
    ws = torch.cat([apply_direction(G, z_from_seed(s, G.z_dim), direction, directions.space,
                                    [-coefficient, coefficient], truncation_psi=truncation_psi) for s in seeds])
    probs = classify_crops(render_images(G, ws, batch=batch, progress=False, **engine_options), classifier)
    low, high = probs[0::2, k], probs[1::2, k]
    return {"emotion": emotion, "identities": len(seeds), "coefficient": coefficient,
            "truncation_psi": truncation_psi, "rises": float((high > low).mean()),
            "p_low": float(low.mean()), "p_high": float(high.mean()), "mean_rise": float((high - low).mean())}


@torch.no_grad()
def laplacian_energy(images: torch.Tensor) -> torch.Tensor:
    """``[N, 3, H, W]`` in [-1, 1] -> ``[N]``: the mean squared response of the 3x3 Laplacian on the grey image
    (ITU-R 601 luma), over the valid positions. High-frequency detail; a blurred image has less."""
    gray = (0.299 * images[:, 0] + 0.587 * images[:, 1] + 0.114 * images[:, 2]).unsqueeze(1).float()
    kernel = torch.tensor([[0.0, 1.0, 0.0], [1.0, -4.0, 1.0], [0.0, 1.0, 0.0]]).view(1, 1, 3, 3)
    return torch.nn.functional.conv2d(gray, kernel).square().mean(dim=(1, 2, 3))


def compare_to_teacher(G, teacher, classifier, *, n: int = 200,
                       batch: int = 50) -> dict[str, Any]:
    """Student against teacher on ``n`` held-out z: PSNR per image (peak-to-peak 2, images in [-1, 1]), the
    FER classifier's agreement on the argmax emotion, and sharpness: the energy of a 3x3 Laplacian of the grey image
    (the mean squared response), student over teacher per image (``sharpness_ratio`` is the median; 1 is as sharp as
    the teacher, below 1 blurrier). A student can be close in L1 and still blurred: PSNR does not show it, this
    does."""
    from ..engines.factory import open_engine
    from ..models.emotion_cnn import EMOTIONS
    from ..pipeline.distill import fer_input, held_out_z

    engine = open_engine(G, backend="torch", device="cpu", max_batch=batch)
    z = held_out_z(n, teacher.z_dim)
    psnr, agree, t_labels, s_labels, sharp, t_energy = [], [], [], [], [], []
    for i in range(0, n, batch):
        zb = z[i:i + batch]
        t = teacher(zb).clamp(-1, 1)
        s = torch.as_tensor(engine.run(G.mapping(zb))).clamp(-1, 1)
        mse = (t - s).square().mean(dim=(1, 2, 3))
        psnr.append(10 * torch.log10(4.0 / mse))
        st, ss = laplacian_energy(t), laplacian_energy(s)
        sharp.append(ss / st.clamp_min(1e-12))
        t_energy.append(st)
        tl = classifier(fer_input(t)).argmax(1)
        sl = classifier(fer_input(s)).argmax(1)
        agree.append(tl == sl)
        t_labels.append(tl)
        s_labels.append(sl)
    psnr_t, agree_t = torch.cat(psnr), torch.cat(agree)
    tl, sl = torch.cat(t_labels), torch.cat(s_labels)
    return {"n": n, "psnr_mean": float(psnr_t.mean()), "psnr_median": float(psnr_t.median()),
            "psnr_p10": float(psnr_t.quantile(0.1)), "fer_agreement": float(agree_t.float().mean()),
            "sharpness_ratio": float(torch.cat(sharp).median()),
            "teacher_laplacian_energy": float(torch.cat(t_energy).mean()),
            "teacher_emotions": {e: int((tl == i).sum()) for i, e in enumerate(EMOTIONS)},
            "student_emotions": {e: int((sl == i).sum()) for i, e in enumerate(EMOTIONS)}}


def animate_photo(G, photo: str | os.PathLike, out: str | os.PathLike, *, directions, script: str,
                  space: str = "w", steps: int = 300, perceptual=None, face: int = 0, fps: float = 24.0,
                  interp: str = "smooth", transition: float = 0.5, intensity: float = 1.0,
                  strip: Sequence[float] = (-2.0, -1.0, 0.0, 1.0, 2.0), scale: int = 1, seed: int = 0,
                  progress: bool = True, log=print, **engine_options) -> dict:
    """One photo -> an expression video of its face: align (MTCNN + the FFHQ crop) -> embed (the projector, in W
    or W+) -> the script rendered from the embedded identity through the runtime. Beside ``out`` (``v.mp4``):
    ``v-aligned.png``, ``v-latents.npz`` (for ``--identity``), ``v-reconstruction.png`` (crop | reconstruction),
    ``v-<emotion>.png`` (a strip of the identity along each scripted emotion's direction, ``strip`` x intensity)
    and ``v-sheet.png``. Returns what it wrote and measured."""
    from ..imaging import make_grid, save_png, upscale
    from ..pipeline.align import align
    from ..pipeline.embed import Projector, ProjectorConfig
    from ..pipeline.latents_io import write_latents
    from ..pipeline.video_io import VideoWriter, check_writable, read_image

    out = Path(out)
    VideoWriter(out, fps).abort()  # a bad output path fails before any work
    stem = out.with_suffix("")
    paths = {"aligned": Path(f"{stem}-aligned.png"), "latents": Path(f"{stem}-latents.npz"),
             "reconstruction": Path(f"{stem}-reconstruction.png"), "sheet": Path(f"{stem}-sheet.png")}
    for p in paths.values():
        check_writable(p)
    # The script and directions are checked (by a planner) before the slow parts.
    from . import StreamSettings, make_planner

    if directions.space not in ("w", "w+"):
        raise ConfigError(f"animate edits an embedded W/W+ identity: it needs W or W+ directions, got "
                          f"{directions.space!r}")
    from ..pipeline.keyframes import parse_script

    parse_script(script, directions=directions)  # an emotion the directions lack is named with those they hold
    make_planner(G, torch.device("cpu"), StreamSettings(fps=fps).validate(), directions=directions, script=script)

    image = read_image(photo)
    aligned = align(image, G.img_resolution, where=str(photo), face_index=face)
    save_png(paths["aligned"], upscale(aligned.crop[None], scale)[0])
    log(f"{photo}: {aligned.faces_found} face(s) found; aligned face {face} -> {paths['aligned']}")

    projector = Projector(G, perceptual, ProjectorConfig(space=space, steps=steps, seed=seed).validate())
    target = torch.from_numpy(np.array(aligned.crop)).permute(2, 0, 1)[None].float() / 127.5 - 1.0
    from tqdm.auto import tqdm

    with tqdm(total=steps, desc="embed", unit="step", disable=not progress) as bar:
        projection = projector.project(target, on_step=lambda step, losses: bar.update(1))
    ws = projection.ws.detach().cpu()
    write_latents(paths["latents"], ws=ws.numpy(), frame_index=np.zeros(1, np.int64),
                  source=np.array([str(photo)]), loss=np.asarray(projection.loss, np.float32).reshape(1),
                  space=np.array(space))
    recon = render_images(G, ws, progress=False, **engine_options)[0]
    save_png(paths["reconstruction"], make_grid(upscale(np.stack([aligned.crop, recon]), scale), cols=2))
    mse = float(np.mean((recon.astype(np.float64) - aligned.crop.astype(np.float64)) ** 2))
    log(f"embedded in {space.upper()} ({steps} steps): pixel RMSE {math.sqrt(mse):.1f}/255 -> {paths['latents']}")

    from ..pipeline.keyframes import ScriptItem, keyframe_targets

    strips = {}  # the identity moved along each scripted emotion's direction: the planner's own keyframe edit
    for emotion in dict.fromkeys(i.emotion for i in parse_script(script) if i.emotion in directions.emotions):
        edits = keyframe_targets(ws, directions, [ScriptItem(emotion, 0.0, c * intensity) for c in strip])
        frames = render_images(G, edits, progress=False, **engine_options)
        strips[emotion] = save_png(Path(f"{stem}-{emotion}.png"), make_grid(upscale(frames, scale), cols=len(strip)))
    streamer = stream(G, directions=directions, script=script, identity=ws, fps=fps, interp=interp,
                      transition=transition, intensity=intensity, seed=seed, **engine_options)
    video = render_video(streamer, out=out, sheet=paths["sheet"], progress=progress, scale=scale)
    return {**{k: str(v) for k, v in paths.items()}, "video": str(video.path), "frames": video.frames,
            "strips": {k: str(v) for k, v in strips.items()}, "faces_found": aligned.faces_found,
            "reconstruction_rmse": math.sqrt(mse), "projection_loss": float(np.asarray(projection.loss).ravel()[0]),
            "ws": ws, "crop_image": aligned.crop, "reconstruction_image": recon}
