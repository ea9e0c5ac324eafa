from __future__ import annotations

import open_clip
import pytest

from diffkit._clip_vocab import CLIP_VOCAB_SIZE, clip_tokenizer


@pytest.fixture(scope="module")
def tok(tmp_path_factory):
    return clip_tokenizer(tmp_path_factory.mktemp("tok"))


@pytest.mark.parametrize(
    "text",
    ["a photo of a woman nurse", "A Red CIRCLE!", "software developer at work, 4k", "café naïve façade"],
)
def test_same_ids_as_open_clip(tok, text):
    ref = open_clip.get_tokenizer("ViT-B-32")([text])[0].tolist()
    ref = ref[: ref.index(49407) + 1]
    assert tok(text).input_ids == ref


def test_vocabulary_size_and_padding(tok):
    assert len(tok) == CLIP_VOCAB_SIZE
    ids = tok("a nurse", padding="max_length", max_length=tok.model_max_length).input_ids
    assert len(ids) == 77 and ids[0] == 49406 and ids[-1] == 49407
