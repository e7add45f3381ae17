"""The custom layers tested as Keras tests its own (`run_layer_test`): built, called symbolically and eagerly,
serialised and rebuilt from their config, with the output checked against numpy where the answer is known."""

import numpy as np
from keras import ops
from keras.src.testing import TestCase

from forecast.model import AttributeProducts, MultiScaleMeans, OriginValues, Rescale, WindowScale


class CustomLayers(TestCase):
    def test_attribute_products_multiply_every_input_by_every_attribute(self):
        values = np.arange(6, dtype="float32").reshape(2, 3)
        bg = np.array([[1.0, -1.0, 9.0], [2.0, 0.5, 9.0]], dtype="float32")  # the last column is calendar, not used
        expected = (values[:, :, None] * bg[:, None, :2]).reshape(2, 6)
        self.run_layer_test(AttributeProducts, {"attributes": 2}, input_data=[values, bg],
                            expected_output=ops.convert_to_tensor(expected), run_training_check=False)

    def test_multi_scale_means_average_the_last_rows_of_each_channel(self):
        history = np.arange(24, dtype="float32").reshape(2, 4, 3)
        expected = np.stack([history[:, -span:, channel].mean(axis=1) for channel in (0, 2) for span in (1, 4)], axis=1)
        self.run_layer_test(MultiScaleMeans, {"spans": [1, 4], "channels": [0, 2]}, input_data=history,
                            expected_output=ops.convert_to_tensor(expected), run_training_check=False)

    def test_origin_values_read_the_last_row(self):
        history = np.arange(24, dtype="float32").reshape(2, 4, 3)
        self.run_layer_test(OriginValues, {"channels": [2, 0]}, input_data=history,
                            expected_output=ops.convert_to_tensor(history[:, -1, [2, 0]]),
                            run_training_check=False)

    def test_window_scale_is_the_floored_spread(self):
        centred = np.array([[0.0, 0.0, 0.0], [1.0, -1.0, 0.0]], dtype="float32")
        expected = np.sqrt(centred.var(axis=1, keepdims=True) + 0.1**2)
        self.run_layer_test(WindowScale, {"floor": 0.1}, input_data=centred,
                            expected_output=ops.convert_to_tensor(expected), run_training_check=False)

    def test_rescale_multiplies_by_the_scale(self):
        correction = np.ones((2, 3), dtype="float32")
        scale = np.array([[2.0], [0.5]], dtype="float32")
        self.run_layer_test(Rescale, {}, input_data=[correction, scale],
                            expected_output=ops.convert_to_tensor(correction * scale), run_training_check=False)
