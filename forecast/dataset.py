"""The windowing batches as Keras input pipelines: a `tf.data.Dataset` that gathers each batch inside TensorFlow
(`data_pipeline = "tfdata"`), or a `keras.utils.PyDataset` that cuts it in Python from the arrays where they are
(`"pydataset"`, where workers, use_multiprocessing and max_queue_size apply). Both serve the same batches."""

from __future__ import annotations

import weakref

import numpy as np

from forecast import backend
from forecast.config import Config
from forecast.criterion import step_weights
from forecast.features import ALIGNMENT, allocated
from forecast.sampler import PADDING, StreamPlan
from forecast.windowing import Batch, ValidationSet, WindowBatcher, window_generator

keras = backend.keras()


class WindowDataset(keras.utils.PyDataset):
    """Serves `plan`'s batches in order (the stateful layout depends on it), epoch after epoch, as one endless sequence:
    item i is batch i % n_batches of epoch initial_epoch + i // n_batches.

    The index alone decides the batch, so epoch k trains on layout k as the generator pipeline does: Keras calls
    `on_epoch_end` once before the first epoch too, and tf.data fetches ahead across epoch ends, so a layout switched
    by those calls would be off by one or mixed.
    """

    def __init__(self, batcher: WindowBatcher, plan: StreamPlan, initial_epoch: int = 0, **kwargs):
        super().__init__(**kwargs)
        self.batcher = batcher
        self.plan = plan
        self.initial_epoch = initial_epoch
        self._layout = (initial_epoch, plan.batches(initial_epoch))  # one tuple, so worker threads read it whole

    @property
    def num_batches(self) -> None:
        """None: endless, so Keras keeps one iterator across epochs and the index keeps counting."""
        return None

    def __getitem__(self, index: int) -> Batch:
        epoch, batch = divmod(index, self.plan.n_batches)
        epoch += self.initial_epoch
        layout = self._layout
        if layout[0] != epoch:
            layout = (epoch, self.plan.batches(epoch))
            self._layout = layout
        origins, scored = layout[1]
        return self.batcher.batch(origins[batch], scored[batch])


class ValidationBatches(keras.utils.PyDataset):
    """A `ValidationSet`'s batches in order, each with its step weights under the run's score (the set's weights times
    `origin_weights` (n,), as `criterion.score_weights` makes them), for Keras' validation: the inputs are cut per
    batch, so the validation windows are never held all at once."""

    def __init__(self, validation: ValidationSet, origin_weights: np.ndarray, **kwargs):
        super().__init__(**kwargs)
        self.validation = validation
        self.origin_weights = origin_weights

    def __len__(self) -> int:
        return self.validation.n_batches

    def __getitem__(self, index: int) -> Batch:
        rows = self.validation.rows(index)
        target, weight = self.validation.cut(rows)
        return self.validation.inputs(index), {"prediction": target}, step_weights(weight, self.origin_weights[rows])


# The feature arrays as TensorFlow tensors, once per Features object (by its id, removed when it is freed), shared by
# every pipeline over them: the training and validation pipelines, and each network of an ensemble.
_FEATURE_TENSORS: dict[int, tuple] = {}


def feature_tensors(features) -> tuple:
    """`features`' history, sim, bg and target (`features.Features`) as TensorFlow tensors, made once however many
    pipelines gather from them: each the array's own memory where TensorFlow can read it in place (the stacked
    arrays, in memory or memory-mapped, `features.stack`), else a copy."""
    key = id(features)
    if key not in _FEATURE_TENSORS:
        weakref.finalize(features, _FEATURE_TENSORS.pop, key, None)
        _FEATURE_TENSORS[key] = tuple(
            shared_tensor(array) for array in (features.history, features.sim, features.bg, features.target))
    return _FEATURE_TENSORS[key]


def shared_tensor(array: np.ndarray):
    """`array` as a TensorFlow tensor over the same memory (through DLPack, which keeps the array alive while the
    tensor lives) where it is C-contiguous, writeable and aligned as TensorFlow's kernels require (a misaligned one
    would abort the process at its first gather); else a copy. The tensor is only read, so sharing is safe."""
    tf = _tensorflow()
    if (array.size and array.flags.c_contiguous and array.flags.writeable
            and array.ctypes.data % ALIGNMENT == 0 and array.dtype.isnative):
        try:
            return tf.experimental.dlpack.from_dlpack(array.__dlpack__())
        except BufferError:  # a type DLPack cannot describe
            pass
    return tf.constant(array)


