"""Fine-tune AlexNet's last layers on a new task: the course's cats vs dogs.

The pretrained bvlc_alexnet keeps its convolutional layers frozen; the layers in
--train-layers (fc6, fc7, fc8 by default) learn the new classes with the
paper's recipe (section 5): stochastic gradient descent with momentum 0.9,
weight decay 0.0005, dropout 0.5 in fc6 and fc7, on augmented crops (section 4.1,
datagenerator.py).

    python finetune.py --data data/PetImages --epochs 10
    python finetune.py --data data/PetImages --weights none --run-name scratch
    tensorboard --logdir logs

A run lives in logs/<run-name>/: TensorBoard logs (train/ and validation/ on the
same charts), checkpoints/ (the last --keep-checkpoints epochs, momentum included,
for --resume), best/ (the weights of the best validation accuracy),
metrics.csv, curves.png, split.json, class_names.txt and, at the end,
weights.npz, which validate_alexnet_on_imagenet.py --weights reads.
`--resume` continues the last checkpoint; --epochs is the total; Ctrl-C saves.

Two ways to train, the same model and run folder either way:

* naive (the default): every step decodes photos, augments them and runs all
  eight layers forward, the trained ones backward;
* --cache-features: when every trained layer comes after the last frozen one
  (fc6,fc7,fc8 or fc7,fc8 or fc8), the frozen part runs once per image view and
  its output is kept on disk (feature_cache.py, in <log-dir>/.feature-cache/);
  every step then runs only the trained head on it. --cache-views picks the
  views per training image: the paper's ten crops, or N random augmented ones.

--cache-decoded (naive path) keeps the photos decoded and scaled to 256 on disk
after the first epoch, for machines where JPEG decoding cannot keep up (GPUs).

    python finetune.py --data data/PetImages --cache-features --epochs 30

Deviations from the paper: only the chosen layers train (fine-tuning, as the
course does); the learning rate stays constant (the paper divided it by 10 by
hand when validation error stopped improving).
"""
from __future__ import annotations

import argparse
import csv
import glob
import math
import os
import shutil
import sys
import time

import numpy as np
import tensorflow.compat.v1 as tf
from tqdm import tqdm

import alexnet
import class_names
import datagenerator
import feature_cache
import visualize
import weight_files

METRICS_COLUMNS = ('epoch', 'step', 'train_loss', 'train_accuracy', 'val_loss',
                   'val_accuracy', 'learning_rate', 'seconds')
EXIT_INTERRUPTED = 130
EXIT_DIVERGED = 3
SMALL_DATASET = 100     # fewer photos than this: say it is a smoke run, not a classifier


class RunError(Exception):
    """A problem the user must fix before training can go on; the message says how."""


# --- The graph, in the Mechanics 101 steps: inference, loss, training, evaluation ---

def loss_fn(logits, labels, weight_decay, decayed_weights):
    """Mean cross-entropy plus L2 weight decay on the trained weights (not biases).

    The paper's update subtracts 0.0005 * lr * w each step: that is the gradient
    of weight_decay * sum(w^2) / 2, i.e. weight_decay * tf.nn.l2_loss(w).
    """
    cross_entropy = tf.reduce_mean(
        tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=logits))
    decay = tf.add_n([tf.nn.l2_loss(w) for w in decayed_weights]) if decayed_weights else 0.0
    return cross_entropy, cross_entropy + weight_decay * decay


def training(loss, variables, learning_rate, momentum, global_step):
    """Momentum SGD on `variables` only: every other variable stays bit-identical."""
    optimizer = tf.train.MomentumOptimizer(learning_rate, momentum)
    gradients = optimizer.compute_gradients(loss, var_list=variables)
    return optimizer.apply_gradients(gradients, global_step=global_step), gradients


def evaluation(logits, labels):
    """Number of correct top-1 predictions in the batch."""
    return tf.reduce_sum(tf.cast(tf.nn.in_top_k(logits, labels, 1), tf.int32))


