"""OCR describer: reads rendered signs exactly, in reading order, offline."""

from __future__ import annotations

import socket

import numpy as np
import pytest

from streamvid.describe import OcrDescriber, reading_order
from streamvid.types import Frame


@pytest.fixture(scope="module")
def ocr():
    return OcrDescriber(min_score=0.6, max_side=960)


def test_reads_a_sign_exactly_without_network(monkeypatch, sign):
    def refuse(*a, **k):
        raise OSError("network is off in this test")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    fresh = OcrDescriber()  # builds its engine here: the models must come from the package
    d = fresh.describe(Frame(pts=0.0, index=0, image=sign))
    assert d.text == "WIFI PASSWORD: tulip-42"
    assert d.labels == ()


def test_lines_in_reading_order(ocr, make_sign):
    img = make_sign(["Gate B12 boarding", "Flight LH 451 to Oslo", "Departs 14:35"], size=(720, 400))
    lines = [t for t, _ in ocr.read(img)]
    assert lines == ["Gate B12 boarding", "Flight LH 451 to Oslo", "Departs 14:35"]
    assert all(s >= 0.6 for _, s in ocr.read(img))


def test_lone_characters_are_dropped(ocr, make_sign):
    img = make_sign(["A", "Room 12"], size=(640, 360))
    assert [t for t, _ in ocr.read(img)] == ["Room 12"]


def test_plain_picture_has_no_text(ocr):
    rng = np.random.default_rng(0)
    sky = np.clip(np.linspace(90, 200, 360)[:, None, None] + rng.normal(0, 3, (360, 640, 3)), 0, 255)
    assert ocr.describe(Frame(pts=0.0, index=0, image=sky.astype(np.uint8))).text == ""


def test_small_text_on_a_large_frame_is_still_read(ocr, make_sign):
    img = make_sign(["EXIT 7"], size=(1280, 720), font_px=28)
    assert ocr.describe(Frame(pts=0.0, index=0, image=img)).text == "EXIT 7"


def test_reading_order_groups_rows():
    def box(x, y, w=50, h=20):
        return np.array([[x, y], [x + w, y], [x + w, y + h], [x, y + h]], np.float32)

    # second row first, a right-hand word slightly higher than its left neighbour
    boxes = [box(10, 100), box(200, 12), box(10, 15)]
    assert reading_order(boxes) == [2, 1, 0]
