"""The windowing batches as a keras.utils.PyDataset, so workers, use_multiprocessing and max_queue_size apply."""

from __future__ import annotations

from forecast import backend
from forecast.windowing import Batch, StreamPlan, WindowBatcher

keras = backend.keras()


class WindowDataset(keras.utils.PyDataset):
    """Serves `plan`'s batches in order (the stateful layout depends on it) and lays out a new epoch at each end."""

    def __init__(self, batcher: WindowBatcher, plan: StreamPlan, initial_epoch: int = 0, **kwargs):
        super().__init__(**kwargs)
        self.batcher = batcher
        self.plan = plan
        self.epoch = initial_epoch
        self._origins, self._scored = plan.batches(initial_epoch)

    def __len__(self) -> int:
        return self.plan.n_batches

    def __getitem__(self, index: int) -> Batch:
        return self.batcher.batch(self._origins[index], self._scored[index])

    def on_epoch_end(self) -> None:
        self.epoch += 1
        self._origins, self._scored = self.plan.batches(self.epoch)
