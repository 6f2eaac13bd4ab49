"""How fast AlexNet runs on this machine, and how far from its peak: one command, one table.

Measures, each part in a fresh Python process (so its peak resident memory is its own):

* compute: the peak GFLOP/s of a large float32 matrix product (best of a few), then
  AlexNet's forward images/s at batch 1, 32, 128 and the GFLOP/s that makes, as a
  share of that peak, in the same process. Forward FLOPs per image come from the
  layer table (alexnet.layer_table): 2 x its connections (a connection is one
  multiply-add, the bias counted as one, as in the paper's count) = 1.45 GFLOP;
  ReLU, LRN, pooling and dropout are not counted. Then where the time of the
  largest batch goes, layer by layer, from one run traced by TensorFlow
  (RunMetadata step stats): each weighted layer's GFLOP/s, and how much the
  layers without counted FLOPs (LRN, pooling) take. Then the model's LRN (alexnet.lrn)
  against TensorFlow's own op (tf.nn.local_response_normalization, which it replaces) on
  norm1's and norm2's inputs at that batch, runs alternating in one process; with
  --compare-lrn also the whole forward pass and its layers both ways.
* training: images/s of one fine-tuning step (momentum SGD, finetune.loss_fn and
  finetune.training) training fc6-fc8 and fc7-fc8, naive (the whole network
  forward, the trained layers backward) and on cached features (the head only,
  feature_cache.py), and their ratio. Inputs sit in memory, so this is compute.
* pipeline: images/s of datagenerator.make_dataset alone (PIL decode, resize to
  256, random crop, mirror, PCA noise) on generated ~500x375 JPEGs, and its ratio
  to what naive training consumes; the same read from the decoded cache
  (finetune.py --cache-decoded); and the peak RSS of one training epoch of the
  pipeline over 2,000 and over 20,000 photos, which must differ by little.
* epochs (only with --epoch-images N): real finetune.py runs, naive and
  --cache-features, training fc6-fc8 and fc7-fc8 on N generated photos: seconds per
  epoch (training + validation, from metrics.csv), cache build time, validation
  accuracy.

    python bench.py                       # about 100 s on 2 cores
    python bench.py --epoch-images 300    # adds the epoch-time comparison
    python bench.py --compare-lrn         # + the forward pass with TF's LRN op, about 30 s more
    python bench.py --quick               # small settings (the test)

Writes the numbers to bench.json (--out). Weights are random (speed does not
depend on their values); the epoch runs use weights/bvlc_alexnet.npz when it
exists, else random He-scaled stand-ins, so their accuracy only compares naive
with cached.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time

import numpy as np

import cpu_kernels  # first: it chooses TensorFlow's CPU kernels
import command_line

HERE = os.path.dirname(os.path.abspath(__file__))
HEAD_CONFIGS = (('fc6-fc8', ('fc6', 'fc7', 'fc8')), ('fc7-fc8', ('fc7', 'fc8')))
# oneDNN's own switch: ONEDNN_MAX_CPU_ISA=AVX2 runs its AVX2 code on an AVX-512 CPU.
ONEDNN_ISA = 'ONEDNN_MAX_CPU_ISA'


def cpu_vector_extensions(cpuinfo='/proc/cpuinfo'):
    """'AVX-512', 'AVX2', 'AVX' or None: the widest vector instructions the CPU has, by
    which oneDNN picks its code (Linux's list; None elsewhere or when unreadable)."""
    try:
        with open(cpuinfo, encoding='ascii', errors='replace') as f:
            flags = next((set(line.split(':', 1)[-1].split()) for line in f
                          if line.startswith('flags')), set())
    except OSError:
        return None
    return next((name for flag, name in (('avx512f', 'AVX-512'), ('avx2', 'AVX2'), ('avx', 'AVX'))
                 if flag in flags), None)


def peak_rss_mb():
    # ru_maxrss is in kilobytes on Linux (bytes on macOS).
    scale = 1.0 if sys.platform == 'darwin' else 1024.0
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale / 2 ** 20


def _tf():
    import tensorflow.compat.v1 as tf
    tf.disable_v2_behavior()
    tf.logging.set_verbosity(tf.logging.ERROR)
    return tf


def _best_seconds(session, op, repeats):
    """The fastest of `repeats` runs of op, after one warm-up run."""
    session.run(op)
    best = float('inf')
    for _ in range(repeats):
        start = time.perf_counter()
        session.run(op)
        best = min(best, time.perf_counter() - start)
    return best


def _alternating_best(runs, repeats):
    """{key: fastest of `repeats` runs} for runs {key: (session, op)}, after one warm-up
    run each; the keys take turns, so a busy moment of a shared machine hits them alike."""
    for session, op in runs.values():
        session.run(op)
    best = {key: float('inf') for key in runs}
    for _ in range(repeats):
        for key, (session, op) in runs.items():
            start = time.perf_counter()
            session.run(op)
            best[key] = min(best[key], time.perf_counter() - start)
    return best


def reference_lrn(x, depth_radius, alpha, beta, bias, name=None):
    """TensorFlow's own LRN op, called as alexnet.lrn is: what alexnet.lrn replaces."""
    tf = _tf()
    return tf.nn.local_response_normalization(
        x, depth_radius=depth_radius, bias=bias, alpha=alpha, beta=beta, name=name)


# --- The parts ---------------------------------------------------------------

def bench_matmul(matmul_size, repeats):
    """GFLOP/s of a [n, n] x [n, n] float32 product (2 n^3 FLOPs), best of repeats."""
    tf = _tf()
    with tf.Graph().as_default():
        a = tf.Variable(tf.random.normal([matmul_size, matmul_size]))
        b = tf.Variable(tf.random.normal([matmul_size, matmul_size]))
        product = tf.matmul(a, b)
        with tf.Session() as session:
            session.run(tf.global_variables_initializer())
            # .op: run the product without copying the result out to Python.
            seconds = _best_seconds(session, product.op, repeats)
    return 2.0 * matmul_size ** 3 / seconds / 1e9


def bench_compute(matmul_size, batch_sizes, repeats, compare_lrn=False):
    """Matrix-product peak, then AlexNet forward speed as a share of it; the model's LRN
    against TF's op (and with compare_lrn the forward pass both ways)."""
    tf = _tf()
    import alexnet
    # The peak is measured before and after the forward runs and the better one kept:
    # on a machine shared with other jobs one of the two may be slowed down.
    before = bench_matmul(matmul_size, repeats)
    result = {'matmul_size': matmul_size, 'forward': []}
    for batch in batch_sizes:
        with tf.Graph().as_default():
            # A batch held in a variable: no feeding, no input pipeline.
            x = tf.Variable(tf.random.uniform([batch, 227, 227, 3], -120.0, 120.0))
            model = alexnet.AlexNet(x)
            flops = 2.0 * sum(row['connections'] for row in alexnet.layer_table(model)
                              if row['connections'])
            with tf.Session() as session:
                session.run(tf.global_variables_initializer())
                runs = repeats if batch > 1 else 10 * repeats
                seconds = _best_seconds(session, model.fc8.op, runs)
                if batch == max(batch_sizes):
                    result['layers'] = layer_times(session, model, batch)
        gflops = flops * batch / seconds / 1e9
        result['forward'].append({'batch': batch, 'images_per_second': batch / seconds,
                                  'gflop_per_image': flops / 1e9, 'gflops': gflops})
    result['lrn'] = bench_lrn(max(batch_sizes), repeats)
    if compare_lrn:
        result['lrn_forward'] = compare_lrn_forward(max(batch_sizes), repeats)
    after = bench_matmul(matmul_size, repeats)
    peak = max(before, after)
    result.update(matmul_gflops=peak, matmul_gflops_before=before, matmul_gflops_after=after)
    for row in result['forward']:
        row['share_of_peak'] = row['gflops'] / peak
    for row in result['layers']:
        row['share_of_peak'] = row['gflops'] / peak if row['gflops'] else None
    for row in result.get('lrn_forward', {}).values():
        row['share_of_peak'] = row['gflops'] / peak
    return result


def bench_lrn(batch, repeats):
    """Seconds of alexnet.lrn and of TF's LRN op on each LRN layer's input [batch, H, W, C]."""
    tf = _tf()
    import alexnet
    with tf.Graph().as_default():
        model = alexnet.AlexNet(tf.placeholder(tf.float32, [None, 227, 227, 3]))
        shapes = [(layer.name, layer.input.shape.as_list()[1:])
                  for layer in model.layers if layer.kind == 'lrn']
    rows = []
    for name, shape in shapes:
        with tf.Graph().as_default():
            # About the size of conv1's ReLU outputs; the speed does not depend on the values.
            x = tf.Variable(tf.nn.relu(tf.random.normal([batch] + shape, stddev=100.0)))
            runs = {'alexnet_lrn': alexnet.lrn(x).op, 'tf_op': reference_lrn(
                x, alexnet.LRN_DEPTH_RADIUS, alexnet.LRN_ALPHA, alexnet.LRN_BETA,
                alexnet.LRN_BIAS).op}
            with tf.Session() as session:
                session.run(tf.global_variables_initializer())
                best = _alternating_best({key: (session, op) for key, op in runs.items()},
                                         repeats)
        rows.append({'layer': name, 'input': [batch] + shape, 'seconds': best['alexnet_lrn'],
                     'tf_op_seconds': best['tf_op'],
                     'speedup': best['tf_op'] / best['alexnet_lrn']})
    return rows


def compare_lrn_forward(batch, repeats):
    """The forward pass at `batch` as built (alexnet.lrn) and with TF's LRN op in its place,
    runs alternating; each one's images/s and traced layers."""
    tf = _tf()
    import alexnet
    from unittest import mock
    graphs = {}
    for key in ('alexnet_lrn', 'tf_op'):
        graph = tf.Graph()
        with graph.as_default():
            x = tf.Variable(tf.random.uniform([batch, 227, 227, 3], -120.0, 120.0))
            if key == 'tf_op':
                # AlexNet._lrn calls the module's lrn(): the same graph with TF's op there.
                with mock.patch.object(alexnet, 'lrn', reference_lrn):
                    model = alexnet.AlexNet(x)
            else:
                model = alexnet.AlexNet(x)
            flops = 2.0 * sum(row['connections'] for row in alexnet.layer_table(model)
                              if row['connections'])
            session = tf.Session(graph=graph)
            session.run(tf.global_variables_initializer())
        graphs[key] = (session, model)
    try:
        best = _alternating_best({key: (session, model.fc8.op)
                                  for key, (session, model) in graphs.items()}, repeats)
        result = {}
        for key, (session, model) in graphs.items():
            with session.graph.as_default():
                layers = layer_times(session, model, batch)
            result[key] = {'batch': batch, 'images_per_second': batch / best[key],
                           'gflops': flops * batch / best[key] / 1e9, 'layers': layers}
    finally:
        for session, _ in graphs.values():
            session.close()
    return result


def layer_times(session, model, batch):
    """Seconds each layer takes in one traced forward run, from TensorFlow's step stats.

    The layers run one after the other, so a layer's time is from the moment the
    previous layer's output is ready to the moment its own is: the run's critical
    path, split by layer (reading the weights happens beside it and is left out).
    """
    tf = _tf()
    import alexnet
    options = tf.RunOptions(trace_level=tf.RunOptions.FULL_TRACE)
    metadata = tf.RunMetadata()
    session.run(model.fc8.op, options=options, run_metadata=metadata)
    ends, first_start = {}, None
    for device in metadata.step_stats.dev_stats:
        for node in device.node_stats:
            ends[node.node_name] = node.all_start_micros + node.op_end_rel_micros
            if first_start is None or node.all_start_micros < first_start:
                first_start = node.all_start_micros
    rows, ready = [], first_start
    for layer, row in zip(model.layers, alexnet.layer_table(model)):
        done = ends[layer.output.op.name]
        seconds = (done - ready) / 1e6
        ready = done
        work = 2.0 * row['connections'] * batch if row['connections'] else 0.0
        rows.append({'layer': row['layer'], 'type': row['type'], 'seconds': seconds,
                     'gflops': work / seconds / 1e9 if work and seconds > 0 else None})
    return rows


def bench_training(batch, steps):
    """Fine-tuning step speed, naive vs on cached features, for fc6-fc8 and fc7-fc8."""
    tf = _tf()
    import alexnet
    import finetune
    result = {'batch': batch}
    for name, train_layers in HEAD_CONFIGS:
        speeds = {}
        for cached in (False, True):
            with tf.Graph().as_default():
                labels = tf.Variable(tf.zeros([batch], tf.int32), trainable=False)
                keep_prob = tf.constant(0.5)
                if cached:
                    # The model is only built for its variables; the head runs on features.
                    model = alexnet.AlexNet(tf.placeholder(tf.float32, [None, 227, 227, 3]),
                                            keep_prob, num_classes=2)
                    first = train_layers[0]
                    size = model.head_input(first).shape.as_list()[-1]
                    features = tf.Variable(tf.random.uniform([batch, size]), trainable=False)
                    logits = model.head(features, first)
                else:
                    images = tf.Variable(tf.random.uniform([batch, 227, 227, 3], -120.0, 120.0),
                                         trainable=False)
                    model = alexnet.AlexNet(images, keep_prob, num_classes=2)
                    logits = model.fc8
                trained = model.variables(train_layers)
                _, loss = finetune.loss_fn(logits, labels, 5e-4,
                                           model.variables(train_layers, biases=False))
                train_op, _ = finetune.training(loss, trained, 1e-3, 0.9,
                                                tf.train.get_or_create_global_step())
                with tf.Session() as session:
                    session.run(tf.global_variables_initializer())
                    seconds = _best_seconds(session, train_op, steps)
            speeds['cached' if cached else 'naive'] = batch / seconds
        speeds['ratio'] = speeds['cached'] / speeds['naive']
        result[name] = speeds
    result['all layers'] = {'naive': batch / all_layers_step(batch, steps)}
    return result


def all_layers_step(batch, steps):
    """Seconds of one training step of all eight layers (training from scratch)."""
    tf = _tf()
    import alexnet
    import finetune
    with tf.Graph().as_default():
        labels = tf.Variable(tf.zeros([batch], tf.int32), trainable=False)
        images = tf.Variable(tf.random.uniform([batch, 227, 227, 3], -120.0, 120.0),
                             trainable=False)
        model = alexnet.AlexNet(images, tf.constant(0.5), num_classes=2)
        _, loss = finetune.loss_fn(model.fc8, labels, 5e-4, model.variables(biases=False))
        train_op, _ = finetune.training(loss, model.variables(), 1e-3, 0.9,
                                        tf.train.get_or_create_global_step())
        with tf.Session() as session:
            session.run(tf.global_variables_initializer())
            return _best_seconds(session, train_op, steps)


# --- Generated photos ------------------------------------------------------

def make_benchmark_images(folder, count, size=(500, 375), distinct=20, seed=0, copies=False):
    """Writes `distinct` smooth noisy JPEGs of size (width, height) and links to them up to
    `count` files (cat.<i>.jpg / dog.<i>.jpg); returns find_dataset-style items.

    Cats are tinted red and dogs blue, so that even random frozen features can tell
    them apart and two ways of training can be compared on validation accuracy.
    copies: write each file's bytes instead of a link, for runs of finetune.py, whose
    dataset walk counts one file (one inode) once."""
    if distinct % 2:
        raise ValueError('distinct must be even: image i is source i % distinct, label i % 2')
    os.makedirs(folder, exist_ok=True)
    rng = np.random.RandomState(seed)
    y, x = np.mgrid[0:size[1], 0:size[0]]
    sources = []
    for i in range(distinct):
        source = os.path.join(folder, 'source%d.jpg' % i)
        if not os.path.exists(source):
            pixels = np.stack([np.sin(x / (20.0 + i)) * 80 + 120, np.cos(y / (15.0 + i)) * 80 + 120,
                               (x + y + 10 * i) % 256 * 0.5 + 60], axis=-1)
            pixels[..., 0 if i % 2 == 0 else 2] += 40        # label i % 2: red cats, blue dogs
            pixels += rng.normal(0, 12, pixels.shape)
            from PIL import Image
            Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(source, quality=90)
        sources.append(source)
    items = []
    for i in range(count):
        label = i % 2
        path = os.path.join(folder, '%s.%d.jpg' % (('cat', 'dog')[label], i))
        if not os.path.exists(path):
            try:
                if copies:
                    raise OSError('copies asked for')
                os.symlink(os.path.basename(sources[i % distinct]), path)
            except OSError:
                with open(sources[i % distinct], 'rb') as src, open(path, 'wb') as dst:
                    dst.write(src.read())
        items.append((path, label))
    return items


def pipeline_speed(folder, count, batch_size, training, repeats, decoded_cache=None):
    """Images per second of make_dataset over `count` generated 500x375 JPEGs (best of
    repeats); with decoded_cache, a first pass (not timed) fills the cache."""
    items = make_benchmark_images(folder, count)
    warm_up = 1 if decoded_cache else 0
    rates = []
    tf = _tf()
    import datagenerator
    with tf.Graph().as_default():
        iterator = tf.data.make_initializable_iterator(datagenerator.make_dataset(
            items, batch_size, training, seed=0, decoded_cache=decoded_cache))
        images, _ = iterator.get_next()
        with tf.Session() as session:
            for _ in range(warm_up + repeats):
                session.run(iterator.initializer)
                start, seen = time.time(), 0
                try:
                    while True:
                        seen += len(session.run(images))
                except tf.errors.OutOfRangeError:
                    pass
                rates.append(seen / (time.time() - start))
    return max(rates[warm_up:])


def bench_pipeline_memory(count, batch):
    """One training epoch of make_dataset over `count` generated photos, no model: its
    peak RSS (the caller runs it in a fresh process) must not grow with `count`."""
    tf = _tf()
    import datagenerator
    folder = tempfile.mkdtemp(prefix='bench-memory-')
    try:
        items = make_benchmark_images(folder, count)
        started = time.time()
        with tf.Graph().as_default():
            labels = tf.data.make_one_shot_iterator(
                datagenerator.make_dataset(items, batch, training=True, seed=0)).get_next()[1]
            with tf.Session() as session:
                try:
                    while True:
                        session.run(labels)
                except tf.errors.OutOfRangeError:
                    pass
        seconds = time.time() - started
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    return {'images': count, 'batch': batch, 'seconds': seconds}


def bench_pipeline(count, batch):
    """make_dataset's images/s with training augmentation, on generated 500x375 JPEGs."""
    folder = tempfile.mkdtemp(prefix='bench-images-')
    try:
        speed = pipeline_speed(folder, count, batch, training=True, repeats=2)
        cached = pipeline_speed(folder, count, batch, training=True, repeats=2,
                                decoded_cache=os.path.join(folder, 'decoded'))
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    return {'images': count, 'batch': batch, 'images_per_second': speed,
            'decoded_cache_images_per_second': cached}


def stand_in_weights(path, seed=0):
    """He-scaled random weights with bvlc_alexnet's shapes (2 classes), for the epoch runs."""
    _tf()
    import alexnet
    import weight_files
    rng = np.random.RandomState(seed)
    layers = {}
    for name, (w_shape, b_shape) in alexnet.expected_weight_shapes(2).items():
        fan_in = int(np.prod(w_shape[:-1]))
        # conv1 sees pixels of about +-100, not +-1: scale it down so activations stay O(1).
        std = np.sqrt(2.0 / fan_in) / (100.0 if name == 'conv1' else 1.0)
        layers[name] = ((rng.standard_normal(w_shape) * std).astype(np.float32),
                        np.zeros(b_shape, np.float32))
    weight_files.save_npz(path, layers)


def bench_epoch(data, weights, log_dir, train_layers, cached, epochs, views, batch):
    """One finetune.py run in its own process; seconds per epoch (median), validation
    accuracy and cache build time, read from the run folder's metrics.csv and run.json."""
    import csv
    name = '%s-%s' % ('cached' if cached else 'naive', train_layers[0])
    run = os.path.join(log_dir, name)
    command = [sys.executable, os.path.join(HERE, 'finetune.py'), '--data', data,
               '--weights', weights, '--run', run, '--train-layers', ','.join(train_layers),
               '--epochs', str(epochs), '--batch-size', str(batch), '--learning-rate', '1e-3',
               '--no-progress', '--summary-every', '1000000']
    if cached:
        command += ['--cache-features', '--cache-views', str(views)]
    started = time.time()
    process = subprocess.run(command, cwd=HERE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                             universal_newlines=True)
    total = time.time() - started
    if process.returncode:
        raise RuntimeError('finetune.py failed (%d):\n%s' % (process.returncode,
                                                            process.stdout[-3000:]))
    with open(os.path.join(run, 'metrics.csv'), newline='') as f:
        rows = list(csv.DictReader(f))
    with open(os.path.join(run, 'run.json'), encoding='utf-8') as f:
        cache = json.load(f).get('feature_cache') or {}
    # ru_maxrss of the children: the largest finished child's, finetune.py's here.
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return {'epoch_seconds': float(np.median([float(r['seconds']) for r in rows])),
            'epoch_seconds_sum': float(sum(float(r['seconds']) for r in rows)),
            'finetune_peak_rss_mb': children * (1.0 if sys.platform == 'darwin' else 1024.0)
            / 2 ** 20,
            'first_epoch_seconds': float(rows[0]['seconds']),
            'val_accuracy': float(rows[-1]['val_accuracy']),
            'cache_seconds': cache.get('seconds') if cache.get('built') else None,
            'total_seconds': total}


# --- Running the parts in fresh processes -----------------------------------

def run_part(part, settings):
    """Runs one part in a child Python process; its result and peak RSS."""
    command = [sys.executable, os.path.abspath(__file__), '--part', part,
               '--settings', json.dumps(settings)]
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL='3')
    started = time.time()
    process = subprocess.run(command, cwd=HERE, env=env, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, universal_newlines=True)
    if process.returncode:
        raise RuntimeError('bench part %s failed:\n%s' % (part, process.stderr[-3000:]))
    result = json.loads(process.stdout.strip().splitlines()[-1])
    result['wall_seconds'] = time.time() - started
    return result


