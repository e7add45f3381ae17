"""An ensemble: N forecasters trained from different seeds, saved and run as one Keras model that averages them.

Each member is the network `model.build_model` builds, trained on its own (seed `seed + k`: its own initial weights,
dropout masks and stream order) with the same deterministic ridge start, so the members share their frozen linear
terms and differ in the LSTM's correction; the mean of their forecasts is the linear terms plus the mean correction.

Combined into one functional model with the same three inputs and the same "prediction" output, an ensemble is saved
as one `model.keras` and goes through predict, evaluate, the intervals and the retrain gate as any model does; the
helpers here (and `model.all_layers`) reach into its members.
"""

from __future__ import annotations

from forecast import backend

keras = backend.keras()

MEMBER_PREFIX = "member_"


def member_name(index: int) -> str:
    """Network `index`'s name: its layer in the combined model, its checkpoint folder and its TensorBoard folder."""
    return f"{MEMBER_PREFIX}{index}"


def combine(members: list[keras.Model]) -> keras.Model:
    """One model whose "prediction" (B, H) is the mean of the members' predictions; the members (built with the same
    inputs and batch size) are renamed member_0, member_1, ... and keep their weights. A single member is returned
    as it is, so that `members = 1` saves exactly the network it always did."""
    if len(members) == 1:
        return members[0]
    inputs = [keras.Input(batch_shape=tensor.shape, name=tensor.name) for tensor in members[0].inputs]
    predictions = []
    for index, member in enumerate(members):
        member.name = member_name(index)
        predictions.append(member(inputs)["prediction"])
    mean = keras.layers.Average(name="prediction")(predictions)
    return keras.Model(inputs=inputs, outputs={"prediction": mean}, name="ensemble")


def members_of(model: keras.Model) -> list[keras.Model]:
    """The member networks of an ensemble in order, or [model] for a single network."""
    nested = [layer for layer in model.layers if isinstance(layer, keras.Model) and layer.name.startswith(MEMBER_PREFIX)]
    return nested or [model]
