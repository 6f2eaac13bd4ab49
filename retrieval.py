"""Image retrieval with AlexNet's last hidden layer (paper section 6.1, Figure 4 right).

The paper probes what the network learned by taking the 4096-d activations of
the last hidden layer (fc7, after ReLU) as a description of an image: images
whose vectors are close in Euclidean distance are "similar" to the network, even
when their pixels are not (different poses, colours, backgrounds).

This script computes the fc7 vector of every image in the given folders (the
center crop, as preprocessing.preprocess_for_eval makes it), then for each query
image finds its k nearest neighbours and draws them in a row: query first, then
the neighbours, nearest first, with their distances.

    python retrieval.py images data/sample --weights weights/bvlc_alexnet.npz
    python retrieval.py data/sample --queries images/llama.jpg --top-k 4 --out logs/retrieval_llama.png

Without --queries every image in the folders is a query (up to --max-queries),
and its own entry (distance 0) is left out of its neighbours.

Deviations: the paper searched 1.2 million training images with test images
as queries; here both come from the folders you give. ``--weights none``
retrieves with random weights (and says so): its neighbours mostly match colour
and layout, not content.
"""
from __future__ import annotations

import os
import sys

import numpy as np
import cpu_kernels  # noqa: F401  (first: it chooses TensorFlow's CPU kernels)
import tensorflow.compat.v1 as tf

import alexnet
import command_line
import figures
import image_files
import inference
import weight_files

FEATURE_LAYER = 'fc7'     # the 4096-d last hidden layer (after ReLU)
NEIGHBOURS = 6            # Figure 4 shows 6 neighbours per query
MAX_QUERIES = 5           # Figure 4 shows 5 queries


class RetrievalError(ValueError):
    """No images to search or to query."""


def nearest_neighbours(features, query_features, k, exclude=None):
    """The k database rows nearest to each query in Euclidean distance.

    Args:
      features: [N, D] database vectors.
      query_features: [Q, D] query vectors.
      k: neighbours per query (fewer if the database is smaller).
      exclude: optional [Q] database index to leave out per query (the query
        itself, when queries come from the database), or -1 for none.
    Returns:
      (indices [Q, k] int, distances [Q, k] float), nearest first; ties keep
      the lower database index first.
    """
    features = np.asarray(features, np.float64)
    queries = np.asarray(query_features, np.float64)
    if features.ndim != 2 or queries.ndim != 2 or features.shape[1] != queries.shape[1]:
        raise ValueError('need features [N, D] and query_features [Q, D], got %s and %s'
                         % (features.shape, queries.shape))
    # |q - f|^2 = |q|^2 + |f|^2 - 2 q.f, for all pairs at once -> [Q, N]
    squared = ((queries ** 2).sum(1)[:, None] + (features ** 2).sum(1)[None, :]
               - 2.0 * queries @ features.T)
    squared = np.maximum(squared, 0.0)   # rounding can make a zero distance slightly negative
    available = features.shape[0]
    if exclude is not None:
        exclude = np.asarray(exclude)
        rows = np.nonzero(exclude >= 0)[0]
        squared[rows, exclude[rows]] = np.inf
        available -= 1 if len(rows) else 0
    k = max(0, min(k, available))
    indices = np.argsort(squared, axis=1, kind='stable')[:, :k]
    # The expansion above loses digits to cancellation (an image's distance to
    # itself comes out near 1e-4, not 0): measure the chosen k directly.
    distances = np.linalg.norm(features[indices] - queries[:, None, :], axis=2)  # -> [Q, k]
    return indices, distances


def retrieve(database, weights, queries=None, k=NEIGHBOURS, max_queries=MAX_QUERIES, seed=0,
             batch_size=inference.BATCH_SIZE):
    """fc7 features of the images, and each query's nearest neighbours.

    Args:
      database: image files to search.
      weights: weight source, or 'none' for random weights.
      queries: image files to look up; default: the first `max_queries` of the
        database, each without itself.
    Returns:
      list of (query path, [(neighbour path, distance), ...]), and the list
      of unreadable files [(path, reason)].
    """
    own = queries is None
    if own:
        queries = database[:max_queries]
    wanted = list(dict.fromkeys(list(database) + list(queries)))   # each image once
    outputs, used, failed = inference.model_outputs(wanted, weights, layer=FEATURE_LAYER,
                                                    seed=seed, batch_size=batch_size)
    vectors = dict(zip(used, outputs['center']))            # path -> [4096]
    base = [path for path in database if path in vectors]
    asked = [path for path in queries if path in vectors]
    if not base or not asked:
        raise RetrievalError('no readable images to %s' % ('search' if not base else 'query'))
    position = {path: i for i, path in enumerate(base)}
    exclude = [position[path] for path in asked] if own else None
    indices, distances = nearest_neighbours(np.stack([vectors[p] for p in base]),
                                            np.stack([vectors[p] for p in asked]), k, exclude)
    results = [(query, [(base[i], float(d)) for i, d in zip(row, row_distances)])
               for query, row, row_distances in zip(asked, indices, distances)]
    return results, failed


