"""Box refinement as detrex and IDEA-Research DINO compute it, checked by hand on a tiny model: the next
layer's reference box comes from the *un-normed* decoder output, the predictions (losses, evaluation) from
the *normed* one; the reference fed onward carries no gradient. Also: label_enc's exactly-zero term."""
import torch
from torch import nn

from test_dino_model import tiny_batch, tiny_dino


def logit(x):
    """Independent of lazydet's inverse_sigmoid (same clamp, eps = 1e-3, for boxes inside (eps, 1 - eps))."""
    return torch.special.logit(x, eps=1e-3)


def one_unpadded_image():
    batch = tiny_batch()
    return {"images": batch["images"][:1], "pixel_mask": batch["pixel_mask"][:1], "targets": batch["targets"][:1]}


def model_with_distinct_norm():
    """Box heads that move the boxes, and a decoder norm that is not the identity (at init
    ``norm(norm3(x)) == norm3(x)``, so normed and un-normed outputs could not be told apart)."""
    torch.manual_seed(0)
    model = tiny_dino(dn_number=0)
    for head in model.heads.bbox_embed:
        nn.init.normal_(head.layers[-1].weight, std=0.1)
    nn.init.normal_(model.transformer.decoder.norm.weight, 1.0, 0.5)
    nn.init.normal_(model.transformer.decoder.norm.bias, 0.0, 0.5)
    return model


def record(model):
    """Hooks that keep each decoder layer's reference input and (un-normed) output, and the transformer's
    output. Image 0 is unpadded, so its reference input on every level is the reference box itself."""
    seen = {}
    decoder = model.transformer.decoder
    for i, layer in enumerate(decoder.layers):
        layer.register_forward_pre_hook(lambda m, args, i=i: seen.update({f"ref{i}": args[2][0, :, 0]}))
        layer.register_forward_hook(lambda m, args, out, i=i: seen.update({f"out{i}": out[0]}))
    model.transformer.register_forward_hook(lambda m, args, out: seen.update(transformer=out))
    return seen


def test_next_reference_from_unnormed_output_predictions_from_normed():
    model = model_with_distinct_norm().eval()
    seen = record(model)
    with torch.no_grad():
        results = model(one_unpadded_image())
    heads, norm = model.heads, model.transformer.decoder.norm
    with torch.no_grad():
        expected_ref1 = torch.sigmoid(heads.bbox_embed[0](seen["out0"]) + logit(seen["ref0"]))
        from_normed = torch.sigmoid(heads.bbox_embed[0](norm(seen["out0"])) + logit(seen["ref0"]))
        torch.testing.assert_close(seen["ref1"], expected_ref1, atol=1e-6, rtol=1e-5)
        assert (from_normed - expected_ref1).abs().max() > 1e-2  # the old behaviour fails the line above

        decoded = seen["transformer"].decoder  # [layers, B, K, .]
        torch.testing.assert_close(decoded.boxes[0, 0], from_normed, atol=1e-6, rtol=1e-5)
        box1 = torch.sigmoid(heads.bbox_embed[1](norm(seen["out1"])) + logit(expected_ref1))
        logits1 = heads.class_embed[1](norm(seen["out1"]))
        torch.testing.assert_close(decoded.boxes[1, 0], box1, atol=1e-6, rtol=1e-5)
        torch.testing.assert_close(decoded.logits[1, 0], logits1)
        # the detections are the last layer's normed predictions
        torch.testing.assert_close(results[0]["scores"][0], logits1.sigmoid().max())


def test_reference_fed_onward_is_detached_in_training():
    model = model_with_distinct_norm().train()
    seen = record(model)
    sum(model(one_unpadded_image()).values()).backward()
    assert seen["ref0"].requires_grad is False and seen["ref1"].requires_grad is False
    assert seen["out0"].requires_grad  # while the layer output itself is in the graph


def test_label_enc_contributes_an_exact_zero_with_denoising_off():
    model = model_with_distinct_norm().train()
    torch.manual_seed(1)
    losses = model(one_unpadded_image())
    assert not any(name.endswith("_dn") for name in losses)
    sum(losses.values()).backward()
    grad = model.label_enc.weight.grad
    assert grad is not None and (grad == 0).all()  # in the graph (DDP), contributing nothing
    with torch.no_grad():
        model.label_enc.weight.normal_(0.0, 100.0)
    torch.manual_seed(1)
    again = model(one_unpadded_image())
    assert all(torch.equal(again[k], losses[k]) for k in losses)
