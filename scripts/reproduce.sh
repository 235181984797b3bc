#!/usr/bin/env bash
# Re-run the experiments behind the figures in docs/reproducing.md and docs/benchmarks.md.
#   bash scripts/reproduce.sh <what> [DATA_ROOT] [OUT]
# <what>: cora | graph-ablation | peptides | bench-pe | bench-train | bench-sampler | bench-pe-large |
#         products-train | bench-attention | attention-cora | attention-products | bench-papers | all
# The large-graph targets write their stores under BENCH_DATA (default /tmp/graphgt-bench, outside the
# repository; ~2 GB for products, ~45 GB for papers100M at full size: check df -h first).
# DATA_ROOT holds the datasets laid out as in data/README.md (default ../shared/data);
# OUT receives every run directory and the aggregated tables (default results/).
set -euo pipefail
cd "$(dirname "$0")/.."
WHAT=${1:-all}; ROOT=${2:-../shared/data}; OUT=${3:-results}
GG=${GRAPHGT:-.venv/bin/graphgt}; PY=${PYTHON:-.venv/bin/python}
SEEDS10=0,1,2,3,4,5,6,7,8,9; SEEDS5=0,1,2,3,4
BENCH_DATA=${BENCH_DATA:-/tmp/graphgt-bench}; PRODUCTS=$BENCH_DATA/products-shaped-seed0-scale1.0
PYG_PYTHON=${PYG_PYTHON:-$PY}  # PYG_PYTHON: an env with torch-sparse
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
    $PY bench/train_throughput.py --json "$OUT/bench_train.json" ;;&
  bench-attention|all)
    $PY bench/attention_scaling.py --json "$OUT/bench_attention.json" --plot "$OUT/attention_scaling.png" ;;&
  attention-cora|all)
    GRAPHGT_DATA_ROOT="$ROOT" $PY scripts/attention_study.py cora --out "$OUT/attention-cora" ;;&
  bench-sampler|bench-pe-large|products-train|attention-products|all)
    [ -f "$PRODUCTS/meta.json" ] || \
      $PY scripts/build_synthetic.py products --out "$PRODUCTS" --json "$OUT/build_products.json" ;;&
  bench-sampler|all)
    $PYG_PYTHON bench/sampler.py --json "$OUT/bench_sampler_100k.json"
    $PYG_PYTHON bench/sampler.py --store "$PRODUCTS" --json "$OUT/bench_sampler_products.json" ;;&
  bench-pe-large|all)
    $PY bench/pe_large.py --store "$PRODUCTS" --json "$OUT/bench_pe_products.json" ;;&
  products-train|all)
    for model in sage gps; do
      OMP_NUM_THREADS=${THREADS:-2} $GG train experiment=products-synth-$model data.store_root="$BENCH_DATA" \
        trainer.max_epochs=${PRODUCTS_EPOCHS:-2} trainer.limit_train_batches=${PRODUCTS_BATCHES:-40} trainer.evaluate_test=false \
        trainer.progress=false hydra.run.dir="$OUT/products-synth-$model"
    done ;;&
  attention-products|all)
    $PY scripts/attention_study.py products-synth --out "$OUT/attention-products" --store-root "$BENCH_DATA" \
      --parallel 1 --epochs 1 --train-batches 30 --largegt-extra data.eval_batch_size=1024 \
      --gps-extra data.batch_size=512 "data.sampler.fanouts=[10,5]" data.eval_batch_size=2048 ;;&
  bench-papers|all)
    $PY bench/papers100m.py --root "$BENCH_DATA" --fraction ${PAPERS_FRACTION:-1.0} --batches 8 --train-only \
      --json "$OUT/bench_papers100m.json" ;;
  cora|graph-ablation|peptides|bench-pe|bench-train|bench-sampler|bench-pe-large|products-train|bench-attention|attention-cora|attention-products|bench-papers) ;;
  *) echo "unknown target '$WHAT' (see the header of this script)" >&2; exit 2 ;;
esac
