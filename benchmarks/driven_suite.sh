#!/usr/bin/env bash
# The published talking / dancing tables (issue 13, docs/conditions.md): the shipped ERFT
# adapters vs their clean-data baselines of the same budget, 32 test scenes, driven by each
# scene's own audio / pose stream. Horizons 1, 10 and CLIPS come from one rollout per scene.
# Rollouts are cached in runs/driven-cache: rerunning resumes per scene.
# Usage: CLIPS=100 JOBS=2 benchmarks/driven_suite.sh
set -euo pipefail
cd "$(dirname "$0")/.."
CLIPS=${CLIPS:-100}
SCENES=${SCENES:-32}
JOBS=${JOBS:-1}  # worker processes (threads are split between them)
SVI=${SVI:-.venv/bin/svi}
"$SVI" bench driven --condition audio --lora erft=talk --lora clean=talk_clean --split test \
  --scenes "$SCENES" --clips "$CLIPS" --jobs "$JOBS" --cache runs/driven-cache --no-progress \
  --out "benchmarks/results/talk-test-$CLIPS"
"$SVI" bench driven --condition pose --lora erft=dance --lora clean=dance_clean --split test \
  --scenes "$SCENES" --clips "$CLIPS" --jobs "$JOBS" --cache runs/driven-cache --no-progress \
  --out "benchmarks/results/dance-test-$CLIPS"