def child(part, settings):
    """In the child process: run `part`, print its result as one JSON line."""
    if part == 'compute':
        result = bench_compute(settings['matmul_size'], settings['batch_sizes'],
                               settings['repeats'], settings.get('compare_lrn', False))
    elif part == 'training':
        result = bench_training(settings['train_batch'], settings['repeats'])
    elif part == 'pipeline':
        result = bench_pipeline(settings['pipeline_images'], settings['pipeline_batch'])
    elif part.startswith('memory:'):
        result = bench_pipeline_memory(int(part.split(':')[1]), settings['pipeline_batch'])
    elif part.startswith('epoch:'):
        _, mode, first = part.split(':')
        layers = dict(HEAD_CONFIGS)[first]
        result = bench_epoch(settings['epoch_data'], settings['epoch_weights'],
                             settings['epoch_logs'], layers, mode == 'cached',
                             settings['epochs'], settings['epoch_views'],
                             settings['epoch_batch'])
    else:
        raise ValueError('unknown part %s' % part)
    import tensorflow
    result['tensorflow'] = tensorflow.__version__
    result['peak_rss_mb'] = peak_rss_mb()
    print(json.dumps(result))


def format_measurements(results):
    """The table of the compute, training and pipeline parts."""
    compute, training, pipeline = results['compute'], results['training'], results['pipeline']
    lines = ['matmul %dx%d float32: %.1f GFLOP/s peak (best of %d, before: %.1f, after the '
             'forward runs: %.1f)   [peak RSS %.0f MB]'
             % (compute['matmul_size'], compute['matmul_size'], compute['matmul_gflops'],
                results['settings']['repeats'], compute['matmul_gflops_before'],
                compute['matmul_gflops_after'], compute['peak_rss_mb']),
             '',
             'AlexNet forward (%.2f GFLOP/image = 2 x layer-table connections)'
             % compute['forward'][0]['gflop_per_image'],
             '  batch   images/s   GFLOP/s   share of matmul peak']
    for row in compute['forward']:
        lines.append('  %5d   %8.1f   %7.1f   %5.0f%%' % (row['batch'], row['images_per_second'],
                                                         row['gflops'], 100 * row['share_of_peak']))
    layers = compute['layers']
    total = sum(row['seconds'] for row in layers)
    lines += ['', 'Where batch %d\'s forward goes (one traced run, %.0f ms in all)'
              % (compute['forward'][-1]['batch'], 1000 * total),
              '  layer   type     ms    time   GFLOP/s   share of matmul peak']
    for row in layers:
        lines.append('  %-6s  %-5s  %5.0f  %5.1f%%  %8s   %s' % (
            row['layer'], row['type'], 1000 * row['seconds'], 100 * row['seconds'] / total,
            '-' if row['gflops'] is None else '%.1f' % row['gflops'],
            '-' if row['share_of_peak'] is None else '%.0f%%' % (100 * row['share_of_peak'])))
    uncounted = sum(row['seconds'] for row in layers if row['gflops'] is None)
    lines.append('  layers without counted FLOPs (LRN, pooling, dropout): %.0f%% of the time'
                 % (100 * uncounted / total))
    lines += ['', 'LRN alone, batch %d: alexnet.lrn vs tf.nn.local_response_normalization '
              '(best of %d runs, alternating)' % (compute['lrn'][0]['input'][0],
                                                  results['settings']['repeats']),
              '  layer   input          alexnet.lrn ms   TF op ms   speed-up']
    for row in compute['lrn']:
        lines.append('  %-6s  %-13s  %14.1f   %8.1f   %7.2fx' % (
            row['layer'], 'x'.join(str(d) for d in row['input'][1:]), 1000 * row['seconds'],
            1000 * row['tf_op_seconds'], row['speedup']))
    both = compute.get('lrn_forward')
    if both:
        lines += ['', 'Batch %d forward, alexnet.lrn vs TF\'s LRN op in its place (runs '
                  'alternating; LRN share from one traced run each)' % both['tf_op']['batch'],
                  '  LRN           images/s   GFLOP/s   share of matmul peak   LRN share '
                  'of time (norm1, norm2 ms)']
        for key, label in (('alexnet_lrn', 'alexnet.lrn'), ('tf_op', 'TF op')):
            row = both[key]
            times = {layer['layer']: layer['seconds'] for layer in row['layers']}
            lrn = [name for name in times if name.startswith('norm')]
            lines.append('  %-12s  %8.1f   %7.1f   %5.0f%%                 %5.1f%% (%s)' % (
                label, row['images_per_second'], row['gflops'], 100 * row['share_of_peak'],
                100 * sum(times[name] for name in lrn) / sum(times.values()),
                ', '.join('%.0f' % (1000 * times[name]) for name in lrn)))
        lines.append('  alexnet.lrn makes the forward pass %.2fx as fast'
                     % (both['alexnet_lrn']['images_per_second']
                        / both['tf_op']['images_per_second']))
    lines += ['', 'Fine-tuning step, batch %d (images/s)   [peak RSS %.0f MB]'
              % (training['batch'], training['peak_rss_mb']),
              '  trained   naive    cached   cached/naive']
    for name, _ in HEAD_CONFIGS:
        row = training[name]
        lines.append('  %-7s  %7.1f  %8.1f   %6.1fx' % (name, row['naive'], row['cached'],
                                                        row['ratio']))
    if 'all layers' in training:
        lines.append('  all 8 layers (from scratch): %.1f images/s'
                     % training['all layers']['naive'])
    naive = training['fc6-fc8']['naive']
    lines += ['', 'Input pipeline alone (decode+augment, %d generated 500x375 JPEGs): %.1f '
              'images/s = %.1fx what naive fc6-fc8 training consumes   [peak RSS %.0f MB]'
              % (pipeline['images'], pipeline['images_per_second'],
                 pipeline['images_per_second'] / naive, pipeline['peak_rss_mb']),
              'Input pipeline from the decoded cache (--cache-decoded, after its first pass): '
              '%.1f images/s = %.1fx the JPEG path'
              % (pipeline['decoded_cache_images_per_second'],
                 pipeline['decoded_cache_images_per_second'] / pipeline['images_per_second'])]
    small, large = results['memory'][0], results['memory'][-1]
    lines += ['Input pipeline memory, one training epoch: peak RSS %.0f MB over %d photos, '
              '%.0f MB over %d (%+.0f%%)'
              % (small['peak_rss_mb'], small['images'], large['peak_rss_mb'], large['images'],
                 100.0 * (large['peak_rss_mb'] / small['peak_rss_mb'] - 1))]
    return lines


