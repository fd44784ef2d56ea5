"""Live output: ``stream`` (realtime or offline, to a file, PNG frames, raw RGB on stdout or nowhere, with stats)
and ``serve`` (the live page and its MJPEG streams).

Each ``cmd_*`` takes the parsed arguments and returns an exit code; ``cli.py`` declares the arguments. Heavy
imports happen inside each command, so ``stylemotion --help`` stays fast.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ..errors import ConfigError
from .inputs import check_script, directions_for, engine_options, identity_for, load_model, lstm_for


def stats_line(stats: dict) -> str:
    lat, ctl = stats["latency_ms"], stats["control_latency_ms"]
    text = (f"{stats['frames']} frames, {stats['fps']:.1f} fps (target {stats['target_fps']:g}), latency p50/p95/p99 "
            f"{lat['p50']:.0f}/{lat['p95']:.0f}/{lat['p99']:.0f} ms, dropped {stats['dropped']}, queue "
            f"{stats['queues']['rendered']}")
    if ctl["count"]:
        text += f", control latency p50 {ctl['p50']:.0f} ms (max {ctl['max']:.0f})"
    return text


def cmd_stream(args: argparse.Namespace) -> int:
    import threading
    import time

    from ..runtime import FileSink, NullSink, RawSink, stream

    outputs = [o for o in (args.out, args.png) if o] + (["stdout"] if args.stdout else [])
    if len(outputs) > 1:
        raise ConfigError("choose one output: --out FILE, --png DIR or --stdout")
    if args.duration is not None and not args.duration > 0:
        raise ConfigError(f"--duration must be positive seconds, got {args.duration}")
    options = engine_options(args)
    if args.mode is None:  # a file records every frame; a live output is paced
        args.mode = "offline" if (args.out or args.png) else "realtime"
    G = load_model(args.ckpt, "cpu")
    directions = directions_for(G, args) if args.directions else None  # the runtime takes a bundled model's own
    check_script(args.script, directions, G)
    source: dict = {}
    if args.script:
        source["script"] = args.script
    elif args.lstm or args.predict is not None:
        source.update(lstm=lstm_for(G, args.lstm), predict=args.predict)
    streamer = stream(G, directions=directions, seed=args.seed, identity=identity_for(G, args.identity),
                      fps=args.fps, mode=args.mode, interp=args.interp,
                      transition=args.transition, intensity=args.coeff, truncation_psi=args.trunc,
                      temperature=args.temperature, seconds=args.seconds, batch=args.batch,
                      lookahead=args.lookahead, **source, **options)
    info = streamer.engine.info
    print(f"streaming {args.mode} at {args.fps:g} fps: {info.backend} {info.precision} on {info.device}, batch "
          f"{streamer.batch}, {info.resolution}x{info.resolution} -> {outputs[0] if outputs else 'no output'}",
          file=sys.stderr)
    if args.out or args.png:
        sink = FileSink(args.out or args.png, args.fps)
    elif args.stdout:
        sink = RawSink()
    else:
        sink = NullSink()
    last_report = time.perf_counter()

    def report(frame) -> None:
        nonlocal last_report
        now = time.perf_counter()
        if now - last_report >= args.stats_every:
            last_report = now
            print(stats_line(streamer.stats()), file=sys.stderr)

    def report_end() -> None:  # at the end, and when Ctrl-C or SIGTERM ends the stream (then cli says why)
        stats = streamer.stats()
        print(stats_line(stats), file=sys.stderr)
        if args.stats_json:
            print(json.dumps(stats, indent=2), file=sys.stderr)
        if (args.out or args.png) and Path(sink.path).exists():
            print(f"wrote {sink.path} ({stats['frames']} frames)", file=sys.stderr)

    # --duration ends the stream as a finite source ends (files are finished), even if no frame arrives.
    timer = threading.Timer(args.duration, streamer.finish) if args.duration is not None else None
    try:
        if timer is not None:
            timer.daemon = True
            timer.start()
        with streamer:
            streamer.run(sink, on_frame=report if args.mode == "realtime" else None)
    except KeyboardInterrupt:  # SIGTERM arrives as Terminated, a KeyboardInterrupt
        report_end()
        raise
    finally:
        if timer is not None:
            timer.cancel()
    report_end()
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    from ..runtime.server import ServerConfig, build_server, run
    from ..runtime.server.config import tokens_from_env

    host, _, port = args.http.rpartition(":")
    try:
        port_number = int(port)
    except ValueError as exc:
        raise ConfigError(f"--http {args.http!r}: expected HOST:PORT, e.g. 127.0.0.1:8080 ({exc})") from exc
    osc = None
    if args.osc is not None:
        from ..runtime.server.osc import parse_osc_address

        osc = parse_osc_address(args.osc)
    elif args.osc_allow:
        raise ConfigError("--osc-allow needs --osc [HOST:]PORT")
    token, view_token = tokens_from_env(args.token, args.view_token)
    config = ServerConfig(host=host or "127.0.0.1",
                          port=port_number, fps=args.fps, max_streams=args.max_streams,
                          max_viewers=args.max_viewers, virtual_camera=args.virtual_camera, rate=args.rate,
                          burst=max(1, int(2 * args.rate)), idle_timeout=args.idle_timeout,
                          allowed_hosts=tuple(args.allow_host), token=token, view_token=view_token,
                          webrtc=args.webrtc, max_peers=args.max_peers, osc=osc, osc_allow=tuple(args.osc_allow),
                          admission=not args.overcommit).validate()
    options = engine_options(args)
    G = load_model(args.ckpt, "cpu")
    directions = directions_for(G, args) if args.directions else None
    check_script(args.script, directions, G)
    server = build_server(G, directions=directions, script=args.script, lstm=args.lstm, config=config, seed=args.seed,
                          identity=identity_for(G, args.identity),
                          max_batch=args.batch, interp=args.interp, transition=args.transition,
                          coefficient=args.coeff, truncation_psi=args.trunc, temperature=args.temperature,
                          seconds=args.seconds, **options)
    info = server.hub.engine.info
    extras = [name for name, on in (("WebRTC", config.webrtc), (f"OSC on udp {osc[0]}:{osc[1]}" if osc else "", osc),
                                    ("tokens required", config.guarded)) if on]
    print(f"serving http://{config.host}:{config.port}/ ({info.backend} {info.precision} on {info.device}, "
          f"{config.fps:g} fps, up to {config.max_streams} streams and {config.max_viewers} viewers"
          f"{''.join('; ' + e for e in extras)})", file=sys.stderr, flush=True)
    run(server)
    return 0
