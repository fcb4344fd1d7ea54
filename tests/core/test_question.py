"""Questions are read once into their kind, named time and named objects."""

from __future__ import annotations

import pytest

from streamvid.question import parse_number, parse_question, parse_time
from streamvid.types import Question


@pytest.mark.parametrize("text, kind", [
    ("When does a car appear?", "when"),
    ("When does a person carrying a bag first appear?", "when"),
    ("the first time a dog shows up", "when"),
    ("How many people are there at 00:00:30?", "count"),
    ("What is the number of cars?", "count"),
    ("What does the sign about the wifi say?", "text"),
    ("What resolution is shown?", "text"),
    ('Which clip shows "tiger42"?', "text"),
    ("What did the narrator say?", "speech"),
    ("What was said at the start?", "speech"),
    ("What is this video about?", "summary"),
    ("What is happening at 00:01:00?", "summary"),
    ("When is the dog seen?\nA) 00:00:10\nB) 00:00:20", "choice"),
    ("Which room is for interviews?", "what"),
    ("a person with a suitcase", "what"),
])
def test_kind(text, kind):
    assert Question(text=text).parsed.kind == kind


def test_named_time_objects_and_first():
    p = parse_question("When does a person carrying a bag first appear after 00:01:05?")
    assert p.first and p.at == 65
    assert p.groups == (("person",), ("handbag", "backpack", "suitcase")) and p.words == ("person", "bag")
    p = parse_question("how many cars and vans at 1:02:03?")
    assert p.at == 3723 and p.objects == ("car", "truck")
    assert parse_question("how many cell phones?").groups == (("cell phone",),)
    assert parse_question("is there a teddy bear or a bear?").objects == ("teddy bear", "bear")


def test_options_times_and_numbers():
    p = parse_question("Which one?\n(A) a van\nB. a bus\nC: a boat")
    assert p.options == (("A", "a van"), ("B", "a bus"), ("C", "a boat"))
    assert parse_time("at 90 seconds") == 90 and parse_time("no time") is None
    assert parse_number("six people") == 6 and parse_number("at 00:00:30") == 0


def test_image_question_asks_when():
    import numpy as np

    assert Question(image=np.zeros((4, 4, 3), np.uint8)).parsed.kind == "when"


@pytest.mark.parametrize("text, kind, speech", [
    ("When does the speaker mention the budget?", "when", True),
    ("What did they discuss?", "speech", True),
    ("What did the narrator say?", "speech", True),
    ("What does the sign say?", "text", False),
    ("What is the wifi password the speaker reads out?", "text", False),
    ("Where is the dog?", "what", False),
])
def test_speech_is_read_in_one_place(text, kind, speech):
    """Whether a question asks about what was said is part of its one reading (retrieval and
    the answerers read ``parsed.speech``), whatever its kind."""
    p = Question(text=text).parsed
    assert (p.kind, p.speech) == (kind, speech)
