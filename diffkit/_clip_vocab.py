"""CLIP's byte-pair vocabulary, built offline from the BPE file open_clip ships.

Hugging Face's ``CLIPTokenizer`` reads ``vocab.json`` and ``merges.txt``; OpenAI's
CLIP and open_clip read one gzipped merges file. Both describe the same 49,408-token
vocabulary, so we rebuild the Hugging Face files from open_clip's copy instead of
downloading them. The result tokenizes exactly as ``openai/clip-vit-large-patch14``.
"""

from __future__ import annotations

import gzip
import json
from functools import lru_cache
from pathlib import Path

__all__ = ["CLIP_VOCAB_SIZE", "clip_tokenizer", "write_clip_tokenizer_files"]

CLIP_VOCAB_SIZE = 49408
_N_MERGES = 49152 - 256 - 2


def _bytes_to_unicode() -> dict[int, str]:
    # GPT-2 / CLIP: a reversible map from bytes to printable unicode characters.
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
    bs += list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, (chr(c) for c in cs)))


@lru_cache(maxsize=1)
def _vocab_and_merges() -> tuple[dict[str, int], list[str]]:
    import open_clip.tokenizer as oct  # the BPE file ships inside open_clip

    bpe_path = Path(oct.__file__).with_name("bpe_simple_vocab_16e6.txt.gz")
    lines = gzip.open(bpe_path).read().decode("utf-8").split("\n")
    merges = lines[1 : _N_MERGES + 1]
    tokens = list(_bytes_to_unicode().values())
    tokens = tokens + [t + "</w>" for t in tokens]
    tokens += ["".join(m.split()) for m in merges]
    tokens += ["<|startoftext|>", "<|endoftext|>"]
    assert len(tokens) == CLIP_VOCAB_SIZE, len(tokens)
    return {t: i for i, t in enumerate(tokens)}, merges


def write_clip_tokenizer_files(folder: str | Path, *, model_max_length: int = 77) -> Path:
    """Write ``vocab.json``, ``merges.txt`` and the tokenizer configs into *folder*.

    ``CLIPTokenizer.from_pretrained(folder)`` then loads CLIP's own vocabulary offline.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    vocab, merges = _vocab_and_merges()
    (folder / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n", encoding="utf-8")
    config = {
        "tokenizer_class": "CLIPTokenizer",
        "model_max_length": model_max_length,
        "bos_token": "<|startoftext|>",
        "eos_token": "<|endoftext|>",
        "unk_token": "<|endoftext|>",
        "pad_token": "<|endoftext|>",
        "do_lower_case": True,
    }
    (folder / "tokenizer_config.json").write_text(json.dumps(config, indent=2), encoding="utf-8")
    special = {k: config[k] for k in ("bos_token", "eos_token", "unk_token", "pad_token")}
    (folder / "special_tokens_map.json").write_text(json.dumps(special, indent=2), encoding="utf-8")
    return folder


def clip_tokenizer(folder: str | Path | None = None, *, model_max_length: int = 77):
    """A ``transformers.CLIPTokenizer`` with CLIP's BPE vocabulary, built without a network.

    *folder* keeps the files (a temporary folder when ``None``).
    """
    import tempfile

    from transformers import CLIPTokenizer

    if folder is None:
        folder = tempfile.mkdtemp(prefix="diffkit-clip-tok-")
    write_clip_tokenizer_files(folder, model_max_length=model_max_length)
    return CLIPTokenizer.from_pretrained(str(folder))