class Graph(object):
    """Everything finetune builds: the model fed by a switchable input, and its ops."""

    def __init__(self, train_items, val_items, num_classes, train_layers, skip_layer,
                 weights_path, settings, seed, start_epoch, cache_from=None,
                 cache_views=feature_cache.TEN_CROPS):
        """cache_from: None for the naive path, else the first trained layer (fc6,
        fc7 or fc8), whose input comes from cached features (feature_cache.py)."""
        tf.set_random_seed(seed)
        self.cache = None
        if cache_from is None:
            # Naive path: batches of decoded, augmented photos [N, 227, 227, 3].
            # repeat(): each pass over the data reshuffles; `epoch` moves the shuffle
            # on, so a resumed run does not replay the first epochs' order.
            # --cache-decoded: photos decoded and scaled once, read from disk afterwards.
            decoded = settings.get('decoded_cache')
            train_data = datagenerator.make_dataset(train_items, settings['batch_size'],
                                                    training=True, seed=seed,
                                                    epoch=start_epoch,
                                                    decoded_cache=decoded).repeat()
            val_data = (datagenerator.make_dataset(val_items, settings['batch_size'],
                                                   training=False, decoded_cache=decoded)
                        if val_items else None)
        else:
            # Cached path: batches of the frozen part's output [N, D], one view per image.
            self.cache = feature_cache.FeatureCache(train_items, val_items, cache_from,
                                                    cache_views, settings['batch_size'],
                                                    seed, start_epoch)
            train_data = self.cache.train_data.repeat()
            val_data = self.cache.val_data
        # One input, two sources: a string handle picks the training stream or
        # the validation pass (the TF 1.x "feedable iterator").
        self.handle = tf.placeholder(tf.string, [], name='input_handle')
        iterator = tf.data.Iterator.from_string_handle(
            self.handle, tf.data.get_output_types(train_data),
            tf.data.get_output_shapes(train_data))
        inputs, labels = iterator.get_next()          # images or features, labels [N]
        self.train_iterator = tf.data.make_initializable_iterator(train_data)
        self.val_iterator = None
        if val_data is not None:
            self.val_iterator = tf.data.make_initializable_iterator(val_data)

        self.keep_prob = tf.placeholder_with_default(1.0, [], name='keep_prob')
        if self.cache is None:
            # Naive: all eight layers run at every step.
            self.model = alexnet.AlexNet(inputs, self.keep_prob, num_classes, skip_layer,
                                         weights_path)
            logits = self.model.fc8
        else:
            # Cached: the full model still holds every variable (loaded, checkpointed
            # and exported as in the naive path) and computes the cache from the
            # views; each step runs only the head, on the same variables.
            self.model = alexnet.AlexNet(self.cache.images, self.keep_prob, num_classes,
                                         skip_layer, weights_path)
            logits = self.model.head(inputs, cache_from)
        trained = self.model.variables(train_layers)
        decayed = [v for v in trained if v.op.name.endswith('/weights')]
        self.cross_entropy, self.loss = loss_fn(logits, labels,
                                                settings['weight_decay'], decayed)
        self.correct = evaluation(logits, labels)
        self.batch = tf.shape(labels)[0]
        self.global_step = tf.train.get_or_create_global_step()
        # Epochs finished: saved with the checkpoints so --resume knows where it is.
        self.epoch = tf.get_variable('epoch', [], tf.int64, tf.zeros_initializer(),
                                     trainable=False)
        self.next_epoch = tf.assign_add(self.epoch, 1)
        self.learning_rate = tf.constant(settings['learning_rate'], tf.float32, name='lr')
        self.train_op, gradients = training(self.loss, trained, self.learning_rate,
                                            settings['momentum'], self.global_step)
        self.summaries = self._summaries(None if self.cache else inputs, gradients)
        self.init = tf.global_variables_initializer()
        # Checkpoints hold every variable, momentum included, so a resume is exact;
        # best/ holds what evaluation and export need: the weights, step and epoch.
        self.saver = tf.train.Saver(max_to_keep=settings['keep_checkpoints'])
        self.best_saver = tf.train.Saver(self.model.variables() + [self.global_step, self.epoch],
                                         max_to_keep=1)

    def disk_needed(self, keep_checkpoints):
        """Bytes a whole run writes at most: the kept checkpoints plus the one being
        written (tf.train.Saver deletes the oldest after), best/ and weights.npz."""
        def size(variables):
            return sum(v.shape.num_elements() * v.dtype.base_dtype.size for v in variables)
        weights = size(self.model.variables())
        return (keep_checkpoints + 1) * size(tf.global_variables()) + 2 * weights

    def _summaries(self, images, gradients):
        accuracy = tf.cast(self.correct, tf.float32) / tf.cast(self.batch, tf.float32)
        summaries = [tf.summary.scalar('loss', self.cross_entropy),
                     tf.summary.scalar('accuracy', accuracy),
                     tf.summary.scalar('learning_rate', self.learning_rate)]
        for gradient, variable in gradients:
            summaries.append(tf.summary.histogram(variable.op.name + '/value', variable))
            summaries.append(tf.summary.histogram(variable.op.name + '/gradient', gradient))
        if images is not None:
            # The network's input as a person sees it: de-normalised RGB.
            shown = tf.numpy_function(datagenerator.model_input_to_rgb, [images[:3]], tf.uint8)
            shown.set_shape([None, 227, 227, 3])
            summaries.append(tf.summary.image('input', shown, max_outputs=3))
        return tf.summary.merge(summaries)


