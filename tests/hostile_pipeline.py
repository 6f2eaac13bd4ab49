"""What tests/test_hostile_inputs.py runs in its worker: one training epoch of the pipeline."""
import tensorflow.compat.v1 as tf

import datagenerator


def labels_of_one_epoch(items, batch_size=2):
    """The labels of one training epoch of make_dataset over items, as training reads them."""
    tf.disable_v2_behavior()
    labels = []
    with tf.Graph().as_default():
        batch = tf.data.make_one_shot_iterator(datagenerator.make_dataset(
            [tuple(item) for item in items], batch_size, training=True, seed=0)).get_next()
        with tf.Session() as session:
            try:
                while True:
                    labels.extend(int(label) for label in session.run(batch[1]))
            except tf.errors.OutOfRangeError:
                pass
    return labels
