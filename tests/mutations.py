"""Plausible bugs, planted one at a time, that the fast tests must catch (`make mutation`).

Each mutation is a small edit of the code (a constant in the wrong order, a step
skipped, a flag ignored) with the test files that should notice it. For each,
this script copies the repository's tracked files to a temporary folder, makes
the edit there (the text must occur exactly once), runs those tests without the
slow ones, and counts the mutation as caught when they fail. The repository
itself is never changed.

    python tests/mutations.py                 # all of them: a table and the count
    python tests/mutations.py --only mean_in_rgb_order weight_decay_removed

Exit status 0 when every mutation is caught, 1 otherwise.
"""
import argparse
import collections
import os
import shutil
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# name: the bug; file, old, new: the edit; tests: the test files that must fail.
Mutation = collections.namedtuple('Mutation', 'name file old new tests')

MUTATIONS = [
    Mutation('mean_in_rgb_order', 'preprocessing.py',
             'IMAGENET_MEAN_BGR = (104.00698793, 116.66876762, 122.67891434)',
             'IMAGENET_MEAN_BGR = (122.67891434, 116.66876762, 104.00698793)',
             ['tests/test_preprocessing.py']),
    Mutation('rgb_fed_as_is', 'preprocessing.py',
             '    bgr = tf.reverse(tf.cast(image, tf.float32), axis=[-1])',
             '    bgr = tf.cast(image, tf.float32)',
             ['tests/test_preprocessing.py']),
    Mutation('pca_noise_ten_times_too_strong', 'preprocessing.py',
             'PCA_ALPHA_STDDEV = 0.1 ', 'PCA_ALPHA_STDDEV = 1.0 ',
             ['tests/test_preprocessing.py', 'tests/test_datagenerator.py']),
    Mutation('pca_eigenvalues_unweighted', 'preprocessing.py',
             "weighted = tf.cast(alpha, tf.float32) * tf.constant(PCA_EIGVAL, tf.float32)",
             "weighted = tf.cast(alpha, tf.float32)",
             ['tests/test_preprocessing.py']),
    Mutation('center_crop_off_by_one', 'preprocessing.py',
             '    top = (shape[0] - size) // 2', '    top = (shape[0] - size) // 2 + 1',
             ['tests/test_preprocessing.py']),
    Mutation('mirror_never', 'preprocessing.py', 'draws[2] < 0.5', 'draws[2] < 0.0',
             ['tests/test_preprocessing.py']),
    Mutation('same_order_every_epoch', 'datagenerator.py',
             '    return seed * 1000003 + tf.cast(epoch, tf.int64)',
             '    return seed * 1000003 + 0 * tf.cast(epoch, tf.int64)',
             ['tests/test_datagenerator.py']),
    Mutation('skip_ignored', 'datagenerator.py',
             '    dataset = dataset.skip(tf.cast(skip, tf.int64))', '',
             ['tests/test_datagenerator.py']),
    Mutation('weight_decay_removed', 'finetune.py',
             '    return cross_entropy, cross_entropy + weight_decay * decay / replicas',
             '    return cross_entropy, cross_entropy',
             ['tests/test_finetune.py']),
    Mutation('weight_decay_on_biases_too', 'finetune.py',
             'model.variables(train_layers, biases=False)', 'model.variables(train_layers)',
             ['tests/test_finetune.py']),
    Mutation('every_layer_trainable', 'finetune.py',
             'training(loss, model.variables(train_layers),',
             'training(loss, model.variables(),',
             ['tests/test_finetune.py']),
    Mutation('momentum_ignored', 'finetune.py',
             'optimizer = tf.train.MomentumOptimizer(learning_rate, momentum)',
             'optimizer = tf.train.MomentumOptimizer(learning_rate, 0.0)',
             ['tests/test_finetune.py']),
    Mutation('pretrained_overwrites_restored_weights', 'finetune.py',
             '    if learning_rate is not None:\n        schedule',
             '    if weights != inference.RANDOM_WEIGHTS:\n'
             '        trainer.model.load_initial_weights(session)\n'
             '    if learning_rate is not None:\n        schedule',
             ['tests/test_finetune.py']),
    Mutation('learning_rate_not_checked', 'finetune.py',
             '    if not (math.isfinite(args.learning_rate) and args.learning_rate > 0):',
             '    if False:',
             ['tests/test_finetune.py']),
    Mutation('fc6_reads_pool5_channels_first', 'alexnet.py',
             "self.flattened = tf.reshape(self.pool5, [-1, 6 * 6 * 256], name='flatten')",
             "self.flattened = tf.reshape(tf.transpose(self.pool5, [0, 3, 1, 2]), [-1, 6 * 6 * 256],"
             " name='flatten')",
             ['tests/test_alexnet.py']),
    Mutation('groups_swapped', 'alexnet.py',
             'tf.split(weights, groups, axis=3))]', 'tf.split(weights, groups, axis=3)[::-1])]',
             ['tests/test_alexnet.py']),
    Mutation('groups_split_on_onednn', 'alexnet.py',
             'if groups == 1 or onednn_cpu():', 'if groups == 1:',
             ['tests/test_alexnet.py']),
    Mutation('dropout_at_inference', 'alexnet.py',
             "keep_prob = tf.placeholder_with_default(1.0, shape=[], name='keep_prob')",
             "keep_prob = tf.placeholder_with_default(0.5, shape=[], name='keep_prob')",
             ['tests/test_alexnet.py']),
    Mutation('conv2_bias_not_one', 'alexnet.py',
             "self._conv(self.pool1, 'conv2', 5, 256, 1, 'SAME', groups=2, bias=1.0)",
             "self._conv(self.pool1, 'conv2', 5, 256, 1, 'SAME', groups=2)",
             ['tests/test_alexnet.py']),
    Mutation('aspect_limit_gone', 'image_files.py', 'MAX_ASPECT = 20 ', 'MAX_ASPECT = 10 ** 9 ',
             ['tests/test_image_files.py']),
    Mutation('fifos_opened', 'image_files.py',
             '    if stat.S_ISREG(mode):\n        return None',
             '    return None',
             ['tests/test_image_files.py']),
    Mutation('links_to_parents_followed', 'image_files.py',
             '    if _within(top_real, real):', '    if False:',
             ['tests/test_image_files.py']),
    Mutation('label_gaps_allowed', 'datasets.py',
             '    missing = sorted(set(range(count)) - labels)', '    missing = []',
             ['tests/test_datasets.py']),
    Mutation('split_not_stratified', 'datasets.py',
             '        by_class.setdefault(item[1], set()).add(item)',
             '        by_class.setdefault(0, set()).add(item)',
             ['tests/test_datasets.py']),
    Mutation('damaged_checkpoint_taken', 'run_folder.py',
             '            problem = checkpoint_problem(prefix)\n            if problem is None:',
             '            problem = None\n            if problem is None:',
             ['tests/test_run_folder.py']),
    Mutation('lock_not_taken', 'run_folder.py', '            _lock(lock_file)',
             '            pass', ['tests/test_run_folder.py']),
    Mutation('ten_crops_not_averaged', 'inference.py',
             '    return outputs.reshape(-1, crops_per_image, outputs.shape[-1]).mean(axis=1)',
             '    return outputs.reshape(-1, crops_per_image, outputs.shape[-1])[:, 0]',
             ['tests/test_inference.py']),
    Mutation('if_range_not_sent', 'download.py',
             "        request.add_header('If-Range', _validator(record))", '',
             ['tests/test_download.py']),
    Mutation('sha1_not_checked', 'download.py', '        if found != source.sha1:',
             '        if False:', ['tests/test_download.py']),
    Mutation('weights_not_checked_finite', 'weight_files.py',
             '    if not (np.isfinite(array.min()) and np.isfinite(array.max())):',
             '    if False:', ['tests/test_weight_files.py']),
    Mutation('replicas_take_the_same_rows', 'distribution.py',
             '    return setup.first_replica + index % setup.local_replicas',
             '    return setup.first_replica + 0 * index',
             ['tests/test_distribution.py']),
    Mutation('replica_dropout_masks_drawn_per_replica', 'alexnet.py',
             '                draws = draws[first:first + tf.shape(x)[0]]',
             '                draws = draws[:tf.shape(x)[0]]',
             ['tests/test_distribution.py']),
    Mutation('schedule_never_divides', 'finetune.py',
             '    rate = state.learning_rate / rule.factor', '    rate = state.learning_rate',
             ['tests/test_finetune.py']),
    Mutation('top5_counts_top4', 'evaluate.py', 'TOP_K = (1, 5)', 'TOP_K = (1, 4)',
             ['tests/test_evaluate.py']),
    Mutation('autotune_left_on', 'datagenerator.py',
             '        options.autotune.enabled = False', '        options.autotune.enabled = None',
             ['tests/test_feature_cache.py']),
    Mutation('onednn_left_off', 'cpu_kernels.py', "os.environ.setdefault(ONEDNN, '1')",
             "os.environ.setdefault(ONEDNN, '0')", ['tests/test_cpu_kernels.py']),
]


