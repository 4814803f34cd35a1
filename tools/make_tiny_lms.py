#!/usr/bin/env python3
"""Make the tiny transformer test models under tests/data/lm/ (one folder per architecture), each with its
reference outputs from transformers.

    python3 tools/make_tiny_lms.py [OUT_DIR]      # OUT_DIR defaults to tests/data/lm

Every folder holds config.json, model.safetensors, tokenizer.json, reference.txt (one English sentence) and
reference.safetensors: `ids` (I64 [T], from the Python `tokenizers` package's
Tokenizer.from_file("tokenizer.json").encode(sentence).ids) and, for decoders, `logits` (F32 [T, V]); for the
BERT encoder `hidden` (F32 [T, H], last_hidden_state) and `embedding` (F32 [H], mean over the tokens with
attention mask 1, not normalised). The references come from the saved folder itself, loaded back with
`from_pretrained(dir, dtype=torch.float32, attn_implementation="eager")`: bf16/f16 weights are upcast, every
operation runs in float32.

Weights are random (fixed seeds) but scaled up so that errors show: linear weights normal with
std 2/sqrt(fan_in) (0.2-0.35 here), embeddings std 0.5, norm scales 1 +- 0.3 (Gemma stores w with scale
1 + w, so w ~ N(0, 0.3)), biases std 0.2. Logits come out O(1-10).

Tokenizers are trained here with the `tokenizers` package on the short English text below: a byte-level BPE
for the decoders (Gemma: a SentencePiece-style BPE with byte fallback, like the real Gemma 3 tokenizer), a
lower-casing WordPiece (vocabulary picked from the same text) with a [CLS] $A [SEP] post-processor for BERT.
The same script gives the same files (seeds fixed; BPE training is deterministic).
"""
import json, os, sys

import numpy as np
import torch
from safetensors.torch import save_file
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers

OUT = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), "..", "tests", "data", "lm")
OUT = os.path.abspath(OUT)

CORPUS = """\
The small boat left the harbour early in the morning, while the town was still asleep.
A light wind came from the west, and the water was calm and grey under the clouds.
The old fisherman pulled the rope and looked at the sky. He had seen many storms, but today the weather was kind.
His daughter sat at the back of the boat and counted the nets. She wanted to learn everything about the sea.
They passed the lighthouse, the long stone wall and the rocks where the birds made their nests.
When the sun rose over the hills, the light turned the water from grey to green and then to a deep blue.
The fisherman said that the best fish live far from the shore, where the water is cold and clear.
His daughter asked him why the tides change twice a day, and he told her about the moon and its pull.
In the afternoon they came back with a full boat, tired and happy, and the people of the town were waiting.
The market was busy: bread, cheese, apples, fresh fish and flowers were sold from wooden tables.
Children ran between the stalls, and a dog slept in the shade of a large tree near the church.
In the evening the family ate together and talked about the day, the weather and the price of fish.
Later, when the stars came out, the daughter opened a book about ships and read until she fell asleep.
Every story has a beginning, a middle and an end; the best ones also have a question that stays with you.
Numbers matter too: 12 nets, 3 ropes, 250 fish, and a trip of 40 kilometres in 9 hours.
"""

SENTENCE = "The old fisherman's daughter counted 12 nets near the lighthouse."

DEC_SPECIALS = ["<|endoftext|>", "<s>", "</s>"]


