#!/usr/bin/env bash
# docs/figures/tensorboard.png: TensorBoard's images tab on a short demo run, shot by headless chromium.
#
#   benchmarks/tensorboard_screenshot.sh                      # 200 iterations, a validation every 100
#   STEPS=400 VAL=200 benchmarks/tensorboard_screenshot.sh    # the whole demo recipe
#   benchmarks/tensorboard_screenshot.sh --model.init_args.lr=2e-4   # extra options go to `madm-pl fit`
#   LOGDIR=runs/demo/rgb2infrared/version_0 benchmarks/tensorboard_screenshot.sh   # an existing run, no fit
#   TAB=timeseries OUT=/tmp/ts.png LOGDIR=... benchmarks/tensorboard_screenshot.sh   # another tab
#   (images, timeseries, custom_scalars, hparams)
#
# Needs chromium (Debian: apt-get install -y chromium; or CHROMIUM=<browser>) and the synthetic world
# (make data). The run goes to a temporary folder, removed at the end with the TensorBoard it started.
# Everything runs at the lowest CPU priority with one intra-op thread (the demo's setting).
set -euo pipefail
cd "$(dirname "$0")/.."

TASK=${TASK:-rgb2infrared}
STEPS=${STEPS:-200}
VAL=${VAL:-100}
OUT=${OUT:-docs/figures/tensorboard.png}
TAB=${TAB:-images}
PORT=${PORT:-6123}
WINDOW=${WINDOW:-1600,1160}
PYTHON=${PYTHON:-.venv/bin/python}
CHROMIUM=${CHROMIUM:-chromium}

command -v "$CHROMIUM" >/dev/null || { echo "no '$CHROMIUM': apt-get install -y chromium, or set CHROMIUM=<browser>"; exit 2; }
test -x "$PYTHON" || { echo "no '$PYTHON': run make setup, or set PYTHON=<python with madm-pl's dependencies>"; exit 2; }
RUN=$(mktemp -d)
PROFILE=$(mktemp -d)
TENSORBOARD=""
cleanup() {
    if [ -n "$TENSORBOARD" ]; then kill "$TENSORBOARD" 2>/dev/null || true; fi
    rm -rf "$RUN" "$PROFILE"
}
trap cleanup EXIT

if [ -n "${LOGDIR:-}" ]; then
    test -d "$LOGDIR" || { echo "LOGDIR='$LOGDIR' is not a folder: give a run's folder (runs/demo/<task>/version_<n>)"; exit 2; }
else
    LOGDIR="$RUN/logs"
    # The checkout's own package (PYTHONPATH=src), whatever is installed in the environment.
    PYTHONPATH=src nice -n 19 env OMP_NUM_THREADS=1 "$PYTHON" -m madm_pl fit -c "configs/demo/$TASK.yaml" \
        --trainer.max_steps="$STEPS" --trainer.val_check_interval="$VAL" --image_logger.every_n_steps="$VAL" \
        --trainer.enable_progress_bar=false --trainer.default_root_dir="$RUN" \
        --trainer.logger.init_args.save_dir="$LOGDIR" --checkpoint.dirpath="$RUN/checkpoints" "$@"
fi

nice -n 19 "$PYTHON" -m tensorboard.main --logdir "$LOGDIR" --host localhost --port "$PORT" \
    >"$RUN/tensorboard.log" 2>&1 &
TENSORBOARD=$!
"$PYTHON" - "$PORT" <<'EOF'
import sys, time, urllib.request
for _ in range(120):
    try:
        urllib.request.urlopen(f"http://localhost:{sys.argv[1]}/data/logdir", timeout=2)
        sys.exit(0)
    except OSError:
        time.sleep(1)
sys.exit("TensorBoard did not answer within 2 minutes")
EOF

# The images tab needs JavaScript: virtual time lets the page load its images before the shot.
mkdir -p "$(dirname "$OUT")"
nice -n 19 "$CHROMIUM" --headless --no-sandbox --disable-gpu --disable-background-networking \
    --disable-component-update --disable-sync --no-first-run --user-data-dir="$PROFILE" \
    --hide-scrollbars --virtual-time-budget=30000 --window-size="$WINDOW" --screenshot="$OUT" \
    "http://localhost:$PORT/#$TAB" 2>/dev/null
test -s "$OUT" || { echo "no screenshot written to $OUT"; exit 1; }
echo "wrote $OUT from $LOGDIR"
