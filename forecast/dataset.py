"""The windowing batches as a keras.utils.PyDataset, so workers, use_multiprocessing and max_queue_size apply."""

from __future__ import annotations

from forecast import backend
from forecast.sampler import StreamPlan
from forecast.windowing import Batch, ValidationSet, WindowBatcher

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
    """A `ValidationSet`'s batches in order, each with its slice of `weights` (n, H: the run's score weights), for
    Keras' validation: the inputs are cut per batch, so the validation windows are never held all at once."""

    def __init__(self, validation: ValidationSet, weights, **kwargs):
        super().__init__(**kwargs)
        self.validation = validation
        self.weights = weights

    def __len__(self) -> int:
        return self.validation.n_batches

    def __getitem__(self, index: int) -> Batch:
        rows = self.validation.rows(index)
        return self.validation.inputs(index), {"prediction": self.validation.target[rows]}, self.weights[rows]
