"""TensorBoard itself reads a fine-tuning run: its runs, curves, images, histograms and graph.

finetune.main trains fc8 for 2 epochs on tiny generated photos, as `make demo`
does on the bundled ones; then the `tensorboard` program installed beside this
Python serves the run on 127.0.0.1, and the tests read what it serves through
its HTTP data API, the one its web pages use (the same routes in TensorBoard
1.15 and 2.x; see tensorboard/plugins/*/*_plugin.py):

    /data/runs                                             the runs
    /data/plugin/scalars/scalars?run=R&tag=T               [[wall time, step, value], ...]
    /data/plugin/images/images?run=R&tag=T&sample=0        [{step, query}, ...]
    /data/plugin/images/individualImage?<query>            the PNG
    /data/plugin/histograms/histograms?run=R&tag=T         [[wall time, step, buckets], ...]
    /data/plugin/graphs/graph?run=R                        the run's GraphDef, as text

(and each plugin's /tags, /info for the graphs). The server is stopped at the end,
whatever happens.
"""
import io
import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.parse
import urllib.request

import numpy as np
import pytest
import tensorflow.compat.v1 as tf
from google.protobuf import text_format
from PIL import Image

import alexnet
import finetune
import run_folder
from conftest import photo, save

pytestmark = pytest.mark.slow

TENSORBOARD = os.path.join(os.path.dirname(sys.executable), 'tensorboard')
STARTUP_SECONDS = 180     # importing TensorFlow on 2 busy cores can take a minute
RUN = 'run'
TRAIN, VALIDATION = RUN + '/train', RUN + '/validation'
MODEL = 'graph'           # alexnet.py --graph-dir logs/graph, as `make demo` writes it
# 6 training photos in batches of 4: 2 steps an epoch, so epochs end at steps 2 and 4.
EPOCH_ENDS = [2, 4]
# Per-step summaries every 10 steps and at each epoch's last step: after steps 1, 2 and 4.
SUMMARY_STEPS = [1, 2, 4]

# What TensorBoard's graph must show at its top level: the paper's layers in order,
# and each part of the training graph as one node.
LAYERS = ['conv1', 'norm1', 'pool1', 'conv2', 'norm2', 'pool2', 'conv3', 'conv4', 'conv5',
          'pool5', 'flatten', 'fc6', 'dropout6', 'fc7', 'dropout7', 'fc8']
TOP_LEVEL = {
    TRAIN: set(LAYERS) | {'input', 'loss', 'evaluation', 'train', 'summaries', 'checkpoints',
                          'load_weights', 'global_step', 'epoch_state', 'init'},
    MODEL: set(LAYERS) | {'input', 'keep_prob', 'load_weights'}}
CHAIN = {TRAIN: ['input'] + LAYERS + ['loss'], MODEL: ['input'] + LAYERS}


@pytest.fixture(scope='module')
def logs(module_dir):
    """A log folder holding one fine-tuning run, 2 epochs of fc8 on 8 tiny photos, and
    AlexNet's graph alone."""
    for label in ('cat', 'dog'):
        for i in range(4):
            save(module_dir / 'data' / label / ('%d.jpg' % i),
                 photo(30, 40, seed=i + (10 if label == 'dog' else 0)))
    log_dir = module_dir / 'logs'
    assert finetune.main(['--data', str(module_dir / 'data'), '--run', str(log_dir / RUN),
                          '--weights', 'none', '--train-layers', 'fc8', '--epochs', '2',
                          '--batch-size', '4', '--val-fraction', '0.25', '--learning-rate', '0.02',
                          '--keep-checkpoints', '1', '--no-progress']) == 0
    assert alexnet.main(['--graph-dir', str(log_dir / MODEL)]) == 0
    return log_dir


@pytest.fixture(scope='module')
def server(logs, module_dir):
    """The base URL of a real TensorBoard serving `logs`, once it has read them."""
    if not os.path.isfile(TENSORBOARD):
        pytest.skip('no tensorboard program beside %s (pip install tensorboard)'
                    % sys.executable)
    messages = module_dir / 'tensorboard.log'
    with open(str(messages), 'wb') as out:
        # Port 0: the system picks a free port, and TensorBoard prints its URL.
        # Its own session, so that the data server it may start ends with it.
        process = subprocess.Popen(
            [TENSORBOARD, '--logdir', str(logs), '--host', '127.0.0.1', '--port', '0'],
            stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True)
    try:
        url = wait_for_url(process, str(messages))
        wait_until_read(url, process, str(messages))
        yield url
    finally:
        stop(process)