def byte_level_bpe(vocab_size, bos):
    """Byte-level BPE like GPT-2/Llama 3/Qwen/SmolLM; with bos, a post-processor that prepends <s>."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    tr = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=DEC_SPECIALS,
                             initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(CORPUS.splitlines(), tr)
    if bos:
        tok.post_processor = processors.TemplateProcessing(
            single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", tok.token_to_id("<s>"))])
    else:
        tok.post_processor = processors.ByteLevel(trim_offsets=False)
    return tok


def spm_bpe_byte_fallback(vocab_size):
    """A SentencePiece-style BPE like Gemma 3's tokenizer.json: spaces become U+2581, no pre-tokenizer split,
    byte fallback through <0xNN> tokens, and <bos> prepended by the post-processor."""
    specials = ["<pad>", "<eos>", "<bos>", "<unk>"]
    base = Tokenizer(models.BPE(unk_token="<unk>"))
    # trained on words with their leading U+2581 (as SentencePiece does), so no merge spans two words
    base.pre_tokenizer = pre_tokenizers.Metaspace(replacement="\u2581", prepend_scheme="never", split=True)
    tr = trainers.BpeTrainer(vocab_size=vocab_size - 256, special_tokens=specials, show_progress=False)
    base.train_from_iterator(CORPUS.splitlines(), tr)
    j = json.loads(base.to_str())
    vocab = j["model"]["vocab"]
    # byte tokens right after the specials, as in SentencePiece vocabularies; the rest shifted up
    order = sorted(vocab.items(), key=lambda kv: kv[1])
    new = {}
    for t, _ in order[:len(specials)]:
        new[t] = len(new)
    for b in range(256):
        new[f"<0x{b:02X}>"] = len(new)
    for t, _ in order[len(specials):]:
        if t not in new:
            new[t] = len(new)
    merges = j["model"]["merges"]
    tok = Tokenizer(models.BPE(vocab=new, merges=[tuple(m) if isinstance(m, list) else tuple(m.split(" ")) for m in merges],
                               unk_token="<unk>", byte_fallback=True, fuse_unk=True))
    tok.add_special_tokens(specials)
    tok.normalizer = normalizers.Replace(" ", "\u2581")
    tok.pre_tokenizer = pre_tokenizers.Split(" ", "merged_with_previous")
    tok.decoder = decoders.Sequence([decoders.Replace("\u2581", " "), decoders.ByteFallback(), decoders.Fuse()])
    tok.post_processor = processors.TemplateProcessing(
        single="<bos> $A", pair="<bos> $A <bos> $B", special_tokens=[("<bos>", new["<bos>"])])
    return tok


def wordpiece(vocab_size):
    """A lower-casing BERT WordPiece tokenizer. The vocabulary is chosen here, not trained (the `tokenizers`
    WordPiece trainer is not deterministic): specials, every character of the corpus alone and as ##x, a few
    suffixes, then the corpus words seen twice or more and those of up to 6 letters seen once, most frequent first."""
    import collections, re
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    text = CORPUS.lower()
    chars = sorted(set(text) - {" ", "\n"})
    words = collections.Counter(re.findall(r"[a-z0-9]+", text))
    ranked = sorted(words.items(), key=lambda kv: (-kv[1], kv[0]))
    suffixes = ["##s", "##ed", "##er", "##ing", "##man", "##house", "##ly", "##est"]
    vocab = {}
    for t in specials + chars + ["##" + c for c in chars] + suffixes:
        vocab.setdefault(t, len(vocab))
    for w, n in ranked:
        if len(vocab) >= vocab_size:
            break
        if n >= 2 or len(w) <= 6:
            vocab.setdefault(w, len(vocab))
    while len(vocab) < vocab_size:  # as BERT's [unusedN] entries
        vocab[f"[unused{len(vocab)}]"] = len(vocab)
    tok = Tokenizer(models.WordPiece(vocab=vocab, unk_token="[UNK]"))
    tok.add_special_tokens(specials)
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.decoder = decoders.WordPiece()
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", vocab["[CLS]"]), ("[SEP]", vocab["[SEP]"])])
    return tok


def scale_up(model, gemma_norms=False, seed=0):
    """Re-draw every parameter, larger than transformers' init, in a fixed order."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in sorted(model.named_parameters(), key=lambda kv: kv[0]):
            shape = p.shape
            r = torch.randn(shape, generator=g)
            lname = name.lower()
            if "norm" in lname and p.dim() == 1:  # RMSNorm / LayerNorm weight or bias
                if name.endswith(".bias"):
                    p.copy_(0.2 * r)
                elif gemma_norms:
                    p.copy_(0.3 * r)       # Gemma: scale is 1 + w
                else:
                    p.copy_(1.0 + 0.3 * r)
            elif name.endswith(".bias"):
                p.copy_(0.2 * r)
            elif "embed" in lname:
                p.copy_(0.5 * r)
            elif p.dim() == 2:
                p.copy_(r * (2.0 / shape[1] ** 0.5))
            else:
                raise SystemExit(f"unhandled parameter {name} {tuple(shape)}")


