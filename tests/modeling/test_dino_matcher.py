"""Hungarian matcher vs brute force over every assignment, on small random cases."""
import itertools

import pytest
import torch

from dino_reference import match_cost
from lazydet.modeling.dino import HungarianMatcher


def random_boxes(n, generator):
    centre = torch.rand(n, 2, generator=generator) * 0.6 + 0.2
    size = torch.rand(n, 2, generator=generator) * 0.3 + 0.05
    return torch.cat([centre, size], 1)


@pytest.mark.parametrize("seed", range(6))
def test_matcher_finds_the_brute_force_optimum(seed):
    g = torch.Generator().manual_seed(seed)
    num_queries, num_classes = 6, 3
    num_targets = [0, 1, 3, 4][seed % 4]
    logits = torch.randn(2, num_queries, num_classes, generator=g) * 2
    boxes = random_boxes(2 * num_queries, g).view(2, num_queries, 4)
    targets = [{"labels": torch.randint(0, num_classes, (num_targets,), generator=g),
                "boxes": random_boxes(num_targets, g)} for _ in range(2)]
    matches = HungarianMatcher()(logits, boxes, targets)
    for b, (rows, cols) in enumerate(matches):
        labels, tboxes = targets[b]["labels"].tolist(), targets[b]["boxes"].tolist()
        cost = [[match_cost(logits[b, q].tolist(), boxes[b, q].tolist(), labels[t], tboxes[t])
                 for t in range(num_targets)] for q in range(num_queries)]
        best = min((sum(cost[q][t] for t, q in enumerate(perm)) for perm in
                    itertools.permutations(range(num_queries), num_targets)), default=0.0)
        assert len(rows) == len(cols) == num_targets
        assert sorted(cols.tolist()) == list(range(num_targets))  # every target matched once
        assert len(set(rows.tolist())) == num_targets
        got = sum(cost[q][t] for q, t in zip(rows.tolist(), cols.tolist()))
        assert got == pytest.approx(best, abs=1e-4)


def test_matcher_rejects_nan_predictions():
    logits = torch.full((1, 2, 2), float("nan"))
    targets = [{"labels": torch.tensor([0]), "boxes": torch.tensor([[0.5, 0.5, 0.2, 0.2]])}]
    with pytest.raises(FloatingPointError, match="cost matrix"):
        HungarianMatcher()(logits, torch.rand(1, 2, 4), targets)
