"""Sine position encodings (masks), inverse sigmoid and the box-refinement round trip, MLP."""
import math

import torch

from lazydet.modeling.layers import MLP, PositionEmbeddingSine, get_sine_pos_embed, inverse_sigmoid


def test_sine_embedding_matches_formula_and_ignores_padding():
    feats, temperature = 4, 10000.0
    pe = PositionEmbeddingSine(num_pos_feats=feats, temperature=temperature, normalize=True, offset=-0.5)
    mask = torch.zeros(1, 5, 7, dtype=torch.bool)
    mask[:, :3, :4] = True  # real image is 3 x 4
    out = pe(mask)
    assert out.shape == (1, 2 * feats, 5, 7)
    # pixel (row 1, col 2): y = (2 - 0.5) / 3 * 2pi, x = (3 - 0.5) / 4 * 2pi
    y, x = (2 - 0.5) / 3 * 2 * math.pi, (3 - 0.5) / 4 * 2 * math.pi
    expected = []
    for coord in (y, x):
        for i in range(feats):
            angle = coord / temperature ** (2 * (i // 2) / feats)
            expected.append(math.sin(angle) if i % 2 == 0 else math.cos(angle))
    torch.testing.assert_close(out[0, :, 1, 2], torch.tensor(expected), atol=1e-5, rtol=1e-5)
    # the real pixels are encoded as in the unpadded image
    unpadded = pe(torch.ones(1, 3, 4, dtype=torch.bool))
    torch.testing.assert_close(out[:, :, :3, :4], unpadded, atol=1e-5, rtol=1e-5)


def test_box_sine_embedding_orders_y_x_w_h():
    box = torch.tensor([[0.1, 0.2, 0.3, 0.4]])
    emb = get_sine_pos_embed(box, num_pos_feats=8)
    assert emb.shape == (1, 32)
    single = lambda v: get_sine_pos_embed(torch.tensor([[v]]), num_pos_feats=8)[0]
    torch.testing.assert_close(emb[0, :8], single(0.2))  # y first
    torch.testing.assert_close(emb[0, 8:16], single(0.1))
    torch.testing.assert_close(emb[0, 24:], single(0.4))


def test_inverse_sigmoid_round_trip_and_refinement():
    x = torch.rand(1000, 4) * 0.98 + 0.01
    torch.testing.assert_close(inverse_sigmoid(x).sigmoid(), x, atol=1e-6, rtol=1e-5)
    logits = (torch.rand(1000, 4) * 2 - 1) * 6.5  # inside the clamp: |logit| < log(999) = 6.9
    torch.testing.assert_close(inverse_sigmoid(logits.sigmoid()), logits, atol=1e-3, rtol=1e-4)
    # refinement: zero delta keeps the box, a delta adds in logit space
    ref = torch.tensor([[0.3, 0.6, 0.2, 0.5]])
    torch.testing.assert_close((torch.zeros(1, 4) + inverse_sigmoid(ref)).sigmoid(), ref)
    delta = torch.tensor([[0.5, -0.5, 1.0, 0.0]])
    expected = 1 / (1 + torch.exp(-(delta + torch.log(ref / (1 - ref)))))
    torch.testing.assert_close((delta + inverse_sigmoid(ref)).sigmoid(), expected)
    # the borders stay finite: numerator and denominator clamped at eps = 1e-3 as detrex and DINO do
    torch.testing.assert_close(inverse_sigmoid(torch.tensor([0.0, 1.0, -0.5, 1.5])),
                               torch.tensor([-1.0, 1.0, -1.0, 1.0]) * -math.log(1e-3))


def test_mlp_layers_and_no_final_activation():
    mlp = MLP(4, 8, 2, 3)
    assert [tuple(l.weight.shape) for l in mlp.layers] == [(8, 4), (8, 8), (2, 8)]
    torch.nn.init.constant_(mlp.layers[-1].bias, -5.0)
    torch.nn.init.zeros_(mlp.layers[-1].weight)
    assert (mlp(torch.randn(3, 4)) == -5.0).all()  # negative outputs possible: no ReLU at the end