# --- Running it -------------------------------------------------------------

def train_epoch(session, graph, handle, steps, keep_prob, writer, summary_every, progress):
    """Runs `steps` training steps; returns (mean loss, accuracy) over them."""
    total_loss, correct, seen = 0.0, 0, 0
    bar = tqdm(range(steps), disable=not progress, unit='batch', leave=False)
    fetches = [graph.train_op, graph.cross_entropy, graph.correct, graph.batch]
    step = session.run(graph.global_step)      # counted here from now on: one run per step
    for _ in bar:
        summarise = step % summary_every == 0
        # The summaries come from the same run as the training step.
        try:
            results = session.run(fetches + ([graph.summaries] if summarise else []),
                                  {graph.handle: handle, graph.keep_prob: keep_prob})
        except tf.errors.InvalidArgumentError as err:
            if 'Nan in summary' in err.message:    # a histogram met the diverged weights
                raise FloatingPointError('nan')
            raise
        _, loss, batch_correct, batch = results[:4]
        if not math.isfinite(loss):
            raise FloatingPointError(loss)
        if summarise:
            writer.add_summary(results[4], step)
        step += 1
        total_loss += loss * batch
        correct += batch_correct
        seen += batch
        bar.set_postfix(loss='%.4f' % (total_loss / seen), acc='%.3f' % (correct / seen))
    return total_loss / seen, correct / seen


def validate(session, graph):
    """(mean loss, accuracy) over the whole validation split, dropout off."""
    session.run(graph.val_iterator.initializer)
    handle = session.run(graph.val_iterator.string_handle())
    total_loss, correct, seen = 0.0, 0, 0
    while True:
        try:
            loss, batch_correct, batch = session.run(
                [graph.cross_entropy, graph.correct, graph.batch], {graph.handle: handle})
        except tf.errors.OutOfRangeError:
            break
        total_loss += loss * batch
        correct += batch_correct
        seen += batch
    return total_loss / max(seen, 1), correct / max(seen, 1)


def write_scalars(writer, step, values):
    summary = tf.Summary(value=[tf.Summary.Value(tag=tag, simple_value=float(value))
                                for tag, value in values.items()])
    writer.add_summary(summary, step)
    writer.flush()


def append_metrics(path, row):
    new = not os.path.exists(path)
    with open(path, 'a', newline='', encoding='utf-8') as f:
        writer = csv.DictWriter(f, METRICS_COLUMNS)
        if new:
            writer.writeheader()
        writer.writerow(row)


def best_accuracy(metrics_path):
    """The best validation accuracy recorded so far (for --resume), or -1."""
    if not os.path.exists(metrics_path):
        return -1.0
    with open(metrics_path, newline='', encoding='utf-8') as f:
        values = [float(row['val_accuracy']) for row in csv.DictReader(f)
                  if row.get('val_accuracy')]
    return max(values, default=-1.0)


