"""The command handlers behind ``stylemotion <command>``, one module per family: ``models`` (info, export, build,
engines, bench, distill), ``offline`` (embed, label, label-samples, directions, train-lstm, predict-emotions),
``render`` (generate, edit, video, render-batch, acd, eval), ``photo`` (align, animate), ``live`` (stream, serve);
``inputs`` turns the arguments several commands share into library objects.

Each ``cmd_*`` builds configs, calls the library and prints, and returns an exit code; ``cli.py`` declares the
arguments and maps errors to exit codes. This module only re-exports.
"""
from __future__ import annotations

from .inputs import identity_for as _identity_for  # noqa: F401  (tests/runtime/test_server.py)
from .live import cmd_serve, cmd_stream
from .models import cmd_bench, cmd_build, cmd_distill, cmd_engines, cmd_export, cmd_info
from .offline import cmd_directions, cmd_embed, cmd_label, cmd_label_samples, cmd_predict_emotions, cmd_train_lstm
from .photo import cmd_align, cmd_animate
from .render import cmd_acd, cmd_edit, cmd_eval, cmd_generate, cmd_render_batch, cmd_video

__all__ = ["cmd_acd", "cmd_align", "cmd_animate", "cmd_bench", "cmd_build", "cmd_directions", "cmd_distill",
           "cmd_edit", "cmd_embed", "cmd_engines", "cmd_eval", "cmd_export", "cmd_generate", "cmd_info", "cmd_label",
           "cmd_label_samples", "cmd_predict_emotions", "cmd_render_batch", "cmd_serve", "cmd_stream",
           "cmd_train_lstm", "cmd_video"]