def release_feature_tensors(features) -> None:
    """Drops `features`' tensors (`feature_tensors`, a copy where they are not shared) once no pipeline reads them."""
    _FEATURE_TENSORS.pop(id(features), None)


class GatheredWindows:
    """The windows of `batcher` cut by TensorFlow: the feature arrays as tensors, and a batch of origins gathered
    into its three inputs, targets and weights inside tf.data, in parallel with training and without Python or its
    lock. Every value is the one `WindowBatcher.batch` cuts: the same rows copied, the same float32 products.

    TensorFlow reads the stacked feature arrays where they are (`feature_tensors`), in memory or in the memory-mapped
    files of a collection read from the data cache; other arrays it copies once per `Features` (a Ray worker's, which
    Ray's object store hands over read-only, among them). With `series_weight` it holds one float32 weight per row.
    """

    def __init__(self, batcher: WindowBatcher):
        tf = _tensorflow()
        features = batcher.features
        self.batcher = batcher
        self.history, self.sim, self.bg, self.target = feature_tensors(features)
        row_weight = (batcher.series_weight[features.series_of(np.arange(features.n_rows))].astype("float32")
                      if batcher.series_weight is not None else None)
        self.row_weight = None if row_weight is None else tf.constant(row_weight)
        self.back = tf.range(1 - batcher.lookback, 1, dtype=tf.int64)
        self.ahead = tf.range(1, batcher.horizon + 1, dtype=tf.int64)

    def inputs(self, origins):
        """The three inputs for `origins` (B,) (PADDING: the earliest window), as `WindowBatcher.inputs`."""
        tf = _tensorflow()
        origins = tf.where(origins == PADDING, tf.constant(self.batcher.earliest_origin, tf.int64), origins)
        return {"sim": tf.gather(self.sim, origins[:, None] + self.ahead),
                "lstm": tf.gather(self.history, origins[:, None] + self.back),
                "bg": tf.gather(self.bg, origins)}

    def batch(self, origins, scored):
        """(inputs, {"prediction": targets (B, H)}, weights (B, H)) for `origins` (B,) and the mask `scored` (B,), as
        `WindowBatcher.batch` (whose window check runs on the epoch's layout before it is gathered)."""
        tf = _tensorflow()
        inputs = self.inputs(origins)
        rows = tf.where(origins == PADDING, tf.constant(self.batcher.earliest_origin, tf.int64), origins)
        target = tf.gather(self.target, rows[:, None] + self.ahead)
        observed = tf.math.is_finite(target)
        weight = tf.cast(observed & scored[:, None], tf.float32)
        if self.row_weight is not None:
            weight = weight * tf.gather(self.row_weight, rows)[:, None]
        return inputs, {"prediction": tf.where(observed, target, tf.zeros_like(target))}, weight


