"""The JSON bodies a client sends, parsed as data and every value checked before a planner sees it; ``BadRequest``
names the field and the value at fault (the handlers answer it with 400)."""
from __future__ import annotations

import json
import math

from ...errors import StylemotionError

# The control fields a request may set, with their types and ranges (validated before the planner sees them).
NUMBERS = {"intensity": (-30.0, 30.0), "transition": (0.0, 60.0), "speed": (0.01, 20.0), "temperature": (0.0, 10.0)}
FLAGS = ("pause", "follow_lstm")
NEW_STREAM_FIELDS = ("follow_lstm", "script", "seed")


class BadRequest(StylemotionError):
    """A request the server refuses (the message is the reason sent back)."""


def _json(body: bytes, empty: str):
    try:
        return json.loads(body.decode("utf-8") or empty)
    except (ValueError, RecursionError) as exc:  # also a number past int's digit limit, nesting past the stack
        raise BadRequest(f"the body is not JSON ({exc})") from exc


def _seed(value) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 2 ** 32:
        raise BadRequest(f"seed must be an integer in [0, 2**32), got {value!r}")
    return value


def parse_control(body: bytes, *, emotions: list[str] | None, has_lstm: bool = True) -> dict:
    """A control request's JSON body -> the planner's control fields, every value checked (``check_control``);
    BadRequest names the field and the value at fault."""
    data = _json(body, "null")
    if not isinstance(data, dict) or not data:
        raise BadRequest("the body must be a JSON object of control fields, e.g. {\"emotion\": \"sad\"}")
    return check_control(data, emotions=emotions, has_lstm=has_lstm)


def check_control(data: dict, *, emotions: list[str] | None, has_lstm: bool = True) -> dict:
    """Control fields as data (from a JSON body, an OSC message, ...) -> the planner's control fields, every value
    checked: the one validation every control surface shares. ``emotions``: the emotions this server has
    directions for (None: any known emotion); ``has_lstm=False`` refuses ``follow_lstm: true``. BadRequest names
    the field and the value at fault."""
    from ...models.emotion_cnn import EMOTIONS

    if not isinstance(data, dict) or not data:
        raise BadRequest(f"control changes must be a non-empty mapping of control fields, got {data!r:.80}")
    if not all(isinstance(name, str) for name in data):
        raise BadRequest(f"control field names must be text, got {sorted(map(repr, data))}")
    known = set(NUMBERS) | set(FLAGS) | {"emotion", "seed"}
    unknown = sorted(set(data) - known)
    if unknown:
        raise BadRequest(f"unknown fields {unknown}; known: {sorted(known)}")
    out: dict = {}
    if "emotion" in data:
        emotion = data["emotion"]
        if not isinstance(emotion, str) or emotion.lower() not in EMOTIONS:
            raise BadRequest(f"emotion {emotion!r} is not one of {list(EMOTIONS)}")
        if emotions is not None and emotion.lower() not in emotions:
            raise BadRequest(f"emotion {emotion!r} has no direction here; this server has {emotions}")
        out["emotion"] = emotion.lower()
    for name, (lo, hi) in NUMBERS.items():
        if name in data:
            value = data[name]
            # The range first: an integer too large for a float is out of range, not an OverflowError.
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not lo <= value <= hi \
                    or not math.isfinite(value):
                raise BadRequest(f"{name} must be a finite number in [{lo:g}, {hi:g}], got {value!r}")
            out[name] = float(value)
    if "seed" in data:
        out["seed"] = _seed(data["seed"])
    for name in FLAGS:
        if name in data:
            if not isinstance(data[name], bool):
                raise BadRequest(f"{name} must be true or false, got {data[name]!r}")
            out[name] = data[name]
    if out.get("follow_lstm") and not has_lstm:
        raise BadRequest("follow_lstm needs a server started with --lstm")
    return out


def parse_new_stream(body: bytes, *, has_lstm: bool) -> dict:
    """A ``POST /streams`` body (JSON, may be empty) -> ``{"seed", "script", "follow_lstm"}`` for a new stream's
    planner; BadRequest names the field and the value at fault."""
    data = _json(body, "{}")
    if not isinstance(data, dict):
        raise BadRequest("the body must be a JSON object")
    unknown = sorted(set(data) - set(NEW_STREAM_FIELDS))
    if unknown:
        raise BadRequest(f"unknown fields {unknown}; known: {list(NEW_STREAM_FIELDS)}")
    seed = _seed(data.get("seed", 0))
    script = data.get("script")
    if script is not None and not isinstance(script, str):
        raise BadRequest("script must be text like 'happy:2,sad:1'")
    follow = data.get("follow_lstm", False)
    if not isinstance(follow, bool) or (follow and not has_lstm):
        raise BadRequest("follow_lstm must be true or false, and needs a server started with --lstm")
    return {"seed": seed, "script": script, "follow_lstm": follow}
