#!/usr/bin/env bash
# Remakes docs/tensorboard_graph.png, the README's picture of TensorBoard's Graphs
# tab: a one-epoch run of the demo's fine-tuning (data/sample, RANDOM weights, as
# `make demo` without weights/bvlc_alexnet.npy), served by the TensorBoard beside
# the Python, photographed by a headless Chromium (Debian: apt-get install chromium).
#   bash docs/make_tensorboard_screenshot.sh          (from anywhere; uses .venv/bin/python)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
TENSORBOARD=$(dirname "$PY")/tensorboard
CHROMIUM=${CHROMIUM:-chromium}
OUT=docs/tensorboard_graph.png

WORK=$(mktemp -d)
SERVER=
cleanup() {
    if [ -n "$SERVER" ]; then kill "$SERVER" 2>/dev/null || true; wait "$SERVER" 2>/dev/null || true; fi
    rm -rf "$WORK"
}
trap cleanup EXIT

# The graph is the same for one epoch as for four.
$PY finetune.py --data data/sample --val-fraction 0.4 --epochs 1 --batch-size 4 \
    --learning-rate 0.001 --weights none --keep-checkpoints 1 --run "$WORK/logs/demo" \
    --no-progress > /dev/null

# Port 0: a free port; TensorBoard prints its URL.
"$TENSORBOARD" --logdir "$WORK/logs" --host 127.0.0.1 --port 0 > "$WORK/tensorboard.log" 2>&1 &
SERVER=$!
URL=
for _ in $(seq 180); do
    URL=$(grep -o 'http://127.0.0.1:[0-9]*' "$WORK/tensorboard.log" | head -n 1 || true)
    [ -n "$URL" ] && break
    sleep 1
done
[ -n "$URL" ] || { cat "$WORK/tensorboard.log"; echo "error: tensorboard did not start" >&2; exit 1; }
# Until the graphs plugin has read the run's graph.
for _ in $(seq 60); do
    $PY -c 'import sys, urllib.request; sys.exit("demo/train" not in urllib.request.urlopen(
        sys.argv[1] + "/data/plugin/graphs/info").read().decode())' "$URL" 2>/dev/null && break
    sleep 1
done

# The graph is drawn by JavaScript: give it 20 s of the page's (virtual) time, and
# try again if the main graph's area came out empty. demo/train is the only run
# with a graph, so the Graphs tab opens on it.
for attempt in 1 2 3; do
    rm -rf "$WORK/chromium"
    "$CHROMIUM" --headless --no-sandbox --disable-gpu --disable-background-networking \
        --disable-component-update --disable-sync --no-first-run \
        --user-data-dir="$WORK/chromium" --window-size=1400,1400 --virtual-time-budget=20000 \
        --screenshot="$WORK/shot.png" "$URL/#graphs&run=demo%2Ftrain" > /dev/null 2>&1 || true
    $PY - "$WORK/shot.png" "$OUT" <<'CHECK' && break
import sys
import numpy as np
from PIL import Image
with Image.open(sys.argv[1]) as image:
    image = image.convert('RGB')
# The main graph's area (right of the side bar, below the tabs) must hold drawn nodes.
drawn = (np.asarray(image)[150:, 400:] < 200).any(axis=2).mean()
if drawn < 0.01:
    sys.exit('attempt: the graph area is empty (%.4f drawn)' % drawn)
image.quantize(128).save(sys.argv[2], optimize=True)
print('%s: %dx%d' % (sys.argv[2], image.width, image.height))
CHECK
    [ "$attempt" = 3 ] && { echo "error: no graph in 3 screenshots" >&2; exit 1; }
done
echo "$OUT: $(( $(stat -c %s "$OUT") / 1024 )) KB"