def training_batches(batcher: WindowBatcher, plan: StreamPlan, initial_epoch: int = 0):
    """`plan`'s batches of `batcher`'s windows as an endless `tf.data.Dataset`, epoch after epoch from `initial_epoch`
    (0-based), `plan.n_batches` per epoch in the plan's order, as `WindowDataset` serves them: each epoch's layout is
    made by NumPy once (`StreamPlan.batches`, its windows checked), the batches gathered by TensorFlow and prefetched."""
    tf = _tensorflow()
    windows = GatheredWindows(batcher)

    def layout(epoch):
        origins, scored = plan.batches(int(epoch))
        batcher.check_inside(origins.reshape(-1))
        return aligned(origins), aligned(scored)

    def epoch_batches(epoch):
        origins, scored = tf.numpy_function(layout, [epoch], (tf.int64, tf.bool), stateful=False)
        # The batch dimension left unknown, as Keras leaves it for a PyDataset: the training step's graph, and so
        # every rounding in it, is then the same whichever pipeline feeds it.
        origins.set_shape((None, None))
        scored.set_shape((None, None))
        return tf.data.Dataset.from_tensor_slices((origins, scored))

    return _unrewritten(tf.data.Dataset.range(initial_epoch, 2**62).flat_map(epoch_batches)
                        .map(windows.batch, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
                        .prefetch(tf.data.AUTOTUNE))


def validation_batches(validation: ValidationSet, origin_weights: np.ndarray):
    """A `ValidationSet`'s batches in order, as `ValidationBatches` serves them, as a `tf.data.Dataset` that repeats
    them for every epoch's validation. Per origin, only the origin, whether it is scored and its weight in the score
    (`origin_weights` (n,)) are copied into TensorFlow (beside what `GatheredWindows` holds per row); each batch's
    inputs, targets and step weights are gathered from the feature arrays as training's are, the same values as the
    set's."""
    tf = _tensorflow()
    windows = GatheredWindows(validation.batcher)
    shape = (validation.n_batches, validation.batch_size)
    tables = tuple(table.reshape(shape) for table in (validation.origins, validation.scored,
                                                      np.asarray(origin_weights, dtype="float64")))

    def batch(origins, scored, per_origin):
        inputs, targets, weight = windows.batch(origins, scored)
        return inputs, targets, tf.cast(tf.cast(weight, tf.float64) * per_origin[:, None], tf.float32)

    def batches(_):
        # The batch dimension left unknown, as for training's batches (`training_batches`): Keras' test step is then
        # the graph a PyDataset's batches get, with the same roundings.
        served = tf.numpy_function(lambda: tuple(aligned(table) for table in tables), [],
                                   (tf.int64, tf.bool, tf.float64), stateful=False)
        for table in served:
            table.set_shape((None, None))
        return tf.data.Dataset.from_tensor_slices(tuple(served))

    return _unrewritten(tf.data.Dataset.range(1).flat_map(batches)
                        .map(batch, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
                        .repeat().prefetch(tf.data.AUTOTUNE))


def aligned(array: np.ndarray) -> np.ndarray:
    """`array`, or a copy of it that starts at a multiple of ALIGNMENT bytes, as TensorFlow's kernels read an array in
    place: an array a `numpy_function` returns aligned becomes its tensor as it is, where a misaligned one is copied
    and both are held while the pipeline reads them (an epoch's layout, at many series)."""
    if array.ctypes.data % ALIGNMENT == 0:
        return array
    copy = allocated(array.shape, array.dtype, None)
    copy[...] = array
    return copy


def _unrewritten(dataset):
    """`dataset` with tf.data's default graph rewrites off. A rewrite serialises the pipeline when its iterator
    starts, and with it part of the feature tensors its gathers capture (`feature_tensors`): memory of the process's
    own that grows with the feature arrays and stays while the pipeline runs, where the tensors otherwise share the
    arrays' (memory-mapped) pages. The pipelines are already what those rewrites would make of them (a parallel map,
    prefetched); autotuning still sizes the parallelism and the buffers."""
    tf = _tensorflow()
    options = tf.data.Options()
    options.experimental_optimization.apply_default_optimizations = False
    return dataset.with_options(options)


def training_data(batcher: WindowBatcher, plan: StreamPlan, config: Config, first_epoch: int):
    """What `fit` trains on: `plan`'s batches of `batcher`'s windows from epoch `first_epoch` on, endlessly, gathered
    by tf.data (`config.data_pipeline` = "tfdata"), as a generator ("generator") or a `dataset.WindowDataset` with
    `config`'s workers and queue ("pydataset"); all three serve the same batches."""
    if config.data_pipeline == "generator":
        return window_generator(batcher, plan, first_epoch)
    if config.data_pipeline == "tfdata":
        return training_batches(batcher, plan, first_epoch)

    return WindowDataset(
        batcher,
        plan,
        initial_epoch=first_epoch,
        workers=config.workers,
        use_multiprocessing=config.use_multiprocessing,
        max_queue_size=config.max_queue_size,
    )


def validation_data(run, config: Config):
    """What `fit` validates on each epoch: the run's (`members.MemberRun`) validation batches weighted by the run's
    score, through the same kind of pipeline as training's (`config.data_pipeline`)."""
    if config.data_pipeline == "tfdata":
        return validation_batches(run.validation, run.origin_weights)
    return ValidationBatches(run.validation, run.origin_weights)


def _tensorflow():
    import tensorflow as tf

    return tf