def save_checkpoint(session, saver, folder, step):
    """Saves a checkpoint; a failed save (a full disk) leaves no partial file behind."""
    try:
        os.makedirs(folder, exist_ok=True)
        return saver.save(session, os.path.join(folder, 'model.ckpt'), global_step=step)
    except (tf.errors.OpError, OSError) as err:
        for partial in glob.glob(os.path.join(folder, '*.tempstate*')):
            os.remove(partial)
        raise RunError('could not save the checkpoint of step %d in %s (%s); the earlier '
                       'checkpoints are kept: free some disk space or lower --keep-checkpoints, '
                       'then continue with --resume' % (step, folder, failure_reason(err)))


def failure_reason(err):
    """One line saying why a write failed (TensorFlow's messages run to many lines)."""
    text = getattr(err, 'message', None) or str(err)
    if 'No space left on device' in text:
        return 'no space left on the disk'
    return text.strip().splitlines()[-1] if text.strip() else type(err).__name__


def check_disk_space(graph, run_dir, keep_checkpoints):
    """Warns up front when the run's checkpoints will not fit on the disk."""
    needed = graph.disk_needed(keep_checkpoints)
    free = shutil.disk_usage(run_dir).free
    if free < needed:
        print('warning: %s has %.0f MB free, and this run writes up to %.0f MB of checkpoints '
              'and weights; free some space, lower --keep-checkpoints (now %d) or pick another '
              '--log-dir' % (run_dir, free / 2 ** 20, needed / 2 ** 20, keep_checkpoints),
              file=sys.stderr)


# --- Setting up a run ---------------------------------------------------------

def resolve_run(log_dir, run_name, resume):
    """The run folder: a new one, or for --resume the named or the latest one."""
    if run_name is None and resume:
        runs = [os.path.join(log_dir, name) for name in os.listdir(log_dir)
                if alexnet.checkpoint_of(os.path.join(log_dir, name))] if os.path.isdir(log_dir) else []
        if not runs:
            raise RunError('nothing to resume: no run with checkpoints in %s' % log_dir)
        return max(runs, key=os.path.getmtime)
    run_dir = os.path.join(log_dir, run_name or time.strftime('%Y%m%d-%H%M%S'))
    if resume and not alexnet.checkpoint_of(run_dir):
        raise RunError('nothing to resume in %s: it has no checkpoints/; drop --resume to '
                       'start it' % run_dir)
    if not resume and os.path.exists(os.path.join(run_dir, 'metrics.csv')):
        raise RunError('%s already holds a run; pass --resume to continue it or another '
                       '--run-name' % run_dir)
    return run_dir


def prepare_data(data, run_dir, val_fraction, seed, progress):
    """The run's split (reused on --resume), with unreadable files left out."""
    split_path = os.path.join(run_dir, 'split.json')
    if os.path.exists(split_path):
        train, val, names = datagenerator.read_split(split_path)
    else:
        items, names = datagenerator.find_dataset(data)
        train, val = datagenerator.split_dataset(items, val_fraction, seed)
    cache_dir = os.path.join(os.path.dirname(os.path.abspath(run_dir)), '.scan-cache')
    good, bad = datagenerator.scan_images(train + val, cache_dir=cache_dir, progress=progress,
                                          report=True)
    good = set(good)
    train = [item for item in train if item in good]
    val = [item for item in val if item in good]
    if not train:
        raise RunError('no readable training images in %s' % data)
    os.makedirs(run_dir, exist_ok=True)
    datagenerator.write_split(split_path, train, val, names)
    if bad:
        with open(os.path.join(run_dir, 'bad_files.txt'), 'w', encoding='utf-8') as f:
            f.writelines('%s\t%s\n' % entry for entry in bad)
    class_names.write_run_class_names(run_dir, names)
    return train, val, names


