"""A train mapper that corrupts what another mapper returns, for the data-error tests of the model."""


class NaNFirstBox:
    """Calls `mapper(record)`, then makes the first target box of the sample NaN (when it has boxes)."""

    def __init__(self, mapper):
        self.mapper = mapper

    def __call__(self, record: dict) -> dict:
        sample = self.mapper(record)
        if len(sample["target"]["boxes"]):
            sample["target"]["boxes"][0, 0] = float("nan")
        return sample
