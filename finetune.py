"""Fine-tune AlexNet on a new task, the course's cats vs dogs, or train it from scratch.

The pretrained bvlc_alexnet keeps the layers not in --train-layers frozen; the
trained ones (fc6, fc7, fc8 by default; `all` for every layer) learn the new
classes with the paper's recipe (section 5): stochastic gradient descent with
momentum 0.9, weight decay 0.0005, dropout 0.5 in fc6 and fc7, on augmented
crops (section 4.1, preprocessing.py).

    python finetune.py --data data/PetImages --run logs/pretrained
    python finetune.py --data data/PetImages --weights none --run logs/scratch   # all layers
    python finetune.py --resume --run logs/pretrained --epochs 15
    python finetune.py --data data/PetImages --devices 2                          # 2 GPUs
    python finetune.py --recipe paper --data ILSVRC2012/train \
        --val-images ILSVRC2012_img_val --val-labels val.txt --devices 8          # section 5
    tensorboard --logdir logs

A run lives in its folder (run_folder.py lists what it holds): TensorBoard
logs, checkpoints/ after every epoch (momentum included, for --resume), best/,
metrics.csv, curves.png, split.json, class_names.txt, run.json (the settings)
and, at the end, weights.npz for the other scripts. One process writes a run
at a time. `--resume` continues it exactly: epoch e's order, crops, colour
noise and dropout masks depend only on (seed, e, step), and a run interrupted
mid-epoch (Ctrl-C saves) skips what it already trained on, so a resumed run
ends with the weights an uninterrupted one would have.

Two ways to train, the same model and run folder either way:

* naive (the default): every step decodes photos, augments them and runs all
  eight layers forward, the trained ones backward;
* --cache-features: when every trained layer comes after the last frozen one
  (fc6,fc7,fc8 or fc7,fc8 or fc8), the frozen part runs once per image view and
  its output is kept on disk (feature_cache.py); every step then runs only the
  trained head on it. --cache-views picks the views per training image.

--cache-decoded (naive path) keeps the photos decoded and scaled to 256 on disk
after the first epoch, for machines where JPEG decoding cannot keep up (GPUs).

Exit status: 0 trained; 2 bad arguments, data or weights (one line says what to
do); 3 the loss stopped being finite (lower --learning-rate, then --resume);
130 interrupted by Ctrl-C (a checkpoint is saved: --resume continues).

Many devices (distribution.py): --devices N trains N replicas of the network
on this machine's GPUs, each on its share of every --batch-size batch (its rows,
with the dropout masks those rows have on one device), their gradients summed
by all-reduce before one update; a TF_CONFIG naming several workers does the
same across machines, worker 0 writing the run folder. The updates equal one
device's up to float rounding.

The learning rate is a variable of the checkpoint: constant by default; with
--lr-drops D it is divided by 10 after --lr-patience epochs without a gain of
--lr-min-gain in the validation error, at most D times (next_learning_rate).
--recipe paper is the paper's from-scratch run on ILSVRC-2012's folders.

Deviations from the paper: only the chosen layers train (fine-tuning, as the
course does); the paper divided the learning rate by hand when the validation
error stopped improving, here a rule with stated numbers does; its two GPUs
each held half of the kernels (model parallel), here every device holds the
whole network (data parallel).
"""
from __future__ import annotations

import argparse
import collections
import hashlib
import math
import os
import shutil
import sys
import time

import numpy as np
import cpu_kernels  # noqa: F401  (first: it chooses TensorFlow's CPU kernels)
import tensorflow.compat.v1 as tf
from tqdm import tqdm

import alexnet
import command_line
import datagenerator
import datasets
import distribution
import feature_cache
import figures
import inference
import preprocessing
import run_folder
import weight_files
from image_files import display_path

SMALL_DATASET = 100       # fewer photos than this: say it is a smoke run, not a classifier
FROM_SCRATCH_NOTE = 'started from RANDOM WEIGHTS (--weights none), no pretraining'
MAX_SEED = 2 ** 31 - 1
# A histogram summary reads at most this many values of a tensor: fc6's 37.7 million
# weights and their gradient took 4 s a summary on two cores (a step takes 0.7 s).
HISTOGRAM_VALUES = 2 ** 20
# Bytes of activations, their gradients and the input per image and trained step:
# measured peak RSS of batch-128 training (bench.py) is about 10 MB per image.
BYTES_PER_TRAINING_IMAGE = 12 * 2 ** 20

# The knobs of section 5, as one record.
Recipe = collections.namedtuple(
    'Recipe', 'learning_rate momentum weight_decay keep_prob batch_size')
# The paper's from-scratch run on ILSVRC-2012 (--recipe paper): what it changes
# from fine-tuning's defaults; every one can still be given on the command line.
PAPER_RECIPE = {'weights': inference.RANDOM_WEIGHTS, 'epochs': 90, 'lr_drops': 3,
                'classes': 'imagenet'}
DEFAULT_LEARNING_RATE = 0.01

# The learning-rate schedule, kept in every checkpoint: the rate, the best
# validation error so far, the epochs since it last improved, the divisions made.
ScheduleState = collections.namedtuple(
    'ScheduleState', 'learning_rate best_error epochs_without_gain drops')
SCHEDULE_DTYPES = (tf.float32, tf.float64, tf.int64, tf.int64)
# Divide by `factor` after `patience` epochs in a row without a gain of at least
# `min_gain` in the validation error, at most `max_drops` times.
PlateauRule = collections.namedtuple('PlateauRule', 'patience min_gain max_drops factor')


class RunError(Exception):
    """A problem the user must fix before training can go on; the message says how."""


# --- The learning-rate schedule (section 5) ---------------------------------

def next_learning_rate(state, val_error, rule):
    """The paper's "divide the learning rate by 10 when the validation error rate
    stopped improving with the current learning rate" (section 5), as a rule.

    An epoch whose validation error (0..1) is below the best so far by at least
    rule.min_gain improves; any other counts as one without gain. After
    rule.patience epochs without gain in a row, the rate is divided by
    rule.factor and the count starts again, at most rule.max_drops times in a
    run (the paper: 3 times in about 90 epochs; 0: a constant rate).

    Returns:
      (the ScheduleState after this epoch, what was decided, one line).
    """
    if val_error < state.best_error - rule.min_gain:
        return state._replace(best_error=val_error, epochs_without_gain=0), 'improved'
    waited = state.epochs_without_gain + 1
    if state.drops >= rule.max_drops:
        return state._replace(epochs_without_gain=waited), (
            'no gain (a constant rate: --lr-drops 0)' if not rule.max_drops else
            'no gain; rate kept (all %d divisions made)' % rule.max_drops)
    if waited < rule.patience:
        return state._replace(epochs_without_gain=waited), (
            'no gain of %g for %d of %d epochs' % (rule.min_gain, waited, rule.patience))
    rate = state.learning_rate / rule.factor
    return ScheduleState(rate, state.best_error, 0, state.drops + 1), (
        'divided by %g to %g: no gain of %g in %d epochs (division %d of %d)'
        % (rule.factor, rate, rule.min_gain, waited, state.drops + 1, rule.max_drops))


# --- The graph, in the Mechanics 101 steps: inference, loss, training, evaluation ---

