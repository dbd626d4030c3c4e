"""Tiny random models built offline from a config, saved like a hub checkpoint (safetensors +
tokenizer.json), so tests load them through the same path as any Hugging Face model."""
from __future__ import annotations

import json
from pathlib import Path

from repmap_core.data.load import BUILTIN_DIR

KINDS = ("gpt2", "bert", "llama", "gpt_neox", "qwen2", "gemma")


def corpus() -> list[str]:
    lines = (BUILTIN_DIR / "sentiment.jsonl").read_text(encoding="utf-8").splitlines()
    texts = [json.loads(x)["text"] for x in lines]
    return texts + ["Question: Which gas do plants take in?\nAnswer: carbon dioxide", "Choices:\n (A) Yes\n (B) No"]


def _bpe_tokenizer(vocab_size: int = 400):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=True)
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=["<|endoftext|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(corpus(), trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<|endoftext|>", eos_token="<|endoftext|>",
                                   unk_token="<|endoftext|>")


def _wordpiece_tokenizer(vocab_size: int = 400):
    # The WordPiece trainer breaks count ties by Rust hash order, which is seeded per process, so
    # its vocabulary (and the tiny model) differed between runs. Build the vocabulary from counts.
    from collections import Counter

    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    normalizer, pre = normalizers.BertNormalizer(lowercase=True), pre_tokenizers.BertPreTokenizer()
    words = Counter(w for text in corpus() for w, _ in pre.pre_tokenize_str(normalizer.normalize_str(text)))
    chars = sorted({c for w in words for c in w})
    pieces = chars + [f"##{c}" for c in chars]
    top = [w for w, _ in sorted(words.items(), key=lambda kv: (-kv[1], kv[0])) if w not in pieces]
    vocab = specials + pieces + top[: max(0, vocab_size - len(specials) - len(pieces))]
    tok = Tokenizer(models.WordPiece({w: i for i, w in enumerate(vocab)}, unk_token="[UNK]"))
    tok.normalizer = normalizer
    tok.pre_tokenizer = pre
    tok.decoder = decoders.WordPiece()
    cls, sep = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1", special_tokens=[("[CLS]", cls), ("[SEP]", sep)])
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]",
                                   sep_token="[SEP]", mask_token="[MASK]")


def build_tiny_model(kind: str, folder: Path, n_layers: int = 3, width: int = 32, seed: int = 0) -> Path:
    """Save a random `kind` model (GPT-2, BERT, Llama, GPT-NeoX, Qwen2, Gemma) with its tokenizer."""
    import torch
    import transformers as tf

    torch.manual_seed(seed)
    tok = _wordpiece_tokenizer() if kind == "bert" else _bpe_tokenizer()
    vocab = len(tok)
    # a larger init than the default 0.02 gives O(1) activations, so a wrong layer or position shows
    common = dict(vocab_size=vocab, initializer_range=0.2)
    eos = tok.eos_token_id
    if kind == "gpt2":
        cfg = tf.GPT2Config(n_layer=n_layers, n_embd=width, n_head=4, n_positions=128, bos_token_id=eos,
                            eos_token_id=eos, **common)
        model = tf.GPT2LMHeadModel(cfg)
    elif kind == "bert":
        cfg = tf.BertConfig(num_hidden_layers=n_layers, hidden_size=width, num_attention_heads=4,
                            intermediate_size=2 * width, max_position_embeddings=128, pad_token_id=tok.pad_token_id, **common)
        model = tf.BertModel(cfg)
    else:
        shared = dict(hidden_size=width, num_hidden_layers=n_layers, num_attention_heads=4, intermediate_size=2 * width,
                      max_position_embeddings=128, bos_token_id=eos, eos_token_id=eos, **common)
        if kind == "llama":
            cfg, cls = tf.LlamaConfig(num_key_value_heads=2, **shared), tf.LlamaForCausalLM
        elif kind == "gpt_neox":
            cfg, cls = tf.GPTNeoXConfig(**shared), tf.GPTNeoXForCausalLM
        elif kind == "qwen2":
            cfg, cls = tf.Qwen2Config(num_key_value_heads=2, **shared), tf.Qwen2ForCausalLM
        elif kind == "gemma":
            cfg, cls = tf.GemmaConfig(num_key_value_heads=2, head_dim=8, **shared), tf.GemmaForCausalLM
        else:
            raise ValueError(kind)
        model = cls(cfg)
    folder = Path(folder)
    model.save_pretrained(folder, safe_serialization=True)
    tok.save_pretrained(folder)
    return folder