def format_laptop(epochs):
    """bench.py --laptop: finetune.py end to end on cached features, per trained head."""
    lines = ['', 'finetune.py end to end on %d generated 500x375 photos (%d train), cached features '
             '(%s views), %s epochs, batch %d' % (epochs['images'], epochs['train_images'],
                                                 epochs['views'], epochs.get('epochs', '?'),
                                                 epochs['batch']),
             '  trained  scan+setup s  cache build s  s/epoch  total min  val acc  peak RSS MB']
    for name in epochs['heads']:
        row = epochs['cached:' + name]
        epochs_seconds = row['epoch_seconds_sum']
        setup = row['total_seconds'] - epochs_seconds - (row['cache_seconds'] or 0)
        lines.append('  %-7s  %12.0f  %13s  %7.1f  %9.1f  %7.3f  %11.0f' % (
            name, setup, '-' if row['cache_seconds'] is None else '%.0f' % row['cache_seconds'],
            row['epoch_seconds'], row['total_seconds'] / 60, row['val_accuracy'],
            row['finetune_peak_rss_mb']))
    return lines


def format_report(results):
    """The table people read; the JSON has every number."""
    lines = ['%d CPUs (%s), %s=%s (cpu_kernels.py: 1 = oneDNN kernels under TensorFlow 2.x)%s'
             % (results['cpus'], results.get('cpu_vector_extensions') or 'vector extensions unknown',
                cpu_kernels.ONEDNN, results.get(cpu_kernels.ONEDNN),
                ', %s=%s' % (ONEDNN_ISA, results[ONEDNN_ISA]) if results.get(ONEDNN_ISA) else '')]
    if 'compute' in results:
        lines += [''] + format_measurements(results)
    epochs = results.get('epochs')
    if epochs and not any(key.startswith('naive:') for key in epochs):
        return '\n'.join(lines + format_laptop(epochs))
    if epochs:
        lines += ['', 'finetune.py epochs on %d generated photos (%d train), %s views cached, '
                  'batch %d' % (epochs['images'], epochs['train_images'], epochs['views'],
                                epochs['batch']),
                  '  trained  mode     s/epoch  speed-up  cache build s  val acc  peak RSS MB']
        for name in epochs['heads']:
            naive_row = epochs['naive:' + name]
            for mode in ('naive', 'cached'):
                row = epochs[mode + ':' + name]
                lines.append('  %-7s  %-7s  %7.2f  %7.1fx  %13s  %7.3f  %11.0f' % (
                    name, mode, row['epoch_seconds'],
                    naive_row['epoch_seconds'] / row['epoch_seconds'],
                    '-' if row['cache_seconds'] is None else '%.1f' % row['cache_seconds'],
                    row['val_accuracy'], row['finetune_peak_rss_mb']))
    return '\n'.join(lines)


