"""The runtime's tests share one small 32x32 generator and seeded random W directions."""
from __future__ import annotations

import pytest

from stylemotion.pipeline.directions import random_directions

from ..helpers import make_generator


@pytest.fixture(scope="module")
def G():
    return make_generator(img_resolution=32, channel_base=512, channel_max=32, z_dim=32, w_dim=32)


@pytest.fixture(scope="module")
def dirs(G):
    return random_directions(G.w_dim, seed=1)