def save_tokenizer(tok, d):
    tok.save(os.path.join(d, "tokenizer.json"))


def reference_ids(d, text):
    t = Tokenizer.from_file(os.path.join(d, "tokenizer.json"))
    return t.encode(text).ids


def write_common(d, tok, model, dtype, legacy_config=None):
    os.makedirs(d, exist_ok=True)
    model = model.to(dtype)
    model.save_pretrained(d)
    model.float()  # back to f32 (exactly the stored values), for the dialect check in decoder_reference
    for extra in ("generation_config.json",):
        p = os.path.join(d, extra)
        if os.path.exists(p):
            os.remove(p)
    if legacy_config:
        p = os.path.join(d, "config.json")
        c = json.load(open(p))
        legacy_config(c)
        json.dump(c, open(p, "w"), indent=2, sort_keys=True)
        open(p, "a").write("\n")
    save_tokenizer(tok, d)
    with open(os.path.join(d, "reference.txt"), "w") as f:
        f.write(SENTENCE)


def decoder_reference(d, auto_cls, built):
    """Logits of the saved folder; checked against sdpa attention and against the model as built in memory
    (so a config rewritten to the 4.x dialect means the same to transformers as the original)."""
    ids = reference_ids(d, SENTENCE)
    m = auto_cls.from_pretrained(d, dtype=torch.float32, attn_implementation="eager").eval()
    x = torch.tensor([ids])
    with torch.no_grad():
        logits = m(input_ids=x).logits[0].float()
        ms = auto_cls.from_pretrained(d, dtype=torch.float32, attn_implementation="sdpa").eval()
        l2 = ms(input_ids=x).logits[0].float()
        # a fresh copy: the built model's rotary buffers went through the bf16/f16 cast too
        built.config._attn_implementation = "eager"
        fresh = type(built)(built.config).float().eval()
        fresh.load_state_dict(built.state_dict())
        l3 = fresh(input_ids=x).logits[0].float()
    assert (logits - l2).abs().max() < 1e-3, "eager and sdpa disagree"
    assert (logits - l3).abs().max() < 1e-5, f"saved config differs from the built one {(logits - l3).abs().max()}"
    save_file({"ids": torch.tensor(ids, dtype=torch.int64), "logits": logits.contiguous()},
              os.path.join(d, "reference.safetensors"))
    return ids, logits, m


def set_rope_legacy(c, theta_key="rope_theta"):
    """transformers 4.x dialect: rope_theta (+ rope_scaling) at the top level instead of rope_parameters."""
    rp = c.pop("rope_parameters")
    c["rope_theta"] = rp.pop("rope_theta")
    c["rope_scaling"] = rp if rp.get("rope_type", "default") != "default" else None


