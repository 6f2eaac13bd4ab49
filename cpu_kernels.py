"""TensorFlow's CPU kernels: oneDNN's, chosen before TensorFlow loads.

Every script imports this module before TensorFlow. TensorFlow 2.x ships two
sets of CPU kernels for convolutions and matrix products: Eigen's and oneDNN's
(Intel's deep-learning library). It turns oneDNN on by itself only on CPUs with
AVX-512 VNNI or newer; on the AVX2 CPUs of most laptops it uses Eigen, whose
product with a transposed matrix (the gradient of every fully connected layer,
dy @ W^T) is slow. Measured on two AVX2 cores (commands in the README):

    [128, 4096] x [4096, 4096]^T product       23 -> 123 GFLOP/s
    training step of fc6-fc8, batch 128        0.82 -> 0.39 s
    conv1..pool5 forward, batch 128            80 -> 104 images/s

So this sets TF_ENABLE_ONEDNN_OPTS=1, TensorFlow's own switch, unless it is
already set: TF_ENABLE_ONEDNN_OPTS=0 python finetune.py ... keeps Eigen.
oneDNN sums in another order than Eigen: results differ in float32's last
digits (TensorFlow logs a line saying so). TensorFlow reads the variable once,
when it loads, so this must come first. TensorFlow 1.15 has no oneDNN kernels
in its standard package and ignores it; GPUs do not use them.
"""
from __future__ import annotations

import os

ONEDNN = 'TF_ENABLE_ONEDNN_OPTS'

os.environ.setdefault(ONEDNN, '1')
