"""Fuzz what arrives as text: the live server's JSON control messages and the CLI's emotion scripts."""
from __future__ import annotations

import json

from hypothesis import given
from hypothesis import strategies as st

from .harness import FUZZ, check

_json = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=12),
                     lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                                                   max_size=4), max_leaves=12)
_FIELDS = ["emotion", "intensity", "transition", "speed", "seed", "temperature", "pause", "follow_lstm"]


@st.composite
def control_body(draw) -> bytes:
    kind = draw(st.sampled_from(["bytes", "json", "fields"]))
    if kind == "bytes":
        return draw(st.binary(max_size=256))
    if kind == "json":
        return json.dumps(draw(_json)).encode()
    fields = draw(st.dictionaries(st.sampled_from(_FIELDS + ["x"]), _json, min_size=1, max_size=4))
    return json.dumps(fields).encode()


@FUZZ
@given(body=control_body())
def test_control_messages(body):
    from stylemotion.runtime.server import parse_control

    # A control message has no file name; its errors name the field or say the body is not JSON.
    check("control", lambda: parse_control(body, emotions=["happy", "sad", "neutral"]), "")


@st.composite
def script_text(draw) -> str:
    if draw(st.booleans()):
        return draw(st.text(max_size=64))
    item = st.tuples(st.sampled_from(["happy", "SAD", "3", "7", "-1", "", "grumpy", "neutral"]),
                     st.sampled_from(["2", "0", "-1", "1e308", "inf", "nan", "x", "1.5"]),
                     st.sampled_from([None, "4", "nan", "-inf", "1e400", ""]))
    parts = [":".join(p for p in (e, s, c) if p is not None) for e, s, c in draw(st.lists(item, min_size=1,
                                                                                            max_size=5))]
    return draw(st.sampled_from([",", " , ", ";"])).join(parts)


@FUZZ
@given(text=script_text())
def test_emotion_scripts(text):
    from stylemotion.pipeline.keyframes import parse_script

    check("script", lambda: parse_script(text), "")