def parse_args(argv=None):
    parser = command_line.ArgumentParser(
        description='Measure AlexNet forward and fine-tuning speed against this '
                    "machine's matrix-product peak, the input pipeline, and cached features.")
    parser.add_argument('--out', default='bench.json', help='where to write the numbers')
    parser.add_argument('--quick', action='store_true',
                        help='tiny settings: a smoke run of every part in well under a minute')
    parser.add_argument('--repeats', type=int, default=3, help='timed runs per measurement (best)')
    parser.add_argument('--epoch-images', type=int, default=0,
                        help='also time finetune.py epochs, naive and cached, on this many '
                             'generated photos (0: skip; 300 takes a few minutes)')
    parser.add_argument('--epochs', type=int, default=5,
                        help='epochs per --epoch-images run (the median epoch is reported)')
    parser.add_argument('--epoch-views', default='2',
                        help='--cache-views of the cached epoch runs (auto, ten-crops or a number)')
    parser.add_argument('--laptop', action='store_true',
                        help='only the fine-tuning of fc6-fc8 and fc7-fc8 on cached features, '
                             'end to end (scan, cache, epochs) as finetune.py runs by default on '
                             'this machine: --epoch-images 25000, --epochs 10, --epoch-views auto '
                             'unless given')
    parser.add_argument('--heads', nargs='+', choices=[name for name, _ in HEAD_CONFIGS],
                        default=[name for name, _ in HEAD_CONFIGS],
                        help='the trained heads of the finetune.py runs (default: both)')
    parser.add_argument('--compare-lrn', action='store_true',
                        help="also time the largest batch's forward pass with TensorFlow's "
                             'LRN op in place of alexnet.lrn, runs alternating')
    parser.add_argument('--part', default=None, help=argparse.SUPPRESS)     # child process
    parser.add_argument('--settings', default=None, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
    if args.part:
        child(args.part, json.loads(args.settings))
        return 0
    if args.repeats < 1 or args.epoch_images < 0 or args.epochs < 1:
        print('error: --repeats and --epochs must be at least 1, --epoch-images at least 0',
              file=sys.stderr)
        return 2
    if args.laptop:
        defaults = parse_args([])
        if args.epoch_images == defaults.epoch_images:
            args.epoch_images = 25000
        if args.epochs == defaults.epochs:
            args.epochs = 10
        if args.epoch_views == defaults.epoch_views:
            args.epoch_views = 'auto'
    if args.quick:
        settings = {'matmul_size': 1024, 'batch_sizes': [1, 8], 'repeats': 1, 'train_batch': 8,
                    'pipeline_images': 32, 'pipeline_batch': 16, 'memory_images': [50, 500]}
    else:
        settings = {'matmul_size': 4096, 'batch_sizes': [1, 32, 128], 'repeats': args.repeats,
                    'train_batch': 128, 'pipeline_images': 256, 'pipeline_batch': 32,
                    'memory_images': [2000, 20000]}
    settings['compare_lrn'] = args.compare_lrn
    started = time.time()
    results = {'date': time.strftime('%Y-%m-%d %H:%M'), 'cpus': os.cpu_count(),
               cpu_kernels.ONEDNN: os.environ.get(cpu_kernels.ONEDNN),
               'cpu_vector_extensions': cpu_vector_extensions(),
               ONEDNN_ISA: os.environ.get(ONEDNN_ISA),
               'python': sys.version.split()[0], 'settings': settings}
    for part in () if args.laptop else ('compute', 'training', 'pipeline'):
        print('measuring %s ...' % part, flush=True)
        results[part] = run_part(part, settings)
    if not args.laptop:
        print('measuring pipeline memory ...', flush=True)
        results['memory'] = [run_part('memory:%d' % count, settings)
                             for count in settings['memory_images']]
        results['tensorflow'] = results['compute']['tensorflow']
    if args.epoch_images:
        results['epochs'] = run_epochs(args, settings)
    results['seconds'] = time.time() - started
    print()
    print(format_report(results))
    with open(args.out, 'w', encoding='utf-8') as f:
        json.dump(results, f, indent=2)
    print('\n%.0fs; numbers written to %s' % (results['seconds'], args.out))
    return 0


def run_epochs(args, settings):
    """The finetune.py runs: naive and cached, fc6-fc8 and fc7-fc8, on generated photos."""
    import alexnet
    import datasets
    work = tempfile.mkdtemp(prefix='bench-epochs-')
    try:
        # A list file: the generated folder also holds the source*.jpg the photos copy.
        data = os.path.join(work, 'photos.txt')
        with open(data, 'w', encoding='utf-8') as f:
            f.writelines('%s %d\n' % item for item in make_benchmark_images(
                os.path.join(work, 'photos'), args.epoch_images, copies=True))
        weights = alexnet.DEFAULT_WEIGHTS_PATH
        if not os.path.isfile(weights):
            weights = os.path.join(work, 'stand_in.npz')
            stand_in_weights(weights)
        batch = 8 if args.quick else 128
        epoch_settings = dict(settings, epoch_data=data, epoch_weights=weights,
                              epoch_logs=os.path.join(work, 'logs'), epochs=args.epochs,
                              epoch_views=args.epoch_views, epoch_batch=batch)
        found = datasets.find_dataset(data)
        train, _ = datasets.split_dataset(found.items, 0.1, 0)
        epochs = {'images': args.epoch_images, 'train_images': len(train),
                  'views': args.epoch_views, 'batch': batch, 'weights': weights,
                  'epochs': args.epochs, 'heads': args.heads}
        for name in args.heads:
            for mode in ('cached',) if args.laptop else ('naive', 'cached'):
                print('measuring finetune.py epochs, %s %s ...' % (mode, name), flush=True)
                epochs[mode + ':' + name] = run_part('epoch:%s:%s' % (mode, name),
                                                     epoch_settings)
        return epochs
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == '__main__':
    sys.exit(main())
