#!/usr/bin/env bash
# Remakes the README's thumbnails in docs/ by running the homework commands on
# what the repository has: the photos in images/ and data/sample/, and RANDOM
# weights (the pretrained ones are not in git; every title says so). Then
# shrinks each PNG (over 1000 pixels wide to 800, 128 colours) to keep git small.
#   bash docs/make_thumbnails.sh          (from anywhere; uses .venv/bin/python)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}

$PY validate_alexnet_on_imagenet.py --weights none --out docs/classified.png > /dev/null
$PY visualize.py filters --weights none --out docs/conv1_filters.png
$PY visualize.py features --weights none --image images/tiger.jpg \
    --out docs/conv1_features.png --conv2-out docs/conv2_kernels.png
$PY retrieval.py images data/sample --weights none --top-k 4 --max-queries 3 --out docs/retrieval.png > /dev/null
$PY evaluate.py --images images --labels docs/images_labels.txt --weights none --no-progress \
    > docs/evaluate_random_weights.txt

# Curves: two real fine-tuning runs on the 5 sample photos, both from random
# weights (the pretrained ones are not here), at two learning rates.
RUNS=$(mktemp -d)
trap 'rm -rf "$RUNS"' EXIT
for LR in 0.001 0.0001; do
    $PY finetune.py --data data/sample --weights none --train-layers fc6,fc7,fc8 \
        --val-fraction 0.4 --epochs 4 --batch-size 3 --learning-rate $LR --keep-checkpoints 1 \
        --run "$RUNS/random-weights-lr$LR" --no-progress > /dev/null
done
$PY visualize.py curves --run "$RUNS/random-weights-lr0.001" "$RUNS/random-weights-lr0.0001" \
    --title 'RANDOM WEIGHTS (--weights none), 5 sample photos: two learning rates' \
    --out docs/curves.png

$PY - docs/*.png <<'SHRINK'
import os, sys
from PIL import Image
for path in sys.argv[1:]:
    with Image.open(path) as image:
        image = image.convert('RGB')
        if image.width > 1000:
            image = image.resize((800, round(image.height * 800 / image.width)), Image.LANCZOS)
        image.quantize(128).save(path, optimize=True)
    print('%s: %d KB' % (path, os.path.getsize(path) // 1024))
SHRINK
