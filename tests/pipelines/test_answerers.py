"""The extractive answerer: which text it quotes, which time it gives, which option it picks."""

from __future__ import annotations

import numpy as np

from pipelines.answerers import ExtractiveAnswerer, best_text_line, parse_options
from streamvid.types import ClipMemory, Context, ContextItem, Question


def _item(start, end, score, *, text="", labels=(), rank=0):
    clip = ClipMemory(source_id="v", start=start, end=end, vector=np.ones(4, np.float32) / 2,
                      keyframes=(start,), labels=labels, ocr_text=text,
                      description="; ".join(n for n, _ in labels) + (f'; text: "{text}"' if text else ""))
    return ContextItem(clip=clip, score=score, tokens=np.zeros((0, 4), np.float32),
                       token_times=np.zeros(0, np.float32), rank=rank)


def _ctx(q, *items):
    return Context(items=tuple(sorted(items, key=lambda it: it.clip.start)), budget=100, question=q)


def test_best_text_line_picks_and_continues_wrapped_signs():
    assert best_text_line("WELCOME\nWIFI PASSWORD: tulip-42", "what is the wifi password?") == \
        "WIFI PASSWORD: tulip-42"
    assert best_text_line("The door code is\nlemon-43", "What is the door code?") == \
        "The door code is lemon-43"
    assert best_text_line("OPEN\n9 to 5", "what does the sign say?") == "OPEN / 9 to 5"


def test_text_question_quotes_best_moment_with_text():
    q = Question(text="What is the wifi password on the sign?")
    ans = ExtractiveAnswerer().answer(q, _ctx(q, _item(10, 14, 0.9, text="WIFI PASSWORD: tulip-42"),
                                              _item(40, 44, 0.4, labels=(("lemon", 0.5),), rank=1)))
    assert ans.answer.startswith('"WIFI PASSWORD: tulip-42"')
    assert [e.start for e in ans.evidence] == [10, 40]  # best first


def test_when_question_gives_time_of_best_moment():
    q = Question(text="When does a lemon appear?")
    ans = ExtractiveAnswerer().answer(q, _ctx(q, _item(10, 14, 0.3, rank=1),
                                              _item(3725, 3731, 0.8, labels=(("lemon", 0.6),))))
    assert ans.answer.startswith("At 01:02:05 (01:02:05–01:02:11)")
    assert ans.evidence[0].start == 3725


def test_multiple_choice_by_time_and_by_words():
    q = Question(text="When does the lemon appear?\nA) 00:00:10\nB) 00:01:02\nC) 00:03:00\nD) 00:04:00")
    assert parse_options(q.text)[1] == ("B", "00:01:02")
    ans = ExtractiveAnswerer().answer(q, _ctx(q, _item(60, 64, 0.8, labels=(("lemon", 0.6),))))
    assert ans.answer.startswith("B)")
    q = Question(text="What appears?\nA) a violin\nB) a lemon\nC) a bear\nD) a boat")
    ans = ExtractiveAnswerer().answer(q, _ctx(q, _item(60, 64, 0.8, labels=(("lemon", 0.6),))))
    assert ans.answer.startswith("B)")


def test_no_hits():
    q = Question(text="anything?")
    ans = ExtractiveAnswerer().answer(q, Context(items=(), budget=10, question=q))
    assert ans.evidence == () and "Nothing" in ans.answer


def test_unknown_answerer_lists_the_available_ones():
    import pytest

    from pipelines.answerers import create_answerer
    from streamvid.config import AnswerConfig
    from streamvid.errors import ConfigError

    with pytest.raises(ConfigError, match="available: extractive, hf"):
        create_answerer(AnswerConfig(name="nope"))
