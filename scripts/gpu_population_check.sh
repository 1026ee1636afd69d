#!/bin/bash
# Every GPU measurement of populations and graphed steps in one call, each next to its reference from
# the same process or the same call; JSON lines and logs under OUT.
#
#   scripts/gpu_population_check.sh                    # on a CUDA machine
#   DEVICE=cpu STEPS=4 N=2 scripts/gpu_population_check.sh   # a dry run of the same commands on a CPU
#
# 1. the plain-PyTorch SNGAN anchor (../shared/anchors/sngan_anchor.py, when present): tf32 eager and graph;
# 2. SNGAN (standard CNN, spectral norm in D) on 32x32 Fashion-MNIST-shaped random data (bench draws it): a population of
#    N replicas (grouped convolutions) against one fit, eager and graphed, `ganbench bench --population N`;
# 3. `ganbench bench --modes eager,graph` on configs/sngan.yaml and configs/wgan_gp.yaml (graphed step
#    against the plain loop doing the same work, penalty included), run to the end.
#
# Environment: DEVICE (default cuda), STEPS (timed G iterations, default 200), N (default 8), OUT
# (default runs/gpu_population_check-<time>), PYTHON (default .venv/bin/python when present).
set -uo pipefail
cd "$(dirname "$0")/.."

PY=${PYTHON:-$([[ -x .venv/bin/python ]] && echo .venv/bin/python || echo python3)}
DEVICE=${DEVICE:-cuda}
STEPS=${STEPS:-200}
N=${N:-8}
OUT=${OUT:-runs/gpu_population_check-$(date +%Y%m%d-%H%M%S)}
mkdir -p "$OUT"
export WANDB_MODE=${WANDB_MODE:-offline}
GRAPH=$([[ "$DEVICE" == cuda ]] && echo eager,graph || echo eager)
WARM=$(( STEPS / 10 > 2 ? STEPS / 10 : 2 ))
IMAGES=(--data.dataset fashion_mnist --data.resolution 32)
GANBENCH=("$PY" -c "import sys; from ganbench.cli import main; sys.exit(main(sys.argv[1:]))")
status=0

run() {  # name, command...: stdout+stderr to OUT/name.log, a line on the terminal
    local name=$1; shift
    echo "== $name: $*"
    local t0=$SECONDS
    if "$@" > "$OUT/$name.log" 2>&1; then
        echo "   done in $(( SECONDS - t0 )) s"
    else
        echo "   FAILED (exit $?) after $(( SECONDS - t0 )) s; last lines:"; tail -5 "$OUT/$name.log"; status=1
    fi
    grep -h '^{' "$OUT/$name.log" >> "$OUT/results.jsonl" || true
}

"$PY" -c 'import torch; print("torch", torch.__version__, "|", torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu")' \
    | tee "$OUT/machine.txt"
ANCHOR=../shared/anchors/sngan_anchor.py
if [[ "$DEVICE" == cuda && -f "$ANCHOR" ]]; then
    run anchor "$PY" "$ANCHOR" --modes tf32,tf32_graph --steps "$STEPS"
fi
run population_sngan "${GANBENCH[@]}" bench --config configs/sngan.yaml --device "$DEVICE" --steps "$STEPS" \
    --warmup "$WARM" --population "$N" --modes "$GRAPH" -- "${IMAGES[@]}"
for config in sngan wgan_gp; do
    run "graph_$config" "${GANBENCH[@]}" bench --config "configs/$config.yaml" --device "$DEVICE" --steps "$STEPS" \
        --warmup "$WARM" --modes "$GRAPH" -- "${IMAGES[@]}"
done
echo "results: $OUT/results.jsonl"
exit $status
