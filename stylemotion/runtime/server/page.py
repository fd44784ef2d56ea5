"""The control page: one packaged file (``page.html``), filled in with the emotions this server has directions for
and whether it can follow the LSTM. No route reads any other file."""
from __future__ import annotations

import json
from pathlib import Path

PAGE = Path(__file__).with_name("page.html")


def render_page(emotions: list[str] | None, has_lstm: bool) -> str:
    """The page's HTML; ``emotions`` None: every emotion the emotion CNN knows."""
    from ...models.emotion_cnn import EMOTIONS

    html = PAGE.read_text().replace("__EMOTIONS__", json.dumps(emotions or list(EMOTIONS)))
    return html.replace("__LSTM__", json.dumps(has_lstm))
