"""Tiny random-weight VideoLLMs of each supported family, built locally from configs (never the
hub), with a tiny word-level tokenizer saved beside them."""

from __future__ import annotations

SPECIAL = ["<pad>", "<unk>", "<s>", "</s>", "<|im_start|>", "<|im_end|>", "<|vision_start|>",
           "<|vision_end|>", "<|video_pad|>", "<|image_pad|>", "<image>", "<video>",
           "<fake_token_around_image>", "<global-img>", "<end_of_utterance>"]
WORDS = ["system", "user", "assistant", "You", "are", "a", "helpful", "Frame", "from", "On", "screen",
         "what", "happens", "in", "the", "video", "?", ":", ".", "\n", "User", "Assistant", "OPEN",
         "door", "code", "is", "retrieved", "moments", "time", "order", "'s", ","] + \
        [f"{i:02d}" for i in range(60)]
VOCAB = SPECIAL + WORDS


def save_tokenizer(path) -> None:
    import transformers
    from tokenizers import Tokenizer, models, pre_tokenizers

    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(VOCAB)}, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.WhitespaceSplit(),
                                                 pre_tokenizers.Punctuation()])
    fast = transformers.PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="<pad>", unk_token="<unk>", bos_token="<s>",
        eos_token="<|im_end|>", additional_special_tokens=SPECIAL[4:])
    fast.save_pretrained(path)


def processor_class(family: str):
    """The family's image processor (PIL backend: no torchvision needed)."""
    import transformers

    return getattr(transformers, {"llava-ov": "LlavaOnevisionImageProcessorPil",
                                  "qwen2.5-vl": "Qwen2VLImageProcessorPil",
                                  "smolvlm": "SmolVLMImageProcessorPil"}[family])


_HALF = dict(image_mean=[0.5, 0.5, 0.5], image_std=[0.5, 0.5, 0.5])
STATS = {"llava-ov": _HALF, "qwen2.5-vl": {}, "smolvlm": _HALF}  # as the released checkpoints


def _text(**kw):
    d = dict(vocab_size=len(VOCAB), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
             num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=4096,
             pad_token_id=0, bos_token_id=2, eos_token_id=5, tie_word_embeddings=False)
    d.update(kw)
    return d


def build(family: str, path) -> str:
    """Save a tiny model of ``family`` (llava-ov, qwen2.5-vl, smolvlm) with its tokenizer."""
    import torch
    import transformers

    torch.manual_seed(0)
    ids = {t: i for i, t in enumerate(VOCAB)}
    if family == "llava-ov":
        cfg = transformers.LlavaOnevisionConfig(
            vision_config=dict(model_type="siglip_vision_model", hidden_size=32, intermediate_size=64,
                               num_hidden_layers=2, num_attention_heads=4, image_size=40, patch_size=8),
            text_config=dict(_text(), model_type="qwen2"),
            image_token_id=ids["<image>"], video_token_id=ids["<video>"],
            vision_feature_layer=-1, vision_feature_select_strategy="full")
        model = transformers.LlavaOnevisionForConditionalGeneration(cfg)
    elif family == "qwen2.5-vl":
        cfg = transformers.Qwen2_5_VLConfig(
            text_config=_text(rope_scaling={"type": "mrope", "mrope_section": [2, 1, 1]}),
            vision_config=dict(depth=2, hidden_size=32, intermediate_size=64, num_heads=4,
                               out_hidden_size=32, patch_size=4, spatial_merge_size=2,
                               temporal_patch_size=2, window_size=16, fullatt_block_indexes=[1],
                               tokens_per_second=2),
            image_token_id=ids["<|image_pad|>"], video_token_id=ids["<|video_pad|>"],
            vision_start_token_id=ids["<|vision_start|>"], vision_end_token_id=ids["<|vision_end|>"])
        model = transformers.Qwen2_5_VLForConditionalGeneration(cfg)
    elif family == "smolvlm":
        cfg = transformers.SmolVLMConfig(
            vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                               num_attention_heads=4, image_size=32, patch_size=4),
            text_config=dict(_text(), model_type="llama"), scale_factor=2,
            image_token_id=ids["<image>"])
        model = transformers.SmolVLMForConditionalGeneration(cfg)
    else:
        raise ValueError(family)
    model.save_pretrained(path)
    save_tokenizer(path)
    processor_class(family)(**STATS[family]).save_pretrained(path)
    return str(path)
