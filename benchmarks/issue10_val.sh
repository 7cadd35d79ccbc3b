#!/usr/bin/env bash
# Issue 10 screening on the VAL split (tuning only; never published as a result):
# 16 val consistent scenes x 50 clips, seed-1 LoRAs of each ERFT variant against the
# clean-data LoRA. Each LoRA was made by `svi train --recipe RECIPE --out runs/NAME`
# (recipes/world-tiny-erft-anchor*.toml; the lowimg one is now the shipped default);
# rollouts are cached in
# runs/drift-cache. Usage: benchmarks/issue10_val.sh [extra --lora LABEL=PATH ...]
set -euo pipefail
cd "$(dirname "$0")/.."
A=src/svi/assets/world-tiny
C=benchmarks/contenders
.venv/bin/svi bench drift --split val --scenes 16 --clips 50 --no-base \
  --lora clean-s1=$A/clean_lora.safetensors --lora erft-s1=$C/erft-s1.safetensors \
  --lora erft-noimg-s1=$C/erft-noimg-s1.safetensors --lora erft-lowimg-s1=$A/svi_lora.safetensors \
  --lora erft-tbins-s1=$C/erft-tbins-s1.safetensors \
  --lora erft-rollout-s1=$C/erft-rollout-s1.safetensors \
  "$@" --cache runs/drift-cache --no-progress --out benchmarks/results/issue10/drift-val-consistent-50
