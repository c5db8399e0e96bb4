"""A plain multi-layer perceptron (Linear + ReLU, no activation after the last layer), as in DETR's box head."""
from torch import nn


class MLP(nn.Module):
    """``num_layers`` Linear layers ``input_dim -> hidden_dim ... -> output_dim`` on the last dim of any
    ``[..., input_dim]`` tensor, ReLU between them."""

    def __init__(self, input_dim: int, hidden_dim: int, output_dim: int, num_layers: int):
        super().__init__()
        dims_in = [input_dim] + [hidden_dim] * (num_layers - 1)
        dims_out = [hidden_dim] * (num_layers - 1) + [output_dim]
        self.layers = nn.ModuleList(nn.Linear(i, o) for i, o in zip(dims_in, dims_out))

    def forward(self, x):
        """``[..., input_dim]`` -> ``[..., output_dim]``."""
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if i < len(self.layers) - 1:
                x = x.relu()
        return x
