"""The benchmark behind ``bench/run.py``, ``make bench`` and ``stylemotion bench``: every engine side by side.

For each model, backend, precision and batch size: generator-only images/s (warm-up excluded, device work
synchronised before the host clock is read, median of the runs and their 10th-90th percentile spread), batch-1
latency p50/p99, peak memory, the engine's build time (export, conversion, compilation: never inside a timing),
the error against the float32 reference (PSNR for reduced precisions), the FLOPs per image and the fraction of
the machine's matrix rate, measured in the same run. Each model's first row is the **baseline**: float32 eager
PyTorch in the official grouped ("fused") modulated-convolution form with the reference element-wise ops, as
NVlabs' code runs on a CPU; every row carries its speed-up against the baseline at the same batch size. One row,
``official graph``, is the same network exported in that official form (dynamo, opset 18, fixed batch) as a user
would export NVlabs' generator, run by OpenVINO with f32 asked for. The ``auto`` row is the engine
``open_engine(backend="auto")`` picks at each batch size, labelled with what it chose, and the result says how
close it came to the fastest row (``auto``). Then the end-to-end runtime (script -> latents -> engine -> uint8
frames) on the fastest engine: offline frames/s and, unless ``--quick``, a realtime stream's frame-latency p99, for
every engine (``--quick``: offline, on the fastest engine only).

A row that cannot run here is listed as ``not available: <reason>``, never with a number. Results: a printed
table, ``<out>/<device>-<date>.json`` (top-level ``rows``), a markdown table and a PNG chart beside it.

One role per module: ``rows`` (models and the engine rows), ``timing``, ``machine`` (environment, matrix rate,
memory), ``sweep`` (``Settings``, ``run``), ``report`` (markdown, files), ``charts`` (matplotlib), ``cli``.
"""
from .charts import bar_chart, engine_chart, redraw
from .cli import add_arguments, parse_list, pick_device, settings_from_args
from .machine import (cpu_model, device_name, environment, has_native_bf16, matrix_rate, peak_rss_mib,
                      reset_peak_rss, rss_mib)
from .report import auto_summary, markdown, result_stem, write_outputs
from .rows import (BACKENDS, PRECISIONS, TINY_MODEL, TINY_OVERRIDES, PerBatch, Row, export_official_graph, load_model,
                   rows_for, synthesis_flops)
from .sweep import Settings, run
from .timing import percentile, psnr, round_robin, sync, time_runs

__all__ = ["BACKENDS", "PRECISIONS", "TINY_MODEL", "TINY_OVERRIDES", "PerBatch", "Row", "Settings", "add_arguments",
           "auto_summary", "bar_chart", "cpu_model", "device_name", "engine_chart", "environment", "export_official_graph",
           "has_native_bf16", "load_model", "markdown", "matrix_rate", "parse_list", "peak_rss_mib", "percentile",
           "pick_device", "psnr", "redraw", "reset_peak_rss", "result_stem", "round_robin", "rows_for", "rss_mib",
           "run", "settings_from_args", "synthesis_flops", "sync", "time_runs", "write_outputs"]