def main():
    from transformers import (AutoModel, AutoModelForCausalLM, BertConfig, BertModel, Gemma3ForCausalLM,
                              Gemma3TextConfig, LlamaConfig, LlamaForCausalLM, MistralConfig,
                              MistralForCausalLM, Qwen2Config, Qwen2ForCausalLM, Qwen3Config, Qwen3ForCausalLM)
    os.makedirs(OUT, exist_ok=True)
    V = 448          # byte-level BPE vocabulary of the decoders (Gemma: 512 with the 256 byte tokens)
    summary = {}

    def report(name, d, ids, out):
        tok = Tokenizer.from_file(os.path.join(d, "tokenizer.json"))
        size = sum(os.path.getsize(os.path.join(d, f)) for f in os.listdir(d))
        amax = out.argmax(-1).tolist() if out.dim() == 2 else None
        print(f"{name:12s} T={len(ids):2d} |out|max={out.abs().max():7.3f} std={out.std():6.3f} "
              f"size={size/1024:6.1f} KB tokens={tok.encode(SENTENCE).tokens[:6]}...")
        summary[name] = size

    # ---- llama: bf16, untied, llama3 rope scaling, rope_theta 500000, BOS
    torch.manual_seed(1)
    tok = byte_level_bpe(V, bos=True)
    cfg = LlamaConfig(vocab_size=tok.get_vocab_size(), hidden_size=48, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, head_dim=16, max_position_embeddings=128,
                      rms_norm_eps=1e-5, tie_word_embeddings=False, bos_token_id=tok.token_to_id("<s>"),
                      eos_token_id=tok.token_to_id("</s>"),
                      rope_parameters={"rope_type": "llama3", "rope_theta": 500000.0, "factor": 8.0,
                                       "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                                       "original_max_position_embeddings": 64})
    m = LlamaForCausalLM(cfg)
    scale_up(m, seed=101)
    d = os.path.join(OUT, "llama")
    write_common(d, tok, m, torch.bfloat16, legacy_config=set_rope_legacy)
    ids, lg, _ = decoder_reference(d, AutoModelForCausalLM, m)
    report("llama", d, ids, lg)

    # ---- smollm_tied: f32, tied, default rope, no BOS
    tok = byte_level_bpe(V, bos=False)
    cfg = LlamaConfig(vocab_size=tok.get_vocab_size(), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128, rms_norm_eps=1e-5,
                      tie_word_embeddings=True, bos_token_id=tok.token_to_id("<s>"),
                      eos_token_id=tok.token_to_id("</s>"),
                      rope_parameters={"rope_type": "default", "rope_theta": 100000.0})
    m = LlamaForCausalLM(cfg)
    scale_up(m, seed=102)
    d = os.path.join(OUT, "smollm_tied")
    write_common(d, tok, m, torch.float32)
    ids, lg, _ = decoder_reference(d, AutoModelForCausalLM, m)
    report("smollm_tied", d, ids, lg)

    # ---- qwen2: f32, q/k/v biases, tied (as Qwen2-0.5B), model vocab padded past the tokenizer's (as in real Qwen2)
    tok = byte_level_bpe(V, bos=False)
    cfg = Qwen2Config(vocab_size=tok.get_vocab_size() + 16, hidden_size=32, intermediate_size=64,
                      num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                      max_position_embeddings=128, rms_norm_eps=1e-6, tie_word_embeddings=True,
                      use_sliding_window=False, bos_token_id=None, eos_token_id=tok.token_to_id("<|endoftext|>"),
                      rope_parameters={"rope_type": "default", "rope_theta": 1000000.0})
    m = Qwen2ForCausalLM(cfg)
    scale_up(m, seed=103)
    d = os.path.join(OUT, "qwen2")
    write_common(d, tok, m, torch.float32, legacy_config=set_rope_legacy)
    ids, lg, _ = decoder_reference(d, AutoModelForCausalLM, m)
    report("qwen2", d, ids, lg)

    # ---- qwen3: bf16, q_norm/k_norm, head_dim 16 != hidden/heads = 12, tied
    tok = byte_level_bpe(V, bos=False)
    cfg = Qwen3Config(vocab_size=tok.get_vocab_size(), hidden_size=48, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, head_dim=16, max_position_embeddings=128,
                      rms_norm_eps=1e-6, tie_word_embeddings=True, bos_token_id=None,
                      eos_token_id=tok.token_to_id("<|endoftext|>"),
                      rope_parameters={"rope_type": "default", "rope_theta": 1000000.0})
    m = Qwen3ForCausalLM(cfg)
    scale_up(m, seed=104)
    d = os.path.join(OUT, "qwen3")
    write_common(d, tok, m, torch.bfloat16)
    ids, lg, _ = decoder_reference(d, AutoModelForCausalLM, m)
    report("qwen3", d, ids, lg)

    # ---- mistral: f16, untied, BOS, no sliding window
    tok = byte_level_bpe(V, bos=True)
    cfg = MistralConfig(vocab_size=tok.get_vocab_size(), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                        num_attention_heads=4, num_key_value_heads=2, head_dim=8, max_position_embeddings=128,
                        rms_norm_eps=1e-5, tie_word_embeddings=False, sliding_window=None,
                        bos_token_id=tok.token_to_id("<s>"), eos_token_id=tok.token_to_id("</s>"),
                        rope_parameters={"rope_type": "default", "rope_theta": 1000000.0})
    m = MistralForCausalLM(cfg)
    scale_up(m, seed=105)
    d = os.path.join(OUT, "mistral")
    write_common(d, tok, m, torch.float16, legacy_config=set_rope_legacy)
    ids, lg, _ = decoder_reference(d, AutoModelForCausalLM, m)
    report("mistral", d, ids, lg)

    # ---- gemma3: bf16, tied, sliding window 4 on layers 0 and 2, full on 1; query_pre_attn_scalar 24 != 16;
    # local rope base 10000, global 1000000; norms (1 + w); embeddings * sqrt(hidden); GeLU-tanh; BOS
    tok = spm_bpe_byte_fallback(512)
    layer_types = ["sliding_attention", "full_attention", "sliding_attention"]
    cfg = Gemma3TextConfig(vocab_size=tok.get_vocab_size(), hidden_size=48, intermediate_size=64,
                           num_hidden_layers=3, num_attention_heads=4, num_key_value_heads=2, head_dim=16,
                           query_pre_attn_scalar=24, sliding_window=4, layer_types=layer_types,
                           max_position_embeddings=128, rms_norm_eps=1e-6, tie_word_embeddings=True,
                           final_logit_softcapping=None, attn_logit_softcapping=None,
                           hidden_activation="gelu_pytorch_tanh",
                           pad_token_id=0, eos_token_id=1, bos_token_id=2,
                           rope_parameters={"full_attention": {"rope_type": "default", "rope_theta": 1000000.0},
                                            "sliding_attention": {"rope_type": "default", "rope_theta": 10000.0}})
    m = Gemma3ForCausalLM(cfg)
    scale_up(m, gemma_norms=True, seed=106)
    d = os.path.join(OUT, "gemma3")

    def gemma_legacy(c):
        rp = c.pop("rope_parameters")
        c["rope_theta"] = rp["full_attention"]["rope_theta"]
        c["rope_local_base_freq"] = rp["sliding_attention"]["rope_theta"]
        c["rope_scaling"] = None
        del c["_sliding_window_pattern"]  # a default transformers writes; layer_types is what counts
    write_common(d, tok, m, torch.bfloat16, legacy_config=gemma_legacy)
    ids, lg, gm = decoder_reference(d, AutoModelForCausalLM, m)
    # the window must matter: the same model with a window of 1000 gives other logits past position 4
    c2 = gm.config
    c2.sliding_window = 1000
    wide = Gemma3ForCausalLM.from_pretrained(d, config=c2, dtype=torch.float32, attn_implementation="eager").eval()
    with torch.no_grad():
        lw = wide(input_ids=torch.tensor([ids])).logits[0]
    assert (lw[:4] - lg[:4]).abs().max() < 1e-4 and (lw[4:] - lg[4:]).abs().max() > 1e-2, "window does not matter"
    report("gemma3", d, ids, lg)

    # ---- bert: f32 BertModel like MiniLM (post-LN, GELU erf, absolute positions, token types), WordPiece
    tok = wordpiece(320)
    cfg = BertConfig(vocab_size=tok.get_vocab_size(), hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                     intermediate_size=64, hidden_act="gelu", max_position_embeddings=64, type_vocab_size=2,
                     layer_norm_eps=1e-12, pad_token_id=0, hidden_dropout_prob=0.0,
                     attention_probs_dropout_prob=0.0)
    m = BertModel(cfg)
    scale_up(m, seed=107)
    d = os.path.join(OUT, "bert")
    write_common(d, tok, m, torch.float32)
    ids = reference_ids(d, SENTENCE)
    bm = AutoModel.from_pretrained(d, dtype=torch.float32, attn_implementation="eager").eval()
    x = torch.tensor([ids])
    mask = torch.ones_like(x)
    with torch.no_grad():
        h = bm(input_ids=x, attention_mask=mask, token_type_ids=torch.zeros_like(x)).last_hidden_state[0]
    emb = (h * mask[0, :, None]).sum(0) / mask.sum()
    save_file({"ids": torch.tensor(ids, dtype=torch.int64), "hidden": h.contiguous(), "embedding": emb.contiguous()},
              os.path.join(d, "reference.safetensors"))
    report("bert", d, ids, h)

    print(f"total {sum(summary.values())/1024:.1f} KB")


if __name__ == "__main__":
    main()