def wait_for_url(process, messages):
    deadline = time.time() + STARTUP_SECONDS
    while time.time() < deadline:
        with open(messages, encoding='utf-8', errors='replace') as f:
            found = re.search(r'TensorBoard \S+ at (http://\S+?)/? \(Press CTRL\+C', f.read())
        if found:
            return found.group(1)
        if process.poll() is not None:
            break
        time.sleep(0.5)
    pytest.fail('tensorboard did not start within %d s (exit status %s):\n%s'
                % (STARTUP_SECONDS, process.poll(), tail(messages)))


def wait_until_read(url, process, messages):
    """Waits until TensorBoard lists both runs' scalars and the graph, and what it
    serves stops changing (it reads the event files in the background)."""
    deadline = time.time() + STARTUP_SECONDS
    last = None
    while time.time() < deadline:
        try:
            now = [tags(url, plugin) for plugin in ('scalars', 'histograms', 'images')]
            now.append(get(url, '/data/plugin/graphs/info'))
        except (OSError, ValueError):        # not answering yet
            now = None
        if (now and now == last and set(now[0]) == {TRAIN, VALIDATION}
                and {TRAIN, MODEL} <= set(now[3])):
            return
        last = now
        if process.poll() is not None:
            break
        time.sleep(1)
    pytest.fail('tensorboard did not serve the run within %d s:\n%s'
                % (STARTUP_SECONDS, tail(messages)))


def stop(process):
    """Ends TensorBoard and what it started (its own process group), politely first."""
    for sig, seconds in ((signal.SIGTERM, 15), (signal.SIGKILL, 15)):
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            pass
        try:
            process.wait(seconds)
            return
        except subprocess.TimeoutExpired:
            continue


def tail(path, lines=20):
    with open(path, encoding='utf-8', errors='replace') as f:
        return ''.join(f.readlines()[-lines:])


def fetch(url, path, **query):
    """The body of GET url+path?query, as bytes."""
    if query:
        path += '?' + urllib.parse.urlencode(query)
    with urllib.request.urlopen(url + path, timeout=60) as response:
        return response.read()


def get(url, path, **query):
    """GET url+path?query, decoded from JSON."""
    return json.loads(fetch(url, path, **query).decode('utf-8'))


def tags(url, plugin):
    """{run: [tag, ...]} of a plugin, runs without any left out (TensorBoard 1.15
    lists them with none)."""
    return {run: sorted(run_tags) for run, run_tags in
            get(url, '/data/plugin/%s/tags' % plugin).items() if run_tags}


def scalars(url, run, tag):
    """{step: value} of a scalar curve."""
    return {step: value for _, step, value in
            get(url, '/data/plugin/scalars/scalars', run=run, tag=tag)}


# --- The tests -----------------------------------------------------------------

def test_the_runs_are_train_validation_and_the_model_graph(server):
    assert sorted(get(server, '/data/runs')) == [MODEL, TRAIN, VALIDATION]


def test_each_epoch_has_a_train_and_a_validation_point_at_its_last_step(server, logs):
    assert tags(server, 'scalars') == {
        TRAIN: ['accuracy', 'batch/accuracy', 'batch/loss', 'epoch/learning_rate',
                'learning_rate', 'loss'],
        VALIDATION: ['accuracy', 'loss']}
    table = run_folder.read_metrics(str(logs / RUN))   # metrics.csv, beside the event files
    rates = scalars(server, TRAIN, 'epoch/learning_rate')
    assert sorted(rates) == EPOCH_ENDS
    assert [rates[s] for s in EPOCH_ENDS] == pytest.approx([0.02] * len(EPOCH_ENDS), rel=1e-6)
    for tag in ('loss', 'accuracy'):
        train, validation = scalars(server, TRAIN, tag), scalars(server, VALIDATION, tag)
        # The same x values: TensorBoard draws the two lines over each other.
        assert sorted(train) == sorted(validation) == EPOCH_ENDS, tag
        np.testing.assert_allclose([train[s] for s in EPOCH_ENDS], table['train_' + tag],
                                   rtol=1e-6)
        np.testing.assert_allclose([validation[s] for s in EPOCH_ENDS], table['val_' + tag],
                                   rtol=1e-6)
    assert sorted(scalars(server, TRAIN, 'batch/loss')) == SUMMARY_STEPS
    learning_rate = scalars(server, TRAIN, 'learning_rate')
    assert sorted(learning_rate) == SUMMARY_STEPS
    assert set(np.float32(list(learning_rate.values()))) == {np.float32(0.02)}


