#!/bin/bash
# SNGAN on GPUs, once as a plain single-device run and once through configs/trainer/ddp.yaml on every
# visible GPU; prints G-iterations/s, real samples/s and each run's summary.json.
#
#   scripts/gpu_ddp_check.sh                       # 300 G iterations, all visible GPUs
#   STEPS=500 DEVICES=2 scripts/gpu_ddp_check.sh --data.batch_size 128
#
# Environment: STEPS (G iterations, default 300), DEVICES (default: all visible GPUs), CONFIG
# (default configs/sngan.yaml), OUT (default runs/gpu_ddp_check-<time>), SYNC_BN=1 (SyncBatchNorm in
# the DDP run), PYTHON (default .venv/bin/python when present). Extra arguments go to both fits.
#
# With DEVICES=1 the DDP run differs from the plain run only by the DDP machinery, so the ratio of
# their G-it/s is the cost of the mechanism (find_unused_parameters: a graph walk and an all-reduce
# of every bucket per backward; docs/ddp.md). With DEVICES>1 the DDP run trains on DEVICES times
# the batch per G iteration: compare samples/s. wall_s (from on_fit_start to the end) includes the
# first, slower iterations.
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${PYTHON:-$([[ -x .venv/bin/python ]] && echo .venv/bin/python || echo python3)}
STEPS=${STEPS:-300}
CONFIG=${CONFIG:-configs/sngan.yaml}
OUT=${OUT:-runs/gpu_ddp_check-$(date +%Y%m%d-%H%M%S)}
DEVICES=${DEVICES:-$("$PY" -c 'import torch; print(torch.cuda.device_count())')}
if [[ "$DEVICES" -lt 1 ]]; then
    echo "gpu_ddp_check: no CUDA device visible" >&2
    exit 1
fi
export WANDB_MODE=${WANDB_MODE:-offline}
"$PY" -c 'import torch; print("torch", torch.__version__, "|", torch.cuda.get_device_name(0), "x", torch.cuda.device_count())'

fit() {  # fit NAME ARGS...
    local name=$1
    shift
    echo "== $name: $*"
    "$PY" -m ganbench.cli fit --config "$CONFIG" "$@" --trainer.accelerator gpu \
        --trainer.max_steps "$STEPS" --trainer.default_root_dir "$OUT/$name" \
        --run.sample_every "$STEPS" --run.checkpoint_every "$STEPS" \
        --trainer.enable_progress_bar false --trainer.enable_model_summary false "${EXTRA[@]}"
}

EXTRA=("$@")
fit single --trainer.devices 1
DDP_ARGS=(--config configs/trainer/ddp.yaml --trainer.devices "$DEVICES")
[[ "${SYNC_BN:-0}" == 1 ]] && DDP_ARGS+=(--trainer.sync_batchnorm true)
fit "ddp-x$DEVICES" "${DDP_ARGS[@]}"

"$PY" - "$OUT" single "ddp-x$DEVICES" <<'EOF'
import json
import sys
from pathlib import Path

import yaml

out = Path(sys.argv[1])
print(f"\n{'run':<10} {'world':>5} {'G-it':>6} {'wall_s':>8} {'G-it/s':>8} {'real samples/s':>15}  status")
for name in sys.argv[2:]:
    summary = json.loads((out / name / "summary.json").read_text())
    cfg = yaml.safe_load((out / name / "config.yaml").read_text())
    world = int(cfg["trainer"]["devices"]) * int(cfg["trainer"].get("num_nodes") or 1)
    n_critic = summary["protocol"]["n_critic"]
    rate = summary["g_steps"] / summary["wall_s"]
    samples = rate * n_critic * cfg["data"]["batch_size"] * world
    print(f"{name:<10} {world:>5} {summary['g_steps']:>6} {summary['wall_s']:>8.1f} {rate:>8.2f} {samples:>15.0f}  "
          f"{summary['status']}")
for name in sys.argv[2:]:
    print(f"\n--- {out / name / 'summary.json'}")
    print((out / name / "summary.json").read_text().strip())
EOF
