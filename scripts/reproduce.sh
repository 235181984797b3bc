#!/usr/bin/env bash
# Re-run the experiments behind the figures in docs/reproducing.md and docs/benchmarks.md.
#   bash scripts/reproduce.sh <what> [DATA_ROOT] [OUT]
# <what>: cora | graph-ablation | peptides | bench-pe | bench-train | all
# DATA_ROOT holds the datasets laid out as in data/README.md (default ../shared/data);
# OUT receives every run directory and the aggregated tables (default results/).
set -euo pipefail
cd "$(dirname "$0")/.."
WHAT=${1:-all}; ROOT=${2:-../shared/data}; OUT=${3:-results}
GG=${GRAPHGT:-.venv/bin/graphgt}; PY=${PYTHON:-.venv/bin/python}
SEEDS10=0,1,2,3,4,5,6,7,8,9; SEEDS5=0,1,2,3,4
sweep() {  # sweep NAME OVERRIDES...
  local name=$1; shift
  OMP_NUM_THREADS=${THREADS:-1} $GG train --multirun "$@" data.root="$ROOT" trainer.progress=false \
    hydra.sweep.dir="$OUT/$name"
  $GG report "$OUT/$name" --json "$OUT/$name.json" --out "$OUT/$name.md"
}
case $WHAT in
  cora|all)
    sweep cora-gcn experiment=cora-gcn seed=$SEEDS10
    sweep cora-gat experiment=cora-gat seed=$SEEDS10 ;;&
  graph-ablation|all)
    for variant in "gps" "no-attention attention=none" "no-pe pe=none"; do
      set -- $variant
      sweep "molbace-$1" experiment=molbace-gps seed=$SEEDS5 "${@:2}"
    done ;;&
  peptides|all)
    sweep peptides-func experiment=peptides-func-gps seed=0 trainer.max_epochs=${PEPTIDES_EPOCHS:-200} ;;&
  bench-pe|all)
    $PY bench/pe_scaling.py --json "$OUT/bench_pe.json" ;;&
  bench-train|all)
    $PY bench/train_throughput.py --json "$OUT/bench_train.json" ;;
  cora|graph-ablation|peptides|bench-pe|bench-train) ;;
  *) echo "unknown target '$WHAT' (cora | graph-ablation | peptides | bench-pe | bench-train | all)" >&2; exit 2 ;;
esac