def draw(results, out, weights):
    """The retrieval grid: a row per query. Returns a figures.Figure."""
    def name(path):
        return image_files.display_path(
            os.path.join(os.path.basename(os.path.dirname(path)), os.path.basename(path)))

    queries = [(image_files.read_image(query), 'query\n' + name(query))
               for query, _ in results]
    neighbours = [[(image_files.read_image(path), 'd=%.4g\n%s' % (distance, name(path)))
                   for path, distance in row] for _, row in results]
    title = ('nearest neighbours by Euclidean distance of %s features (section 6.1)\n%s'
             % (FEATURE_LAYER, inference.weights_label(weights)))
    return figures.save_retrieval(queries, neighbours, out, title=title)


def parse_args(argv=None):
    parser = command_line.ArgumentParser(
        description='Find the images nearest to each query in fc7 feature space (paper '
                    'section 6.1, Figure 4 right) and draw them.')
    parser.add_argument('folders', nargs='+', help='image folders (searched recursively) '
                                                   'or files to search')
    parser.add_argument('--queries', nargs='+', help='query images or folders (default: the '
                                                     'first --max-queries searched images)')
    command_line.add_weights(parser, alexnet.DEFAULT_WEIGHTS_PATH)
    parser.add_argument('--top-k', type=command_line.positive_int, default=NEIGHBOURS,
                        help='neighbours per query')
    parser.add_argument('--max-queries', type=command_line.positive_int, default=MAX_QUERIES,
                        help='queries when --queries is not given')
    command_line.add_out(parser, None, 'PNG to write (default: logs/retrieval.png, or '
                                       'logs/retrieval_<first query>.png with --queries)')
    command_line.add_batch_size(parser, inference.BATCH_SIZE)
    command_line.add_seed(parser)
    return parser.parse_args(argv)


def default_out(queries):
    """The figure's default name: one per query set, so two commands keep both figures."""
    if not queries:
        return os.path.join('logs', 'retrieval.png')
    stem = os.path.splitext(os.path.basename(queries[0]))[0]
    return os.path.join('logs', 'retrieval_%s.png' % image_files.display_path(stem))


def main(argv=None):
    args = parse_args(argv)
    tf.logging.set_verbosity(tf.logging.ERROR)
    tf.disable_v2_behavior()
    return command_line.run_main(lambda: run(args), errors=(
        weight_files.WeightFileError, RetrievalError, image_files.ImageError))


def run(args):
    database, skipped = image_files.image_paths(args.folders)
    queries = None
    if args.queries:
        queries, refused = image_files.image_paths(args.queries)
        skipped += refused
    for path, reason in skipped:
        print('skipped %s: %s' % (image_files.display_path(path), reason), file=sys.stderr)
    if not database:
        raise RetrievalError('no images in %s' % ', '.join(
            image_files.display_path(folder) for folder in args.folders))
    weights = inference.resolve_weights(args.weights)
    results, failed = retrieve(database, weights, queries, args.top_k, args.max_queries,
                               args.seed, args.batch_size)
    print(inference.weights_label(weights))
    for path, reason in failed:
        print('skipped %s: %s' % (image_files.display_path(path), reason), file=sys.stderr)
    for query, row in results:
        print(image_files.display_path(query))
        for path, distance in row:
            print('  %10.4g  %s' % (distance, image_files.display_path(path)))
    figure = draw(results, args.out or default_out(queries), weights)
    print('wrote %s (%d tiles, %dx%d pixels)' % ((image_files.display_path(figure.path),
                                                  figure.tiles) + figure.size))
    return command_line.EXIT_PARTIAL if skipped or failed else command_line.EXIT_OK


if __name__ == '__main__':
    sys.exit(main())
