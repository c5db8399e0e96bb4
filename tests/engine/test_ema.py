"""ModelEMA (timm's ModelEmaV3 underneath) against an EMA computed by hand, its checkpoint format and resume."""
import torch
from torch import nn

from lazydet.engine.ema import ModelEMA


def _model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.Linear(4, 1))


def _train_step(model, optimizer, seed):
    g = torch.Generator().manual_seed(seed)
    loss = model(torch.randn(8, 3, generator=g)).pow(2).mean()  # train mode: BatchNorm updates its buffers
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()


def test_matches_a_hand_computed_average_and_copies_buffers():
    model = _model().train()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
    ema = ModelEMA(model, decay=0.75)
    expected = {n: p.detach().double().clone() for n, p in model.named_parameters()}
    for step in range(4):
        _train_step(model, optimizer, step)
        ema.update(model)
        for n, p in model.named_parameters():
            expected[n] = 0.75 * expected[n] + 0.25 * p.detach().double()
    averaged = dict(ema.module.named_parameters())
    for n, value in expected.items():
        torch.testing.assert_close(averaged[n].double(), value, rtol=1e-6, atol=1e-7, msg=n)
        assert not torch.equal(averaged[n], dict(model.named_parameters())[n])  # really an average
    for (n, b), e in zip(model.named_buffers(), ema.module.buffers()):
        assert torch.equal(b, e), n  # running mean/var and the batch counter: copied, not averaged
    assert ema.updates == 4 and not ema.module.training
    assert not any(p.requires_grad for p in ema.module.parameters())


def test_checkpoint_format_and_exact_resume():
    model = _model().train()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
    ema = ModelEMA(model, decay=0.9)
    for step in range(2):
        _train_step(model, optimizer, step)
        ema.update(model)
    state = ema.state_dict()
    assert set(state) == {"module", "updates", "decay"} and state["updates"] == 2 and state["decay"] == 0.9
    assert set(state["module"]) == set(model.state_dict())  # `ema.module.<name>` in a checkpoint, as before
    saved = {k: v.clone() for k, v in state["module"].items()}

    resumed = ModelEMA(_model(), decay=0.9)  # other weights, then the saved state
    resumed.load_state_dict({"module": saved, "updates": 2, "decay": 0.9})
    _train_step(model, optimizer, 2)
    ema.update(model)
    resumed.update(model)
    assert resumed.updates == ema.updates == 3
    for (n, a), b in zip(ema.module.state_dict().items(), resumed.module.state_dict().values()):
        assert torch.equal(a, b), n


def test_reset_from_restarts_the_average_at_the_given_weights():
    model = _model()
    ema = ModelEMA(model, decay=0.9)
    ema.update(model)
    other = _model()
    with torch.no_grad():
        for p in other.parameters():
            p.add_(1.0)
    ema.reset_from(other)
    assert ema.updates == 0
    for (n, a), b in zip(other.state_dict().items(), ema.module.state_dict().values()):
        assert torch.equal(a, b), n