def layers_to_load(weights, train_layers, num_classes):
    """skip_layer for the pretrained file: a trained layer whose shape cannot fit it."""
    if weights == alexnet.RANDOM_WEIGHTS:
        return list(alexnet.LAYER_NAMES)
    if not os.path.isfile(weights):
        raise RunError('no pretrained weights at %s: %s; or pass --weights none to train '
                       'from scratch' % (weights, weight_files.GET_WEIGHTS_HINT))
    file_layers = weight_files.load_weights(weights, expected=alexnet.expected_weight_shapes)
    expected = alexnet.expected_weight_shapes(num_classes)
    skip = []
    for layer in train_layers:
        found = file_layers.get(layer)
        if found is None or tuple(found[0].shape) != expected[layer][0]:
            skip.append(layer)   # e.g. fc8: 1000 ImageNet classes, here 2: starts new
    return skip


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description="Fine-tune AlexNet's last layers on a folder of labelled photos.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument('--data', default='data/PetImages',
                        help='a folder (one sub-folder per class, or Kaggle\'s cat.1.jpg '
                             'names) or a text list of "path label" lines')
    parser.add_argument('--val-fraction', type=float, default=0.1,
                        help='share of each class held out for validation')
    parser.add_argument('--weights', default=alexnet.DEFAULT_WEIGHTS_PATH,
                        help="pretrained .npy/.npz; 'none' trains from random weights")
    parser.add_argument('--train-layers', default='fc6,fc7,fc8',
                        help='comma list of the layers that learn; the rest stay frozen')
    parser.add_argument('--epochs', type=int, default=10, help='total epochs of the run')
    parser.add_argument('--batch-size', type=int, default=128)
    parser.add_argument('--learning-rate', type=float, default=0.01)
    parser.add_argument('--momentum', type=float, default=0.9)
    parser.add_argument('--weight-decay', type=float, default=0.0005)
    parser.add_argument('--keep-prob', type=float, default=0.5,
                        help='dropout keep probability while training (1.0 when evaluating)')
    parser.add_argument('--log-dir', default='logs', help='where run folders go')
    parser.add_argument('--run-name', default=None,
                        help='the run folder under --log-dir (default: the date and time)')
    parser.add_argument('--max-steps', type=int, default=None,
                        help='stop each epoch after this many steps (smoke tests)')
    parser.add_argument('--summary-every', type=int, default=10,
                        help='write training summaries every this many steps')
    parser.add_argument('--keep-checkpoints', type=int, default=2,
                        help='epoch checkpoints kept for --resume (each holds every variable '
                             'and the momentum: about 460 MB when training fc6-fc8)')
    parser.add_argument('--resume', action='store_true',
                        help='continue the last checkpoint of --run-name (default: latest run)')
    parser.add_argument('--seed', type=int, default=0, help='for the split, shuffling, init')
    parser.add_argument('--no-progress', action='store_true', help='no progress bars')
    parser.add_argument('--cache-features', action='store_true',
                        help='run the frozen layers once per image view, keep their output on '
                             'disk (<log-dir>/.feature-cache) and train only the head on it; '
                             'needs every trained layer after the last frozen one (e.g. '
                             'fc6,fc7,fc8 or fc7,fc8), else trains the naive way')
    parser.add_argument('--cache-decoded', action='store_true',
                        help='keep the photos decoded and scaled to 256 in '
                             '<log-dir>/.decoded-cache after the first epoch, so later epochs '
                             'skip JPEG decoding (about 0.25 MB a photo; shuffles within a '
                             'window of %d photos)' % datagenerator.DECODED_SHUFFLE_IMAGES)
    parser.add_argument('--cache-views', default=feature_cache.TEN_CROPS,
                        help="with --cache-features: views cached per training image, "
                             "'%s' (the paper's 4 corners + center and their mirrors) or a "
                             "number N of random augmented crops; one is drawn per epoch"
                             % feature_cache.TEN_CROPS)
    args = parser.parse_args(argv)
    args.train_layers = [name.strip() for name in args.train_layers.split(',') if name.strip()]
    unknown = [name for name in args.train_layers if name not in alexnet.LAYER_NAMES]
    if unknown or not args.train_layers:
        parser.error('--train-layers: unknown %s; choose from %s'
                     % (', '.join(unknown) or 'nothing', ','.join(alexnet.LAYER_NAMES)))
    for name in ('epochs', 'batch_size', 'keep_checkpoints'):
        if getattr(args, name) < 1:
            parser.error('--%s must be at least 1' % name.replace('_', '-'))
    if not 0 < args.keep_prob <= 1:
        parser.error('--keep-prob must be in (0, 1]')
    try:
        args.cache_views = feature_cache.parse_views(args.cache_views)
    except ValueError as err:
        parser.error('--cache-views: %s' % err)
    return args


