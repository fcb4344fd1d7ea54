"""The extractive answerer: which text it quotes, which time it gives, which option it picks."""

from __future__ import annotations

import numpy as np

from pipelines.answerers import ExtractiveAnswerer, best_text_line, parse_options
from streamvid.compress.clips import describe_clip
from streamvid.types import ClipMemory, Context, ContextItem, Detection, FrameObjects, Question


def _objects(*frames):
    """``(time, {"person": 3, "car": 1})`` per frame -> FrameObjects with boxes in a row."""
    out = []
    for t, counts in frames:
        dets, x = [], 0.0
        for name, n in counts.items():
            for _ in range(n):
                dets.append(Detection(name, 0.7, (x, 0.4, x + 0.04, 0.6)))
                x += 0.05
        out.append(FrameObjects(float(t), tuple(dets)))
    return tuple(out)


def _item(start, end, score, *, text="", labels=(), rank=0, objects=(), source="v", text_times=()):
    clip = ClipMemory(source_id=source, start=start, end=end, vector=np.ones(4, np.float32) / 2,
                      keyframes=(start,), labels=labels, ocr_text=text, objects=objects, text_times=text_times,
                      description=describe_clip(labels, text, objects))
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
    assert ans.answer.startswith("At 01:02:05 in v (01:02:05–01:02:11)")
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


def test_how_many_at_the_asked_time_and_the_peak():
    people = _item(28, 33, 0.9, objects=_objects((28, {"person": 5}), (30, {"person": 6, "truck": 1}),
                                                 (32, {"person": 4})), source="vtest.avi")
    later = _item(60, 64, 0.5, objects=_objects((60, {"person": 8})), source="vtest.avi", rank=1)
    q = Question(text="how many people are there at 00:00:30?")
    ans = ExtractiveAnswerer().answer(q, _ctx(q, people, later))
    assert ans.answer == "6 people at 00:00:30 in vtest.avi."
    assert ans.evidence[0].keyframe == 30 and ans.evidence[0].source_id == "vtest.avi"
    q = Question(text="How many people are there?")
    ans = ExtractiveAnswerer().answer(q, _ctx(q, people, later))
    assert ans.answer.startswith("8 people at 00:01:00 in vtest.avi, the most seen at once; 6 at 00:00:30")
    q = Question(text="how many dogs are there?")
    ans = ExtractiveAnswerer().answer(q, _ctx(q, people, later))
    assert ans.answer.startswith("Found no dogs") and ans.evidence


def test_when_names_the_first_appearance_and_the_others():
    a = _item(10, 14, 0.9, objects=_objects((10, {"person": 2}), (12, {"person": 2, "car": 1})))
    b = _item(40, 44, 0.8, objects=_objects((41, {"truck": 1})), rank=1)
    q = Question(text="When does a car first appear?")
    ans = ExtractiveAnswerer().answer(q, _ctx(q, a, b))
    assert ans.answer.startswith("A car first appears at 00:00:12 in v (")
    assert "also at 00:00:41" in ans.answer
    assert ans.evidence[0].keyframe == 12
    q = Question(text="When does a van appear?")     # a van is detected as a truck or a car
    ans = ExtractiveAnswerer().answer(q, _ctx(q, b, a))
    assert ans.answer.startswith("A van appears at 00:00:12 in v (left of the frame, detected as car)")


def test_absent_things_are_not_found_but_nearest_moments_are_listed():
    a = _item(10, 14, 0.9, objects=_objects((10, {"person": 2})), labels=(("horse cart", 0.9),))
    for text in ("When does a dog appear?", "When does a person with a suitcase appear?",
                 "When does a horse appear?"):
        q = Question(text=text)
        ans = ExtractiveAnswerer().answer(q, _ctx(q, a))
        assert ans.answer.startswith("Found no") and "00:00:10" in ans.answer
        assert len(ans.evidence) == 1
    q = Question(text="What does the sign about the wifi say?")
    ans = ExtractiveAnswerer().answer(q, _ctx(q, _item(5, 9, 0.9, text="EXIT | Fire door")))
    assert ans.answer.startswith("Found no on-screen text about wifi")


def test_text_answer_quotes_the_sign_whatever_words_the_question_uses():
    room = _item(20, 25, 0.6, text="LIBRARY: ROOM 5 | INTERVIEWS: ROOM 4 | EXIT", text_times=(20, 23, 20))
    q = Question(text="Which room is for interviews?")
    ans = ExtractiveAnswerer().answer(q, _ctx(q, room))
    # quoted with the time that line was read, not the clip's keyframe
    assert ans.answer.startswith('"INTERVIEWS: ROOM 4" — read on screen at 00:00:23 in v')
    assert ans.evidence[0].keyframe == 23


def test_single_value_question_picks_the_line_with_the_value():
    assert best_text_line("Displays | Resolution: | 1024 x 768 (4:3) | Rotation: | Normal",
                          "What resolution is shown?") == "Resolution: 1024 x 768 (4:3)"


def test_summary_is_sentences_not_labels():
    a = _item(0, 5, 0.9, objects=_objects((0, {"person": 3}), (2, {"person": 5})), labels=(("maypole", 0.9),))
    b = _item(5, 10, 0.8, objects=_objects((6, {"person": 2})), text="EXIT", rank=1)
    q = Question(text="What is this video about?")
    ans = ExtractiveAnswerer().answer(q, _ctx(q, a, b))
    assert ans.answer.startswith("v (00:00:00–00:00:10): Seen: people throughout (up to 5 people at once, at 00:00:02)")
    assert 'On-screen text: "EXIT"' in ans.answer and "maypole" not in ans.answer
    assert len(ans.evidence) == 2


def test_multiple_choice_by_count_and_by_objects():
    a = _item(28, 33, 0.9, objects=_objects((30, {"person": 6, "truck": 1})))
    q = Question(text="How many people are visible at 00:00:30?\nA) 1\nB) 3\nC) 6\nD) 12")
    assert ExtractiveAnswerer().answer(q, _ctx(q, a)).answer == "C) 6"
    q = Question(text="What is parked at the top right?\nA) a bus\nB) a van\nC) a boat\nD) a horse")
    assert ExtractiveAnswerer().answer(q, _ctx(q, a)).answer == "B) a van"


def test_speech_question_says_no_transcript():
    q = Question(text="What did the narrator say?")
    ans = ExtractiveAnswerer().answer(q, _ctx(q, _item(0, 5, 0.5)))
    assert ans.answer.startswith("No speech was found") and ans.evidence


def test_evidence_names_its_video_in_json():
    q = Question(text="When does a lemon appear?")
    ans = ExtractiveAnswerer().answer(q, _ctx(q, _item(3, 5, 0.8, labels=(("lemon", 0.6),), source="kitchen.mp4")))
    assert ans.to_json()["evidence"][0]["source_id"] == "kitchen.mp4"
    assert ans.evidence[0].line().startswith("kitchen.mp4 00:00:03–00:00:05")