def loss_fn(logits, labels, weight_decay, decayed_weights, batch_size=None, replicas=1):
    """Mean cross-entropy plus L2 weight decay on the given weights.

    The paper's update subtracts 0.0005 * lr * w each step: that is the gradient
    of weight_decay * sum(w^2) / 2, i.e. weight_decay * tf.nn.l2_loss(w).

    With replicas > 1 (data parallel), logits and labels are one replica's rows
    of a batch of batch_size, and the result is that replica's share: its
    cross-entropies summed and divided by batch_size, plus 1/replicas of the
    decay. The shares add up to the loss of the whole batch, and so do their
    gradients (the all-reduce sums them).

    Returns:
      (cross-entropy, total loss), scalars (with replicas: this replica's shares).
    """
    per_example = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=logits)
    if batch_size is None:
        cross_entropy = tf.reduce_mean(per_example)
    else:
        cross_entropy = tf.reduce_sum(per_example) / tf.cast(batch_size, tf.float32)
    decay = tf.add_n([tf.nn.l2_loss(w) for w in decayed_weights]) if decayed_weights else 0.0
    return cross_entropy, cross_entropy + weight_decay * decay / replicas


def training(loss, variables, learning_rate, momentum, global_step, colocate=False):
    """Momentum SGD on `variables` only: every other variable stays bit-identical.

    Under a tf.distribute strategy apply_gradients sums the replicas' gradients
    (all-reduce) and applies the sum once. tf.gradients, not the optimizer's
    compute_gradients: the latter would divide each replica's loss by the number
    of replicas, and loss_fn already gives each replica its share. gate_gradients
    as compute_gradients has it: an op's gradients are all computed before any is
    used, so fc8's update cannot overwrite fc8's weights while fc7's gradient is
    still reading them (TF 1.x variables are updated in place).
    colocate: compute each op's gradient on that op's device (a model on two devices).
    """
    optimizer = tf.train.MomentumOptimizer(learning_rate, momentum)
    gradients = list(zip(tf.gradients(loss, variables, gate_gradients=True,
                                      colocate_gradients_with_ops=colocate), variables))
    return optimizer.apply_gradients(gradients, global_step=global_step), gradients


def evaluation(logits, labels):
    """Number of correct top-1 predictions in the batch."""
    return tf.reduce_sum(tf.cast(tf.nn.in_top_k(logits, labels, 1), tf.int32))