def main(argv=None):
    args = parse_args(argv)
    tf.logging.set_verbosity(tf.logging.ERROR)
    tf.disable_v2_behavior()
    try:
        return run(args)
    except (RunError, datagenerator.DatasetError, weight_files.WeightFileError) as err:
        print('error: %s' % err, file=sys.stderr)
        return 2


def run(args):
    progress = not args.no_progress
    run_dir = resolve_run(args.log_dir, args.run_name, args.resume)
    train, val, names = prepare_data(args.data, run_dir, args.val_fraction, args.seed, progress)
    skip_layer = layers_to_load(args.weights, args.train_layers, len(names))
    steps_per_epoch = int(math.ceil(len(train) / args.batch_size))
    if args.max_steps:
        steps_per_epoch = min(steps_per_epoch, args.max_steps)
    checkpoint = alexnet.checkpoint_of(run_dir) if args.resume else None
    start_epoch = int(tf.train.load_variable(checkpoint, 'epoch')) if checkpoint else 0
    if start_epoch >= args.epochs:
        print('%s has already trained %d epochs; ask for more with --epochs' % (run_dir, start_epoch))
        return 0

    print('run %s: %d classes (%s), %d training and %d validation images'
          % (run_dir, len(names), ', '.join(names), len(train), len(val)))
    if len(train) + len(val) < SMALL_DATASET:
        print('note: %d photos only test that the pipeline runs end to end; they cannot '
              'train a classifier. For the real cats vs dogs (25,000 photos): '
              '`python download.py petimages`, then --data data/PetImages'
              % (len(train) + len(val)))
    if args.weights == alexnet.RANDOM_WEIGHTS:
        print('no pretrained weights (--weights none): every layer starts random and only %s '
              'train; for the pretrained ones: `python download.py weights`'
              % ','.join(args.train_layers))
    else:
        print('pretrained weights from %s; training %s (new: %s), frozen: %s'
              % (args.weights, ','.join(args.train_layers), ','.join(skip_layer) or 'none',
                 ','.join(n for n in alexnet.LAYER_NAMES if n not in args.train_layers)))

    cache_from = None
    if args.cache_features:
        cache_from, reason = feature_cache.head_start(args.train_layers)
        if cache_from is None:
            print('note: --cache-features does not apply (%s); training the naive way' % reason)

    settings = {name: getattr(args, name) for name in
                ('batch_size', 'learning_rate', 'momentum', 'weight_decay', 'keep_checkpoints')}
    if args.cache_decoded:
        settings['decoded_cache'] = os.path.join(args.log_dir, '.decoded-cache')
    with tf.Graph().as_default():
        graph = Graph(train, val, len(names), args.train_layers, skip_layer,
                      args.weights, settings, args.seed, start_epoch, cache_from,
                      args.cache_views)
        with tf.Session() as session:
            train_writer = tf.summary.FileWriter(os.path.join(run_dir, 'train'), session.graph)
            val_writer = tf.summary.FileWriter(os.path.join(run_dir, 'validation'))
            session.run(graph.init)
            if checkpoint:
                graph.saver.restore(session, checkpoint)
                # The savers take over the run's earlier checkpoints, so that they
                # still keep only the last few (and one best) across resumes.
                for saver, folder in ((graph.saver, 'checkpoints'), (graph.best_saver, 'best')):
                    state = tf.train.get_checkpoint_state(os.path.join(run_dir, folder))
                    if state:
                        saver.recover_last_checkpoints(list(state.all_model_checkpoint_paths))
                print('resumed from %s (epoch %d, step %d)'
                      % (checkpoint, start_epoch, session.run(graph.global_step)))
            elif args.weights != alexnet.RANDOM_WEIGHTS:
                graph.model.load_initial_weights(session)
            session.graph.finalize()
            check_disk_space(graph, run_dir, args.keep_checkpoints)
            if graph.cache:
                prepare_cache(session, graph, os.path.join(
                    os.path.dirname(os.path.abspath(run_dir)), '.feature-cache'), progress)
            code = train_loop(session, graph, args, run_dir, start_epoch, steps_per_epoch,
                              train_writer, val_writer, progress)
            train_writer.close()
            val_writer.close()
            if code == 0:
                finish(session, graph, run_dir, names)
    return code


