#!/usr/bin/env bash
# The published drift tables (docs/drift-benchmark.md): every contender of
# benchmarks/contenders.toml on 32 test scenes, consistent and creative scenes.
# Rollouts are cached in runs/drift-cache: rerunning resumes, and a longer CLIPS
# continues the cached rollouts exactly. Usage: CLIPS=200 JOBS=2 benchmarks/drift_suite.sh
set -euo pipefail
cd "$(dirname "$0")/.."
CLIPS=${CLIPS:-50}
SCENES=${SCENES:-32}
JOBS=${JOBS:-1}  # worker processes (threads are split between them)
BATCH=${BATCH:-1}  # scenes per DiT batch (1: the published rollouts)
SVI=${SVI:-.venv/bin/svi}
for kind in consistent creative; do
  "$SVI" bench drift --contenders benchmarks/contenders.toml --split test --scenes "$SCENES" \
    --clips "$CLIPS" --kind "$kind" --jobs "$JOBS" --batch "$BATCH" --focus erft-lowimg --cache runs/drift-cache --no-progress \
    --out "benchmarks/results/drift-test-$kind-$CLIPS"
done