class Trainer(object):
    """The training graph: the model fed by one epoch of input at a time, and its ops.

    Built once per run; every op is in a name scope that reads like a part of the
    paper, so that TensorBoard's graph shows input -> conv1..fc8 -> loss, train,
    evaluation, with summaries, checkpoints and load_weights one node each
    (tests/test_tensorboard.py checks the scopes in what TensorBoard serves).
    """

    def __init__(self, train_items, val_items, num_classes, recipe, train_layers,
                 skip_layer, weights_path, seed, cache_from=None,
                 cache_views=feature_cache.TEN_CROPS, decoded_cache=None, setup=None,
                 devices=None):
        """cache_from: None for the naive path, else the first trained layer (fc6,
        fc7 or fc8), whose input comes from cached features (feature_cache.py).
        setup: None for one device, else distribution.choose's Setup: a
        tf.distribute strategy whose replicas share every batch.
        devices: None, or two devices for the paper's two-GPU layout (AlexNet's);
        with one replica only."""
        tf.set_random_seed(seed)
        self.cache = None
        self.train_layers = list(train_layers)
        self.setup = setup or distribution.one_device()
        self.strategy = self.setup.strategy
        self.replicas = self.setup.replicas
        with tf.name_scope('input'):
            # Which epoch to read, and how many of its photos a resumed run skips.
            self.epoch_to_read = tf.placeholder(tf.int64, [], name='epoch')
            self.skip = tf.placeholder_with_default(tf.constant(0, tf.int64), [], name='skip')
            if cache_from is None:
                # Naive path: batches of decoded, augmented photos [N, 227, 227, 3].
                train_data = datagenerator.make_dataset(
                    train_items, recipe.batch_size, training=True, seed=seed,
                    epoch=self.epoch_to_read, skip=self.skip, decoded_cache=decoded_cache)
                val_data = (datagenerator.make_dataset(val_items, recipe.batch_size,
                                                       training=False,
                                                       decoded_cache=decoded_cache)
                            if val_items else None)
            else:
                # Cached path: batches of the frozen part's output [N, D], one view per image.
                self.cache = feature_cache.FeatureCache(
                    train_items, val_items, cache_from, cache_views, recipe.batch_size, seed,
                    self.epoch_to_read, self.skip)
                train_data, val_data = self.cache.train_data, self.cache.val_data
            # One input, two sources: a string handle picks the training epoch or
            # the validation pass (the TF 1.x "feedable iterator").
            self.handle = tf.placeholder(tf.string, [], name='input_handle')
            iterator = tf.data.Iterator.from_string_handle(
                self.handle, tf.data.get_output_types(train_data),
                tf.data.get_output_shapes(train_data))
            inputs, labels = iterator.get_next()     # images or features, labels [N]
            self.train_iterator = tf.data.make_initializable_iterator(train_data)
            self.val_iterator = (tf.data.make_initializable_iterator(val_data)
                                 if val_data is not None else None)
            # Fed with every training step, like the handle.
            self.keep_prob = tf.placeholder_with_default(1.0, [], name='keep_prob')
            # Dropout masks are a function of (seed, step).
            self.dropout_key = tf.placeholder_with_default(
                tf.constant([seed, 0], tf.int64), [2], name='dropout_key')

        images = self.cache.images if self.cache else inputs
        with tf.name_scope('input/'):
            self.batch = tf.shape(labels)[0]          # the whole batch, all replicas'
        with self.strategy.scope():
            # The variables, once. On one device this model is also the one that
            # trains; with replicas it loads, saves, exports and fills the feature
            # cache, and every replica runs a copy of its graph on its variables.
            self.model = alexnet.AlexNet(images, self.keep_prob, num_classes, skip_layer,
                                         weights_path, dropout_seed=self.dropout_key,
                                         devices=devices)
            self.global_step = tf.train.get_or_create_global_step()
            self._epoch_state(recipe.learning_rate)

            def replica_step(inputs, labels):
                model, inputs, labels = self._replica(images, inputs, labels, num_classes,
                                                      skip_layer, weights_path)
                # Naive: all eight layers run at every step. Cached: the full model
                # holds every variable (loaded, checkpointed and exported as in the
                # naive path) and computes the cache from the views; each step runs
                # only the head (its ops in one scope, head/fc7, ..., beside the full
                # model's in TensorBoard).
                if self.cache:
                    with tf.name_scope('head'):
                        logits = model.head(inputs, cache_from)
                else:
                    logits = model.fc8
                with tf.name_scope('loss'):
                    cross_entropy, loss = loss_fn(
                        logits, labels, recipe.weight_decay,
                        model.variables(train_layers, biases=False),
                        batch_size=None if self.replicas == 1 else self.batch,
                        replicas=self.replicas)
                with tf.name_scope('evaluation'):
                    correct = evaluation(logits, labels)
                with tf.name_scope('train'):
                    train_op, gradients = training(loss, model.variables(train_layers),
                                                   self.learning_rate, recipe.momentum,
                                                   self.global_step,
                                                   colocate=devices is not None)
                return train_op, cross_entropy, loss, correct, [g for g, _ in gradients]

            train_ops, cross_entropy, loss, correct, gradients = distribution.run(
                self.strategy, replica_step, args=(inputs, labels))
            # The whole batch's numbers: sums of the replicas' shares, in the scopes
            # the (first) replica's ops opened ('train/' reopens the scope 'train').
            with tf.name_scope('train/'):
                self.train_op = tf.group(*self.strategy.experimental_local_results(train_ops))
            with tf.name_scope('loss/'):
                self.cross_entropy = distribution.total(self.strategy, cross_entropy)
                self.loss = distribution.total(self.strategy, loss)
            with tf.name_scope('evaluation/'):
                self.correct = distribution.total(self.strategy, correct)
                self.accuracy = (tf.cast(self.correct, tf.float32)
                                 / tf.cast(self.batch, tf.float32))
        # Histograms show the first replica's gradient (all of it on one device).
        self.gradients = [(distribution.first_replica(self.strategy, gradient), variable)
                          for gradient, variable in zip(gradients,
                                                        self.model.variables(train_layers))]
        with tf.name_scope('summaries'):
            self.summaries = self._summaries(None if self.cache else inputs, self.gradients)
        self.init = tf.global_variables_initializer()
        with tf.name_scope('checkpoints'):
            # Checkpoints hold every variable, momentum included, so a resume is exact;
            # best/ holds what evaluation and export need: the weights, step and epoch.
            # Relative paths in the `checkpoint` index: the run folder can move.
            self.saver = tf.train.Saver(max_to_keep=None, save_relative_paths=True,
                                        name='latest')
            self.best_saver = tf.train.Saver(
                self.model.variables() + [self.global_step, self.epoch], max_to_keep=1,
                save_relative_paths=True, name='best')

    def _replica(self, images, inputs, labels, num_classes, skip_layer, weights_path):
        """(model, inputs, labels) of this replica: on one device the whole batch and
        self.model; else its rows of the batch and a copy of the graph on them."""
        if self.replicas == 1:
            return self.model, inputs, labels
        first, end = distribution.rows_of_replica(self.batch, distribution.replica_id(self.setup),
                                                  self.replicas)
        inputs, labels = inputs[first:end], labels[first:end]
        with tf.variable_scope(tf.get_variable_scope(), reuse=True):
            # Its dropout masks are its rows of the whole batch's: the same masks as
            # on one device, whatever the number of replicas.
            model = alexnet.AlexNet(images if self.cache else inputs, self.keep_prob,
                                    num_classes, skip_layer, weights_path,
                                    dropout_seed=self.dropout_key,
                                    replica_rows=(first, self.batch))
        return model, inputs, labels

    def _epoch_state(self, learning_rate):
        """Where the run is, saved in every checkpoint: finished epochs, the sums of
        the epoch in progress (a run interrupted mid-epoch resumes from them), and
        the learning-rate schedule (ScheduleState)."""
        with tf.variable_scope('epoch_state'):
            self.epoch = tf.get_variable('epoch', [], tf.int64, tf.zeros_initializer(),
                                         trainable=False)
            self.state = collections.OrderedDict(
                (name, tf.get_variable(name, [], dtype, tf.zeros_initializer(), trainable=False))
                for name, dtype in (('seen', tf.int64), ('steps', tf.int64),
                                    ('loss_sum', tf.float64), ('correct', tf.int64)))
            self.state_values = {name: tf.placeholder(v.dtype.base_dtype, [])
                                 for name, v in self.state.items()}
            self.set_state = tf.group(*[tf.assign(v, self.state_values[name])
                                        for name, v in self.state.items()])
            self.next_epoch = tf.assign_add(self.epoch, 1)
            start = ScheduleState(learning_rate, math.inf, 0, 0)
            self.schedule = collections.OrderedDict(
                (name, tf.get_variable(name, [], dtype, tf.constant_initializer(value),
                                       trainable=False))
                for name, dtype, value in zip(ScheduleState._fields, SCHEDULE_DTYPES, start))
            self.schedule_values = {name: tf.placeholder(v.dtype.base_dtype, [])
                                    for name, v in self.schedule.items()}
            self.set_schedule = tf.group(*[tf.assign(v, self.schedule_values[name])
                                           for name, v in self.schedule.items()])
        # The optimizer reads the rate from this variable: the schedule changes it
        # between epochs, and a resumed run goes on with the rate it had.
        self.learning_rate = self.schedule['learning_rate']

    def read_schedule(self, session):
        return ScheduleState(*session.run(list(self.schedule.values())))

    def write_schedule(self, session, state):
        session.run(self.set_schedule, {self.schedule_values[name]: value
                                        for name, value in zip(self.schedule, state)})

    def disk_needed(self, keep_checkpoints):
        """Bytes a whole run writes at most: the kept checkpoints plus the one being
        written (older ones are deleted after), best/ and weights.npz."""
        def size(variables):
            return sum(v.shape.num_elements() * v.dtype.base_dtype.size for v in variables)
        weights = size(self.model.variables())
        return (keep_checkpoints + 1) * size(tf.global_variables()) + 2 * weights

    def _summaries(self, images, gradients):
        """The per-step summaries, merged into one op.

        Built with the raw summary ops, whose tags are given, not taken from the name
        scope: the tags read batch/loss, fc6/weights/value, ... while the ops stay in
        the caller's scope, one node in TensorBoard's graph.
        """
        summaries = [tf.raw_ops.ScalarSummary(tags='batch/loss', values=self.cross_entropy),
                     tf.raw_ops.ScalarSummary(tags='batch/accuracy', values=self.accuracy),
                     tf.raw_ops.ScalarSummary(tags='learning_rate', values=self.learning_rate)]
        for gradient, variable in gradients:
            summaries.append(tf.raw_ops.HistogramSummary(tag=variable.op.name + '/value',
                                                         values=histogram_sample(variable)))
            summaries.append(tf.raw_ops.HistogramSummary(tag=variable.op.name + '/gradient',
                                                         values=histogram_sample(gradient)))
        if images is not None:
            # The network's input as a person sees it: de-normalised RGB.
            shown = tf.numpy_function(preprocessing.model_input_to_rgb, [images[:3]], tf.uint8)
            shown.set_shape([None, preprocessing.IMAGE_SIZE, preprocessing.IMAGE_SIZE, 3])
            summaries.append(tf.raw_ops.ImageSummary(tag='input', tensor=shown, max_images=3))
        return tf.summary.merge(summaries)