def prepare_cache(session, graph, cache_root, progress):
    """Builds the cached features for the loaded weights, or reuses a complete cache."""
    started = time.time()
    folder = graph.cache.prepare(session, graph.model, cache_root, progress)
    print('feature cache %s %s (%.0f MB, %d views per training image) in %.1fs'
          % ('built in' if graph.cache.built else 'reused:', folder,
             graph.cache.size_bytes() / 2 ** 20,
             feature_cache.views_per_image(graph.cache.views), time.time() - started))


def train_loop(session, graph, args, run_dir, start_epoch, steps_per_epoch,
               train_writer, val_writer, progress):
    checkpoints = os.path.join(run_dir, 'checkpoints')
    metrics_path = os.path.join(run_dir, 'metrics.csv')
    best = best_accuracy(metrics_path)
    session.run(graph.train_iterator.initializer)
    handle = session.run(graph.train_iterator.string_handle())
    for epoch in range(start_epoch, args.epochs):
        # A run stopped mid-epoch (Ctrl-C) does the rest of that epoch's steps.
        done = session.run(graph.global_step) - epoch * steps_per_epoch
        steps = max(steps_per_epoch - done, 0)
        started = time.time()
        try:
            train_loss, train_accuracy = train_epoch(
                session, graph, handle, steps, args.keep_prob, train_writer,
                args.summary_every, progress) if steps else (math.nan, math.nan)
        except KeyboardInterrupt:
            path = save_checkpoint(session, graph.saver, checkpoints,
                                   session.run(graph.global_step))
            print('\ninterrupted: saved %s; continue with --resume --run-name %s'
                  % (path, os.path.basename(run_dir)))
            return EXIT_INTERRUPTED
        except FloatingPointError as err:
            print('error: the loss became %s in epoch %d; lower --learning-rate (now %g) and '
                  'resume from the last good checkpoint with --resume --run-name %s'
                  % (err, epoch + 1, args.learning_rate, os.path.basename(run_dir)),
                  file=sys.stderr)
            return EXIT_DIVERGED
        val_loss, val_accuracy = validate(session, graph) if graph.val_iterator else (None, None)
        step = session.run(graph.global_step)
        session.run(graph.next_epoch)
        row = {'epoch': epoch + 1, 'step': step, 'train_loss': train_loss,
               'train_accuracy': train_accuracy, 'val_loss': val_loss,
               'val_accuracy': val_accuracy, 'learning_rate': args.learning_rate,
               'seconds': round(time.time() - started, 2)}
        if val_loss is not None:
            write_scalars(val_writer, step, {'loss': val_loss, 'accuracy': val_accuracy})
        save_checkpoint(session, graph.saver, checkpoints, step)
        if val_accuracy is not None and val_accuracy > best:
            best = val_accuracy
            save_checkpoint(session, graph.best_saver, os.path.join(run_dir, 'best'), step)
        append_metrics(metrics_path, row)
        print('epoch %d/%d: train loss %.4f acc %.3f%s (%.1fs)'
              % (epoch + 1, args.epochs, train_loss, train_accuracy,
                 '' if val_loss is None else ', validation loss %.4f acc %.3f'
                 % (val_loss, val_accuracy), row['seconds']))
    return 0


def finish(session, graph, run_dir, names):
    """Curves, and the weights in the safe format the other scripts load."""
    weights_path = os.path.join(run_dir, 'weights.npz')
    try:
        weight_files.save_npz(weights_path, graph.model.read_weights(session), class_names=names)
    except OSError as err:
        raise RunError('could not write %s (%s); the checkpoints are kept, and the other '
                       'scripts also take the run folder as --weights'
                       % (weights_path, failure_reason(err)))
    curves = visualize.draw_curves([run_dir], os.path.join(run_dir, 'curves.png'))
    print('curves: %s' % curves.path)
    print('weights: %s\n  classify photos with: python validate_alexnet_on_imagenet.py '
          '--weights %s PHOTO.jpg\n  watch the run with: tensorboard --logdir %s'
          % (weights_path, weights_path, os.path.dirname(run_dir) or '.'))


if __name__ == '__main__':
    sys.exit(main())
