"""Needle-in-a-video-haystack (NIAH) evaluation.

Real footage is looped into haystack videos of a given length, needles are pasted into the
pixels (pictures with alpha, text signs, multi-hop sets), and the full pipeline — decode,
encoder, feature cache, pruner, memory, retrieval, answerer — is asked where and what they
are. Scores per cell (haystack length x needle depth): retrieval hit@1 / hit@3, answer
accuracy, visual tokens in the context, index and query time.

- :mod:`.haystack` — :func:`~.haystack.build_haystack`, :class:`~.haystack.NeedleSpec`
- :mod:`.needles` — needle sets (a folder + ``needles.json``), signs, compositing
- :mod:`.grid` — the NIAH YAML config and the plan of haystacks and questions
- :mod:`.score` — hit@k, accuracy, summaries
- :mod:`.plots` — heatmap (depth x length) and accuracy-vs-tokens comparison
- :mod:`.run` — :func:`~.run.run_niah`, resumable; :mod:`.cli` — ``streamvid niah``

Efficiency: per haystack length, distinct needles for all depths share one video (as few
videos as the minimum gap between needles allows); each video is indexed once and one
question is asked per needle, so the cells of a length share an index. Haystacks and
indexes are cached by the key of their inputs and reused by every config that runs on them.
"""
