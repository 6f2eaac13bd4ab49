# The course's GPU image: TensorFlow, JupyterLab and TensorBoard, code in /app.
#
# Default base: NVIDIA's TensorFlow 1 container. 23.03-tf1-py3 is the last one
# NVIDIA published (TensorFlow 1.15.5, Python 3.8, CUDA 12.1, Ubuntu 20.04); it
# runs on Ampere and newer GPUs, where the official
# tensorflow/tensorflow:1.15.5-gpu-py3 (CUDA 10) does not.
#   docker build -t alexnet .
# TensorFlow 2.x instead (the code runs there through tf.compat.v1):
#   docker build --build-arg BASE_IMAGE=tensorflow/tensorflow:2.21.0-gpu -t alexnet-tf2 .
# Then, from the repository folder:
#   docker run --gpus all -it --rm -v "$PWD":/app -p 6006:6006 -p 8888:8888 alexnet
ARG BASE_IMAGE=nvcr.io/nvidia/tensorflow:23.03-tf1-py3
FROM ${BASE_IMAGE}

SHELL ["/bin/bash", "-o", "pipefail", "-c"]

# PIP_BREAK_SYSTEM_PACKAGES: bases on newer Debian/Ubuntu mark the system Python
# as externally managed; this image is that Python's only user.
ENV PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_BREAK_SYSTEM_PACKAGES=1

# The system libraries OpenCV's wheels load (libGL, GLib), so that
# `pip install opencv-python` works as the course's older notebooks expect;
# and a font with Chinese glyphs, so that figures drawn with --lang zh show the
# Chinese class names (figures.cjk_font finds it).
# Versions are left to each base's Ubuntu release, which differs between them.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends libgl1 libglib2.0-0 fonts-noto-cjk \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /app

# Everything but TensorFlow: the base's TensorFlow, and the numpy, protobuf and
# TensorBoard it was built with, stay as they are. A constraints file made from
# what the base has installed stops pip from upgrading them.
COPY requirements-docker.txt /tmp/requirements-docker.txt
RUN { python3 -m pip list --format=freeze \
        | grep -iE '^(tensorflow|tensorflow-gpu|nvidia-tensorflow|tensorboard|keras|tf-keras|numpy|protobuf|h5py)==' \
        || true; } > /tmp/base-constraints.txt \
    && python3 -m pip install --no-cache-dir -c /tmp/base-constraints.txt \
        -r /tmp/requirements-docker.txt \
    && python3 -c 'import tensorflow; print("TensorFlow", tensorflow.__version__)'

COPY . /app

# TensorBoard, JupyterLab
EXPOSE 6006 8888

# A shell: run python finetune.py, tensorboard --logdir logs --bind_all, or
# jupyter lab --ip 0.0.0.0 --allow-root from it.
CMD ["bash"]