def copy_repository(folder):
    """The tracked files of the repository (and the tests' data), copied into folder."""
    listed = subprocess.run(['git', 'ls-files', '-z'], cwd=REPO, stdout=subprocess.PIPE,
                            check=True).stdout.decode('utf-8').split('\0')
    for name in filter(None, listed):
        source = os.path.join(REPO, name)
        if not os.path.isfile(source):
            continue
        target = os.path.join(folder, name)
        os.makedirs(os.path.dirname(target), exist_ok=True)
        shutil.copy2(source, target)


def apply(folder, mutation):
    path = os.path.join(folder, mutation.file)
    with open(path, encoding='utf-8') as f:
        text = f.read()
    count = text.count(mutation.old)
    if count != 1:
        raise SystemExit('error: mutation %s: its text occurs %d times in %s, not once; '
                         'update tests/mutations.py' % (mutation.name, count, mutation.file))
    with open(path, 'w', encoding='utf-8') as f:
        f.write(text.replace(mutation.old, mutation.new))


def caught(mutation, timeout):
    """(caught?, seconds): runs the mutation's tests on a mutated copy."""
    folder = tempfile.mkdtemp(prefix='mutation-')
    started = time.time()
    try:
        copy_repository(folder)
        apply(folder, mutation)
        command = [sys.executable, '-m', 'pytest', '-x', '-q', '-p', 'no:cacheprovider',
                   '-m', 'not slow'] + mutation.tests
        try:
            done = subprocess.run(command, cwd=folder, stdout=subprocess.DEVNULL,
                                  stderr=subprocess.DEVNULL, timeout=timeout)
            failed = done.returncode != 0
        except subprocess.TimeoutExpired:
            failed = True          # a hang is noticed too
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    return failed, time.time() - started


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--only', nargs='+', choices=[m.name for m in MUTATIONS],
                        metavar='NAME', help='run these mutations only')
    parser.add_argument('--timeout', type=int, default=900, help='seconds per mutation')
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    chosen = [m for m in MUTATIONS if not args.only or m.name in args.only]
    results = []
    for mutation in chosen:
        failed, seconds = caught(mutation, args.timeout)
        results.append((mutation, failed))
        print('%-40s %-7s %5.0fs  %s' % (mutation.name, 'caught' if failed else 'MISSED',
                                       seconds, ' '.join(mutation.tests)), flush=True)
    missed = [m.name for m, failed in results if not failed]
    print('%d of %d mutations caught by the fast tests%s'
          % (len(results) - len(missed), len(results),
             '; missed: ' + ', '.join(missed) if missed else ''))
    return 1 if missed else 0


if __name__ == '__main__':
    sys.exit(main())