def histogram_sample(values):
    """Every k-th value of a tensor, k the smallest that leaves at most HISTOGRAM_VALUES
    (k = 36 for fc6's weights, 1 for the biases): the same distribution to the eye in
    TensorBoard's histograms, at a 36th of the cost. Its count is the sample's."""
    size = values.shape.num_elements()
    stride = -(-size // HISTOGRAM_VALUES)                       # ceil(size / HISTOGRAM_VALUES)
    flat = tf.reshape(values, [-1])
    return flat if stride == 1 else flat[::stride]


# --- Running it -------------------------------------------------------------

EpochSums = collections.namedtuple('EpochSums', 'seen steps loss_sum correct')


class Interrupted(Exception):
    """Ctrl-C during an epoch; `sums` holds what the epoch had trained on."""

    def __init__(self, sums):
        super(Interrupted, self).__init__('interrupted')
        self.sums = sums


def train_epoch(session, trainer, handle, steps, keep_prob, seed, sums, writer, summary_every,
                progress):
    """Runs up to `steps` training steps of the current epoch, adding to `sums`;
    writer: where the step summaries go, or None (not this process's job).

    Returns the new EpochSums. Raises FloatingPointError when the loss is not
    finite, Interrupted on Ctrl-C.
    """
    bar = tqdm(range(steps), disable=not progress, unit='batch', leave=False)
    fetches = [trainer.train_op, trainer.cross_entropy, trainer.correct, trainer.batch]
    step = session.run(trainer.global_step)     # counted here from now on: one run per step
    try:
        for index in bar:
            last = index == steps - 1
            # Only a writer (one process of a cluster) fetches the summaries.
            summarise = writer is not None and (step % summary_every == 0 or last)
            feed = {trainer.handle: handle, trainer.keep_prob: keep_prob,
                    trainer.dropout_key: [seed, step]}
            try:
                # The summaries come from the same run as the training step.
                results = session.run(fetches + ([trainer.summaries] if summarise else []), feed)
            except tf.errors.OutOfRangeError:      # photos that stopped decoding: epoch ends
                break
            except tf.errors.InvalidArgumentError as err:
                if 'Nan in summary' in err.message:    # a histogram met the diverged weights
                    raise FloatingPointError('nan')
                raise
            _, loss, batch_correct, batch = results[:4]
            if not math.isfinite(loss):
                raise FloatingPointError(loss)
            if summarise:
                writer.add_summary(results[4], step + 1)
            step += 1
            sums = EpochSums(sums.seen + int(batch), sums.steps + 1,
                             sums.loss_sum + float(loss) * int(batch),
                             sums.correct + int(batch_correct))
            bar.set_postfix(loss='%.4f' % (sums.loss_sum / sums.seen),
                            acc='%.3f' % (sums.correct / sums.seen))
    except KeyboardInterrupt:
        # A step either ran whole or not at all: sums match the variables.
        raise Interrupted(sums) from None
    finally:
        bar.close()
    return sums


def validate(session, trainer):
    """(mean loss, accuracy) over the whole validation split, dropout off."""
    session.run(trainer.val_iterator.initializer)
    handle = session.run(trainer.val_iterator.string_handle())
    total_loss, correct, seen = 0.0, 0, 0
    while True:
        try:
            loss, batch_correct, batch = session.run(
                [trainer.cross_entropy, trainer.correct, trainer.batch], {trainer.handle: handle})
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


def save_checkpoint(session, saver, folder, step, keep=None):
    """Saves a checkpoint, then deletes all but the newest `keep`; a failed save
    (a full disk) leaves no partial file behind and keeps the earlier ones."""
    try:
        os.makedirs(folder, exist_ok=True)
        path = saver.save(session, os.path.join(folder, run_folder.CHECKPOINT_NAME),
                          global_step=step)
    except (tf.errors.OpError, OSError) as err:
        for partial in os.listdir(folder) if os.path.isdir(folder) else ():
            if '.tempstate' in partial:
                os.remove(os.path.join(folder, partial))
        raise RunError('could not save the checkpoint of step %d in %s (%s); the earlier '
                       'checkpoints are kept: free some disk space or lower --keep-checkpoints, '
                       'then continue with --resume' % (step, display_path(folder),
                                                        failure_reason(err)))
    if keep:
        # Found by their files (not the saver's memory), so resumed runs count too.
        for old in run_folder.checkpoint_prefixes(folder)[keep:]:
            for part in os.listdir(folder):
                if part.startswith(os.path.basename(old) + '.'):
                    os.remove(os.path.join(folder, part))
    return path


def failure_reason(err):
    """One line saying why a write failed."""
    text = getattr(err, 'message', None) or str(err)
    if 'No space left on device' in text:
        return 'no space left on the disk'
    return command_line.one_line(err)


def check_disk_space(trainer, run_dir, keep_checkpoints):
    """Warns up front when the run's checkpoints will not fit on the disk."""
    needed = trainer.disk_needed(keep_checkpoints)
    free = shutil.disk_usage(run_dir).free
    print('disk: this run writes up to %.0f MB (%d checkpoints, best/ and weights.npz); '
          '%.0f MB are free' % (needed / 2 ** 20, keep_checkpoints, free / 2 ** 20))
    if free < needed:
        print('warning: %s has %.0f MB free, and this run writes up to %.0f MB of checkpoints '
              'and weights; free some space, lower --keep-checkpoints (now %d) or pick another '
              '--run' % (display_path(run_dir), free / 2 ** 20, needed / 2 ** 20,
                         keep_checkpoints), file=sys.stderr)


def weights_digest(session, trainer):
    """A short hash of the trained layers' values: equal on workers that agree."""
    digest = hashlib.sha1()
    for layer, arrays in sorted(trainer.model.read_weights(session, trainer.train_layers).items()):
        for array in arrays:
            digest.update(layer.encode('utf-8') + np.ascontiguousarray(array).tobytes())
    return digest.hexdigest()[:16]


def non_finite_layers(session, model, layer_names):
    """The trained layers whose weights or biases hold NaN or infinity."""
    values = model.read_weights(session, layer_names)
    return [name for name in layer_names
            if not all(np.all(np.isfinite(array)) for array in values[name])]


# --- Setting up a run ---------------------------------------------------------

def resolve_run(run, resume, log_dir='logs', writer=True):
    """The run folder: a new one, or for --resume the given or the latest one.
    writer=False: a worker that only reads it (the chief may have started it)."""
    if run is None and resume:
        latest = run_folder.latest_run(log_dir)
        if latest is None:
            raise RunError('nothing to resume: no run with checkpoints in %s; pass --run'
                           % log_dir)
        return latest
    run = run or os.path.join(log_dir, time.strftime('%Y%m%d-%H%M%S'))
    has_checkpoints = bool(run_folder.checkpoint_prefixes(
        os.path.join(run, run_folder.CHECKPOINTS_DIR)))
    if resume and not has_checkpoints:
        raise RunError('nothing to resume in %s: it has no checkpoints; drop --resume to '
                       'start it' % display_path(run))
    if (writer and not resume and os.path.isdir(run)
            and set(os.listdir(run)) - {run_folder.LOCK_FILE}):
        raise RunError('%s already holds a run%s; pass --resume to continue it, or choose '
                       'another --run' % (display_path(run), '' if has_checkpoints else
                                          ' (it never finished an epoch: delete it to start '
                                          'over)'))
    return run


def prepare_data(data, run_dir, val_fraction, seed, progress, imagenet=False, val_set=None,
                 write=True):
    """The run's split (reused on --resume), with unreadable files left out.

    imagenet: data is ILSVRC-2012's train/ (a folder per WordNet id, labels in
    bvlc_alexnet's order); val_set: (image folder, ground-truth file) of a
    separate validation set (evaluate.py's format) instead of a held-out share.
    write: False for a worker that does not write the run folder.
    """
    split_path = os.path.join(run_dir, run_folder.SPLIT_FILE)
    if os.path.exists(split_path):
        train, val, names = datasets.read_split(split_path)
    else:
        found = datasets.find_imagenet(data) if imagenet else datasets.find_dataset(data)
        if found.skipped:
            print('%d files or folders left out of %s:' % (len(found.skipped), display_path(data)))
            datasets.report_skipped(found.skipped)
        names = found.class_names
        if imagenet:
            missing = len(names) - len({label for _, label in found.items})
            if missing:
                print('note: %d of the %d ILSVRC-2012 classes have no folder of images in %s; '
                      'fc8 keeps all %d outputs, and those never see an example'
                      % (missing, len(names), display_path(data), len(names)))
        if val_set:
            train, val = found.items, datasets.imagenet_items(*val_set)
            highest = max(label for _, label in val)
            if highest >= len(names):
                raise RunError('%s has label %d, and ILSVRC-2012 has %d classes (0..%d, '
                               "bvlc_alexnet's order); see evaluate.py --help for its formats"
                               % (display_path(val_set[1]), highest, len(names), len(names) - 1))
        else:
            train, val = datasets.split_dataset(found.items, val_fraction, seed)
    cache_dir = os.path.join(os.path.dirname(os.path.abspath(run_dir)), '.scan-cache')
    good, bad = datasets.scan_images(train + val, cache_dir=cache_dir, progress=progress,
                                     report=True)
    good = set(good)
    train = [item for item in train if item in good]
    val = [item for item in val if item in good]
    if not train:
        raise RunError('no readable training images in %s' % display_path(data))
    if write:
        datasets.write_split(split_path, train, val, names)
        if bad:
            run_folder.write_bad_files(run_dir, bad)
        run_folder.write_class_names(run_dir, names)
    return train, val, names


def layers_to_load(weights, train_layers, num_classes):
    """skip_layer for the pretrained file: a trained layer whose shape cannot fit it."""
    if weights == inference.RANDOM_WEIGHTS:
        return list(alexnet.LAYER_NAMES)
    if not os.path.isfile(weights):
        raise RunError('no pretrained weights at %s: %s; or pass --weights none to train '
                       'from scratch' % (display_path(weights), weight_files.GET_WEIGHTS_HINT))
    file_layers = weight_files.load_weights(weights, expected=alexnet.expected_weight_shapes)
    expected = alexnet.expected_weight_shapes(num_classes)
    skip = []
    for layer in train_layers:
        found = file_layers.get(layer)
        if found is None or tuple(found[0].shape) != expected[layer][0]:
            skip.append(layer)   # e.g. fc8: 1000 ImageNet classes, here 2: starts new
    return skip


# --- The command line -------------------------------------------------------------

def parse_train_layers(text):
    if text.strip() == 'all':
        return list(alexnet.LAYER_NAMES)
    names = [name.strip() for name in text.split(',') if name.strip()]
    unknown = [name for name in names if name not in alexnet.LAYER_NAMES]
    if unknown or not names:
        raise ValueError('unknown layer %s; give a comma list of %s, or all'
                         % (', '.join(unknown) or "''", ','.join(alexnet.LAYER_NAMES)))
    return [name for name in alexnet.LAYER_NAMES if name in names]


def parse_args(argv=None):
    parser = command_line.ArgumentParser(
        description="Fine-tune AlexNet's last layers (or train all of them) on a folder of "
                    'labelled photos.')
    parser.add_argument('--recipe', choices=('finetune', 'paper'), default='finetune',
                        help='paper: the from-scratch run of section 5 on ILSVRC-2012, i.e. the '
                             'defaults --weights none --epochs 90 --lr-drops 3 --classes '
                             'imagenet (flags given still win)')
    parser.add_argument('--data', default='data/PetImages',
                        help='a folder (one sub-folder per class, or Kaggle\'s cat.1.jpg '
                             'names) or a text list of "path label" lines; with --classes '
                             'imagenet, ILSVRC-2012\'s train/ (a folder per WordNet id)')
    parser.add_argument('--classes', choices=('folders', 'imagenet'), default='folders',
                        help="folders: the data's classes, sorted; imagenet: the 1000 "
                             "ILSVRC-2012 classes in bvlc_alexnet's order, one folder per "
                             'WordNet id (n01440764, ...)')
    parser.add_argument('--val-images', default=None,
                        help='with --classes imagenet: a folder of validation images '
                             '(ILSVRC2012_img_val) instead of holding out --val-fraction')
    parser.add_argument('--val-labels', default=None,
                        help='the ground truth of --val-images, as evaluate.py reads it '
                             "(Caffe's val.txt, or one label or WordNet id per line)")
    parser.add_argument('--run', default=None,
                        help='the run folder (default: logs/<date-time>; with --resume: the '
                             'latest run in logs/)')
    parser.add_argument('--resume', action='store_true',
                        help='continue the run from its newest checkpoint')
    parser.add_argument('--val-fraction', type=float, default=0.1,
                        help='share of each class held out for validation')
    command_line.add_weights(parser, alexnet.DEFAULT_WEIGHTS_PATH,
                             "the pretrained weights ('none': all layers start random)")
    parser.add_argument('--train-layers', default=None,
                        help='comma list of the layers that learn, or all; the rest stay '
                             'frozen (default: fc6,fc7,fc8; all with --weights none)')
    parser.add_argument('--epochs', type=command_line.positive_int, default=10,
                        help='total epochs of the run')
    command_line.add_batch_size(parser, 128, 'images per training step, split across '
                                             'the --devices (the global batch)')
    parser.add_argument('--devices', type=command_line.positive_int, default=None,
                        help='train on this many GPUs of this machine at once (data parallel: '
                             'each takes its share of every batch); without GPUs, logical CPU '
                             'devices. Default 1; with TF_CONFIG (several machines), all of '
                             "each worker's GPUs")
    parser.add_argument('--learning-rate', type=float, default=argparse.SUPPRESS,
                        help='the starting learning rate (default %g); given with --resume, '
                             'it replaces the rate the run had reached' % DEFAULT_LEARNING_RATE)
    parser.add_argument('--lr-drops', type=int, default=0,
                        help='divide the learning rate by 10 at most this many times, when the '
                             'validation error stops improving (0: a constant rate)')
    parser.add_argument('--lr-patience', type=command_line.positive_int, default=5,
                        help='... after this many epochs in a row without a gain of '
                             '--lr-min-gain')
    parser.add_argument('--lr-min-gain', type=float, default=0.001,
                        help='the least fall of the validation error (top-1, 0..1) that counts '
                             'as improving')
    parser.add_argument('--momentum', type=float, default=0.9)
    parser.add_argument('--weight-decay', type=float, default=0.0005)
    parser.add_argument('--keep-prob', type=float, default=0.5,
                        help='dropout keep probability while training (1.0 when evaluating)')
    parser.add_argument('--max-steps', type=command_line.positive_int, default=None,
                        help='stop each epoch after this many steps (smoke tests)')
    parser.add_argument('--summary-every', type=command_line.positive_int, default=10,
                        help='write per-step summaries every this many steps (and at the end '
                             'of each epoch)')
    parser.add_argument('--keep-checkpoints', type=command_line.positive_int, default=2,
                        help='epoch checkpoints kept for --resume (each holds every variable '
                             'and the momentum: about 460 MB when training fc6-fc8)')
    command_line.add_seed(parser, 'for the split, the order, the crops, dropout, new layers')
    command_line.add_progress(parser)
    command_line.add_model_parallel(parser)
    parser.add_argument('--cache-features', action='store_true',
                        help='run the frozen layers once per image view, keep their output on '
                             'disk (<logs>/.feature-cache) and train only the head on it; '
                             'needs every trained layer after the last frozen one (e.g. '
                             'fc6,fc7,fc8 or fc7,fc8), else trains the naive way')
    parser.add_argument('--cache-decoded', action='store_true',
                        help='keep the photos decoded and scaled to 256 in '
                             '<logs>/.decoded-cache after the first epoch, so later epochs '
                             'skip JPEG decoding (about 0.25 MB a photo; shuffles within a '
                             'window of %d photos)' % datagenerator.DECODED_SHUFFLE_IMAGES)
    parser.add_argument('--cache-views', default=feature_cache.AUTO,
                        help="with --cache-features: views cached per training image, "
                             "'%s' (the paper's 4 corners + center and their mirrors), a "
                             "number N of random augmented crops, or '%s': ten crops with a "
                             'GPU, %d random crops on a CPU (each view is a forward pass); one '
                             'is drawn per epoch' % (feature_cache.TEN_CROPS, feature_cache.AUTO,
                                                     feature_cache.CPU_VIEWS))
    # A recipe changes the defaults; flags given on the command line still win.
    if parser.parse_known_args(argv)[0].recipe == 'paper':
        parser.set_defaults(**PAPER_RECIPE)
    args = parser.parse_args(argv)
    args.learning_rate_given = hasattr(args, 'learning_rate')
    if not args.learning_rate_given:
        args.learning_rate = DEFAULT_LEARNING_RATE
    try:
        args.train_layers = parse_train_layers(
            args.train_layers or ('all' if args.weights == inference.RANDOM_WEIGHTS
                                  else 'fc6,fc7,fc8'))
        args.cache_views = feature_cache.parse_views(args.cache_views)
    except ValueError as err:
        parser.error(str(err))
    problem = recipe_problem(args)
    if problem:
        parser.error(problem)
    return args


def recipe_problem(args):
    """What is wrong with the numbers of a run's settings, or None."""
    if not (math.isfinite(args.learning_rate) and args.learning_rate > 0):
        return '--learning-rate must be a number above 0, not %s' % args.learning_rate
    if not (math.isfinite(args.momentum) and 0 <= args.momentum < 1):
        return '--momentum must be in [0, 1), not %s' % args.momentum
    if not (math.isfinite(args.weight_decay) and args.weight_decay >= 0):
        return '--weight-decay must be a number of at least 0, not %s' % args.weight_decay
    if not (math.isfinite(args.keep_prob) and 0 < args.keep_prob <= 1):
        return '--keep-prob must be in (0, 1], not %s' % args.keep_prob
    if not (math.isfinite(args.val_fraction) and 0 <= args.val_fraction < 1):
        return '--val-fraction must be in [0, 1), not %s' % args.val_fraction
    if not 0 <= args.seed <= MAX_SEED:
        return '--seed must be in 0..%d, not %d' % (MAX_SEED, args.seed)
    if args.lr_drops < 0:
        return '--lr-drops must be at least 0, not %d' % args.lr_drops
    if not (math.isfinite(args.lr_min_gain) and 0 <= args.lr_min_gain < 1):
        return '--lr-min-gain must be in [0, 1), not %s' % args.lr_min_gain
    if (args.val_images is None) != (args.val_labels is None):
        return '--val-images and --val-labels go together: pass both, or neither'
    if args.val_images is not None and args.classes != 'imagenet':
        return ('--val-images labels ILSVRC-2012 classes: add --classes imagenet (with '
                'ILSVRC-2012\'s train/ as --data)')
    if args.model_parallel and (args.devices or 1) > 1:
        return ('--model-parallel (one model split across two devices) and --devices %d (a '
                'replica per device) go separately: pass one of them' % args.devices)
    if args.lr_drops and args.val_images is None and args.val_fraction == 0:
        return ('--lr-drops %d needs a validation error: keep --val-fraction above 0 or pass '
                '--val-images and --val-labels' % args.lr_drops)
    return None


def check_batch_size(batch_size, cached):
    """Refuses a batch whose activations cannot fit in this machine's memory."""
    if cached:
        return
    try:
        total = os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES')
    except (ValueError, OSError, AttributeError):    # not on this system: no check
        return
    fits = max(1, int(0.8 * total // BYTES_PER_TRAINING_IMAGE))
    if batch_size > fits:
        raise RunError('--batch-size %d needs about %.0f GB for AlexNet\'s activations and '
                       'gradients, and this machine has %.0f GB: use at most %d'
                       % (batch_size, batch_size * BYTES_PER_TRAINING_IMAGE / 2 ** 30,
                          total / 2 ** 30, fits))


ERRORS = (RunError, datasets.DatasetError, weight_files.WeightFileError,
          run_folder.RunFolderError, distribution.DistributionError)


def main(argv=None):
    args = parse_args(argv)
    tf.logging.set_verbosity(tf.logging.ERROR)
    tf.disable_v2_behavior()
    return command_line.run_main(lambda: run(args), errors=ERRORS)


def run(args):
    progress = not args.no_progress
    cluster = distribution.read_tf_config()
    if cluster and len(cluster[0]) > 1:
        if args.run is None:
            raise RunError('with TF_CONFIG (%d workers) pass --run: every worker names the '
                           'same run folder' % len(cluster[0]))
        if not cluster[2]:
            # Not the chief: trains in step with it, writes nothing in the run folder
            # (it reads it on --resume: a shared file system, or a copy of it).
            run_dir = resolve_run(args.run, args.resume, writer=False)
            return train_run(args, run_dir, progress, [], worker=cluster[1])
    # The folder to write: named, the latest run, or a new one. Its lock is taken before
    # it is looked at, so that a second writer is told the run is being written, not
    # what the folder lacks while the first writer is still filling it.
    run_dir = args.run if args.run is not None else resolve_run(None, args.resume)
    created = not os.path.exists(run_dir)
    lock = run_folder.WriterLock(run_dir)
    lock.acquire()
    started_training = []
    try:
        run_dir = resolve_run(run_dir, args.resume)
        return train_run(args, run_dir, progress, started_training)
    except ERRORS + (datagenerator.EmptyDatasetError,):
        if created and not started_training:
            # A run that could not start leaves nothing behind to block its name.
            shutil.rmtree(run_dir, ignore_errors=True)
        raise
    finally:
        lock.release()


def train_run(args, run_dir, progress, started_training, worker=None):
    """The run in run_dir; worker: None for the process that writes the run folder,
    else the index of a worker that trains in step with it and writes nothing there."""
    writes = worker is None
    settings = run_folder.read_settings(run_dir) if args.resume else {}
    if args.resume and settings:
        for name in ('train_layers', 'weights', 'seed'):
            if name in settings and settings[name] != getattr(args, name):
                print('note: this run was started with --%s %s; resuming with that'
                      % (name.replace('_', '-'), settings[name] if name != 'train_layers'
                         else ','.join(settings[name])))
                setattr(args, name, settings[name])
    train, val, names = prepare_data(
        args.data, run_dir, args.val_fraction, args.seed, progress,
        imagenet=args.classes == 'imagenet',
        val_set=(args.val_images, args.val_labels) if args.val_images else None, write=writes)
    if args.lr_drops and not val:
        raise RunError('--lr-drops %d needs a validation error, and the validation set is '
                       'empty; raise --val-fraction or pass --val-images' % args.lr_drops)
    skip_layer = layers_to_load(args.weights, args.train_layers, len(names))
    cache_from = None
    if args.cache_features:
        cache_from, reason = feature_cache.head_start(args.train_layers)
        if cache_from is None:
            print('note: --cache-features does not apply (%s); training the naive way' % reason)
    check_batch_size(args.batch_size, cached=cache_from is not None)
    checkpoint = run_folder.checkpoint_of(run_dir) if args.resume else None
    start_epoch = int(tf.train.load_variable(checkpoint, 'epoch_state/epoch')) if checkpoint else 0
    if start_epoch >= args.epochs:
        print('%s has already trained %d epochs; ask for more with --epochs'
              % (display_path(run_dir), start_epoch))
        return command_line.EXIT_OK
    describe_run(args, run_dir, train, val, names, skip_layer)
    if writes and not args.resume:
        datasets.write_json(os.path.join(run_dir, run_folder.SETTINGS_FILE), {
            'data': args.data, 'weights': args.weights, 'train_layers': args.train_layers,
            'seed': args.seed, 'classes': names, 'recipe': args.recipe,
            'started': time.strftime('%Y-%m-%d %H:%M:%S')})

    recipe = Recipe(args.learning_rate, args.momentum, args.weight_decay, args.keep_prob,
                    args.batch_size)
    # Caches beside the run folder; a second worker of a cluster keeps its own.
    cache_root = os.path.dirname(os.path.abspath(run_dir))
    cache_suffix = '' if writes else '-worker%d' % worker
    with tf.Graph().as_default():
        setup = distribution.choose(args.devices)
        if args.model_parallel:
            if setup.replicas > 1:
                raise RunError('--model-parallel splits one model across two devices and '
                               'cannot be combined with %s: pass one of them' % setup.describe)
            # Soft placement: without the named devices the columns run where they can.
            setup = setup._replace(config=alexnet.session_config(args.model_parallel))
        if setup.replicas > 1:
            print('data parallel: %s; each replica takes %s of the %d images of a step'
                  % (setup.describe, '%d or %d' % (args.batch_size // setup.replicas,
                                                   -(-args.batch_size // setup.replicas))
                     if args.batch_size % setup.replicas else
                     '%d' % (args.batch_size // setup.replicas), args.batch_size))
            if args.batch_size < setup.replicas:
                raise RunError('--batch-size %d is smaller than the %d replicas: give each at '
                               'least one image' % (args.batch_size, setup.replicas))
        trainer = Trainer(train, val, len(names), recipe, args.train_layers, skip_layer,
                          args.weights, args.seed, cache_from, args.cache_views,
                          os.path.join(cache_root, '.decoded-cache' + cache_suffix)
                          if args.cache_decoded else None, setup=setup,
                          devices=args.model_parallel)
        with distribution.session(setup) as session:
            if writes:
                train_writer = tf.summary.FileWriter(
                    os.path.join(run_dir, run_folder.TRAIN_LOGS), session.graph)
                val_writer = tf.summary.FileWriter(
                    os.path.join(run_dir, run_folder.VALIDATION_LOGS))
            else:
                train_writer = val_writer = None
            start_weights(session, trainer, checkpoint, args.weights,
                          args.learning_rate if args.learning_rate_given else None)
            session.graph.finalize()
            if writes:
                check_disk_space(trainer, run_dir, args.keep_checkpoints)
            if trainer.cache:
                cache = prepare_cache(session, trainer,
                                      os.path.join(cache_root, '.feature-cache' + cache_suffix),
                                      progress)
                if writes:
                    run_folder.update_settings(run_dir, feature_cache=cache)
            started_training.append(True)
            code = train_loop(session, trainer, run_dir, start_epoch, args.epochs,
                              len(train), args, train_writer, val_writer, progress)
            if setup.target:
                # Workers that trained in step hold the same bits: compare these lines.
                print('worker %d: trained weights digest %s'
                      % (worker or 0, weights_digest(session, trainer)))
            if writes:
                train_writer.close()
                val_writer.close()
                if code == command_line.EXIT_OK:
                    finish(session, trainer, run_dir, names, args.weights)
    return code


def start_weights(session, trainer, checkpoint, weights, learning_rate=None):
    """The run's starting point: the checkpoint of a resumed run (every variable, the
    momentum and the learning-rate schedule too), else the pretrained layers from
    `weights`, else the initial values. learning_rate: None, or a rate given with
    --resume, which replaces the one the run had reached (e.g. a tenth of it after
    the loss diverged)."""
    session.run(trainer.init)
    if not checkpoint:
        if weights != inference.RANDOM_WEIGHTS:
            trainer.model.load_initial_weights(session)
        return
    stored = {name for name, _ in tf.train.list_variables(checkpoint)}
    missing = [v for v in tf.global_variables() if v.op.name not in stored]
    if missing and all(v.op.name.startswith('epoch_state/') for v in missing):
        # A run from before the schedule was kept: its rate was --learning-rate.
        tf.train.Saver([v for v in tf.global_variables() if v.op.name in stored]).restore(
            session, checkpoint)
        print('note: %s has no learning-rate schedule (an older run); going on at %g'
              % (display_path(checkpoint), trainer.read_schedule(session).learning_rate))
    else:
        trainer.saver.restore(session, checkpoint)
    print('resumed from %s (epoch %d, step %d)'
          % (display_path(checkpoint), session.run(trainer.epoch),
             session.run(trainer.global_step)))
    if learning_rate is not None:
        schedule = trainer.read_schedule(session)
        if not np.isclose(schedule.learning_rate, learning_rate, rtol=1e-6):
            print('note: learning rate %g from now on (--learning-rate; the run was at %g)'
                  % (learning_rate, schedule.learning_rate))
            trainer.write_schedule(session, schedule._replace(learning_rate=learning_rate))


def describe_run(args, run_dir, train, val, names, skip_layer):
    print('run %s: %d classes (%s), %d training and %d validation images'
          % (display_path(run_dir), len(names), ', '.join(names[:10])
             + (', ...' if len(names) > 10 else ''), len(train), len(val)))
    if len(train) + len(val) < SMALL_DATASET:
        print('note: %d photos only test that the pipeline runs end to end; they cannot '
              'train a classifier. For the real cats vs dogs (25,000 photos): `%s`, then '
              '--data data/PetImages' % (len(train) + len(val),
                                         command_line.python_command('download.py', 'petimages')))
    frozen = [n for n in alexnet.LAYER_NAMES if n not in args.train_layers]
    if args.weights == inference.RANDOM_WEIGHTS:
        print('no pretrained weights (--weights none): every layer starts random (section 5: '
              'weights N(0, 0.01)) and %s train' % ','.join(args.train_layers))
        if frozen:
            print('warning: %s stay frozen at their RANDOM values: the network can only learn '
                  'what random features happen to show; --train-layers all trains every layer'
                  % ','.join(frozen))
    else:
        print('pretrained weights from %s; training %s (new: %s), frozen: %s'
              % (display_path(args.weights), ','.join(args.train_layers),
                 ','.join(skip_layer) or 'none', ','.join(frozen) or 'none'))


def prepare_cache(session, trainer, cache_root, progress):
    """Builds the cached features for the loaded weights, or reuses a complete cache."""
    started = time.time()
    folder = trainer.cache.prepare(session, trainer.model, cache_root, progress)
    seconds = time.time() - started
    print('feature cache %s %s (%.0f MB, %d views per training image) in %.1fs'
          % ('built in' if trainer.cache.built else 'reused:', display_path(folder),
             trainer.cache.size_bytes() / 2 ** 20,
             feature_cache.views_per_image(trainer.cache.views), seconds))
    return {'folder': folder, 'built': trainer.cache.built, 'seconds': round(seconds, 2),
            'views': feature_cache.views_per_image(trainer.cache.views)}


def train_loop(session, trainer, run_dir, start_epoch, epochs, train_count, args,
               train_writer, val_writer, progress):
    """The epochs from start_epoch on. Without train_writer (a worker that does not
    write the run folder) it trains and validates in step with the one that writes."""
    writes = train_writer is not None
    checkpoints = os.path.join(run_dir, run_folder.CHECKPOINTS_DIR)
    best = run_folder.best_accuracy(run_dir)
    rule = PlateauRule(args.lr_patience, args.lr_min_gain, args.lr_drops, 10.0)
    # An epoch interrupted mid-way goes on from its saved sums.
    sums = EpochSums(*session.run(list(trainer.state.values())))
    for epoch in range(start_epoch, epochs):
        steps = int(math.ceil(max(train_count - sums.seen, 0) / float(args.batch_size)))
        if args.max_steps:
            steps = min(steps, max(args.max_steps - sums.steps, 0))
        started = time.time()
        session.run(trainer.train_iterator.initializer,
                    {trainer.epoch_to_read: epoch, trainer.skip: sums.seen})
        handle = session.run(trainer.train_iterator.string_handle())
        try:
            sums = train_epoch(session, trainer, handle, steps, args.keep_prob, args.seed, sums,
                               train_writer, args.summary_every, progress)
        except Interrupted as stop:
            if not writes:
                return command_line.EXIT_INTERRUPTED
            session.run(trainer.set_state, {trainer.state_values[name]: value for name, value
                                            in zip(trainer.state, stop.sums)})
            path = save_checkpoint(session, trainer.saver, checkpoints,
                                   session.run(trainer.global_step))
            print('\ninterrupted: saved %s; continue with: %s'
                  % (display_path(path), command_line.python_command(
                      'finetune.py', '--resume', '--run', run_dir)), file=sys.stderr)
            return command_line.EXIT_INTERRUPTED
        except FloatingPointError as err:
            rate = trainer.read_schedule(session).learning_rate
            print('error: the loss became %s in epoch %d; lower --learning-rate (now %g) and '
                  'resume from the last good checkpoint with: %s'
                  % (err, epoch + 1, rate, command_line.python_command(
                      'finetune.py', '--resume', '--run', run_dir, '--learning-rate',
                      '%g' % (rate / 10))), file=sys.stderr)
            return command_line.EXIT_DIVERGED
        except tf.errors.ResourceExhaustedError:
            raise RunError('out of memory at --batch-size %d; use a smaller one, then '
                           '--resume' % args.batch_size)
        if sums.seen == 0:
            raise RunError('epoch %d read no photos: the training images cannot be read any '
                           'more; check %s' % (epoch + 1, display_path(args.data)))
        broken = non_finite_layers(session, trainer.model, trainer.train_layers)
        if broken:
            print('error: the weights of %s are no longer finite after epoch %d; lower '
                  '--learning-rate and resume from the last good checkpoint'
                  % (','.join(broken), epoch + 1), file=sys.stderr)
            return command_line.EXIT_DIVERGED
        train_loss, train_accuracy = sums.loss_sum / sums.seen, sums.correct / float(sums.seen)
        val_loss, val_accuracy = (validate(session, trainer) if trainer.val_iterator
                                  else (None, None))
        step = session.run(trainer.global_step)
        schedule = trainer.read_schedule(session)
        decision = ''
        if val_accuracy is not None:
            # The rate of the next epoch; saved with the checkpoint below.
            after, decision = next_learning_rate(schedule, 1.0 - val_accuracy, rule)
            trainer.write_schedule(session, after)
        sums = EpochSums(0, 0, 0.0, 0)
        session.run(trainer.set_state, {value: 0 for value in trainer.state_values.values()})
        session.run(trainer.next_epoch)
        if not writes:
            continue
        # The epoch's means at its last step: train and validation points line up.
        write_scalars(train_writer, step, {'loss': train_loss, 'accuracy': train_accuracy,
                                           'epoch/learning_rate': schedule.learning_rate})
        if val_loss is not None:
            write_scalars(val_writer, step, {'loss': val_loss, 'accuracy': val_accuracy})
        save_checkpoint(session, trainer.saver, checkpoints, step, keep=args.keep_checkpoints)
        if val_accuracy is not None and val_accuracy > best:
            best = val_accuracy
            save_checkpoint(session, trainer.best_saver,
                            os.path.join(run_dir, run_folder.BEST_DIR), step, keep=1)
        row = {'epoch': epoch + 1, 'step': step, 'train_loss': train_loss,
               'train_accuracy': train_accuracy, 'val_loss': val_loss,
               'val_accuracy': val_accuracy,
               'learning_rate': float('%.6g' % schedule.learning_rate),
               'seconds': round(time.time() - started, 2), 'schedule': decision}
        run_folder.append_metrics(run_dir, row)
        print('epoch %d/%d: train loss %.4f acc %.3f%s (%.1fs)%s'
              % (epoch + 1, epochs, train_loss, train_accuracy,
                 '' if val_loss is None else ', validation loss %.4f acc %.3f'
                 % (val_loss, val_accuracy), row['seconds'],
                 '; learning rate ' + decision if decision.startswith('divided') else ''))
    return command_line.EXIT_OK


def finish(session, trainer, run_dir, names, weights):
    """Curves, and the weights in the safe format the other scripts load."""
    weights_path = os.path.join(run_dir, run_folder.WEIGHTS_FILE)
    try:
        weight_files.save_npz(weights_path, trainer.model.read_weights(session),
                              class_names=names)
    except OSError as err:
        raise RunError('could not write %s (%s); the checkpoints are kept, and the other '
                       'scripts also take the run folder as --weights'
                       % (display_path(weights_path), failure_reason(err)))
    title = 'training curves: %s' % os.path.basename(os.path.abspath(run_dir))
    if weights == inference.RANDOM_WEIGHTS:
        title += '\n' + FROM_SCRATCH_NOTE
    curves = figures.save_curves({os.path.basename(os.path.abspath(run_dir)):
                                  run_folder.read_metrics(run_dir)},
                                 os.path.join(run_dir, run_folder.CURVES_FILE), title=title)
    print('curves: %s' % display_path(curves.path))
    print('weights: %s\n  classify photos with: %s\n  watch the run with: %s'
          % (display_path(weights_path),
             command_line.python_command('validate_alexnet_on_imagenet.py', '--weights',
                                         weights_path, 'PHOTO.jpg'),
             command_line.tensorboard_command(os.path.dirname(run_dir) or '.')))


if __name__ == '__main__':
    sys.exit(main())