def test_the_input_images_are_the_photos_as_a_person_sees_them(server):
    assert tags(server, 'images') == {TRAIN: ['input/image/%d' % i for i in range(3)]}
    images = get(server, '/data/plugin/images/images', run=TRAIN, tag='input/image/0',
                 sample=0)
    assert [image['step'] for image in images] == SUMMARY_STEPS
    png = fetch(server, '/data/plugin/images/individualImage?' + images[-1]['query'])
    with Image.open(io.BytesIO(png)) as image:
        assert image.format == 'PNG' and image.mode == 'RGB'
        assert image.size == (227, 227)
        assert np.asarray(image).std() > 1       # a photo, not a blank


def test_histograms_show_the_trained_layer_only(server):
    assert tags(server, 'histograms') == {TRAIN: sorted(
        'fc8/%s/%s' % (part, kind) for part in ('weights', 'biases')
        for kind in ('value', 'gradient'))}
    histograms = get(server, '/data/plugin/histograms/histograms', run=TRAIN,
                     tag='fc8/weights/value')
    assert [step for _, step, _ in histograms] == SUMMARY_STEPS
    for _, _, buckets in histograms:             # [left edge, right edge, count] each
        assert sum(count for _, _, count in buckets) == pytest.approx(4096 * 2)


def served_graph(url, run):
    """A run's GraphDef as TensorBoard's graphs plugin serves it."""
    graph_def = tf.GraphDef()
    text_format.Parse(fetch(url, '/data/plugin/graphs/graph', run=run).decode('utf-8'),
                      graph_def)
    return graph_def


def top(name):
    """The top-level node TensorBoard groups an op into: its first name scope."""
    return name.lstrip('^').split(':')[0].split('/')[0]


def test_only_the_training_run_and_the_model_have_a_graph(server):
    info = get(server, '/data/plugin/graphs/info')
    assert sorted(info) == [MODEL, TRAIN]           # validation/ writes none
    assert info[MODEL]['run_graph'] and info[TRAIN]['run_graph']


@pytest.mark.parametrize('run', [TRAIN, MODEL])
def test_the_graph_reads_like_the_paper(server, run):
    graph = served_graph(server, run)
    assert {top(node.name) for node in graph.node} == TOP_LEVEL[run]
    # Each scope feeds the next: input -> conv1 -> norm1 -> ... -> fc8 (-> loss).
    edges = {(top(source), top(node.name)) for node in graph.node for source in node.input}
    for source, target in zip(CHAIN[run], CHAIN[run][1:]):
        assert (source, target) in edges, (source, target)
    # The layers' variables carry the weight file's names.
    variables = {node.name for node in graph.node if node.op in ('VariableV2', 'VarHandleOp')}
    assert {'%s/%s' % (layer, part) for layer in alexnet.LAYER_NAMES
            for part in ('weights', 'biases')} <= variables


@pytest.mark.parametrize('run', [TRAIN, MODEL])
def test_the_weight_loading_ops_are_in_their_own_scope(server, run):
    graph = served_graph(server, run)
    nodes = {node.name: node for node in graph.node}
    weights = {'%s/%s' % (layer, part) for layer in alexnet.LAYER_NAMES
               for part in ('weights', 'biases')}
    # Loading a weight file: each layer variable is assigned a fed value.
    loads = [node for node in graph.node if node.op == 'Assign' and node.input[0] in weights
             and nodes[node.input[1].split(':')[0]].op == 'Placeholder']
    assert sorted(node.input[0] for node in loads) == sorted(weights)
    assert all(top(node.name) == top(node.input[1]) == 'load_weights' for node in loads)
    # and nothing else is in there.
    assert {node.op for node in graph.node if top(node.name) == 'load_weights'} == {
        'Assign', 'Placeholder'}
