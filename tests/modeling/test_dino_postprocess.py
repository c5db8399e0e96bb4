"""Post-processing: top-k over queries x classes, boxes back to original pixels; an oracle scores AP 100."""
import pytest
import torch

from lazydet.evaluation import evaluate_coco_detections
from lazydet.modeling.dino import boxes_to_original_pixels, post_process


def test_hand_example_resize_and_padding():
    # original 200 x 300 (h, w), resized to 100 x 150 and padded to 128 x 160 in the batch: the box is
    # normalised to the 100 x 150 image, so padding never enters the mapping.
    box = torch.tensor([[0.5, 0.5, 0.2, 0.4]])  # in the resized image: cx 75, cy 50, w 30, h 40
    out = boxes_to_original_pixels(box, size=(100, 150), orig_size=(200, 300))
    torch.testing.assert_close(out, torch.tensor([[120.0, 60.0, 180.0, 140.0]]))  # (60, 30, 90, 70) x 2
    # clipped to the original image
    out = boxes_to_original_pixels(torch.tensor([[0.95, 0.5, 0.2, 0.2]]), size=(100, 150), orig_size=(200, 300))
    torch.testing.assert_close(out, torch.tensor([[255.0, 80.0, 300.0, 120.0]]))


def test_topk_over_queries_and_classes():
    logits = torch.full((1, 3, 4), -10.0)
    logits[0, 2, 1], logits[0, 0, 3], logits[0, 2, 0] = 3.0, 2.0, 1.0  # query 2 yields two classes
    boxes = torch.tensor([[[0.1, 0.1, 0.1, 0.1], [0.5, 0.5, 0.1, 0.1], [0.5, 0.5, 0.5, 0.5]]])
    (result,) = post_process(logits, boxes, [(10, 10)], [(10, 10)], num_select=3)
    assert result["labels"].tolist() == [1, 3, 0]
    torch.testing.assert_close(result["scores"], torch.tensor([3.0, 2.0, 1.0]).sigmoid())
    torch.testing.assert_close(result["boxes"][0], torch.tensor([2.5, 2.5, 7.5, 7.5]))
    torch.testing.assert_close(result["boxes"][1], torch.tensor([0.5, 0.5, 1.5, 1.5]))
    (result,) = post_process(logits, boxes, [(10, 10)], [(10, 10)], num_select=300)
    assert len(result["scores"]) == 12  # all queries x classes when fewer than num_select


def synthetic_coco(num_images=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    images, annotations, categories = [], [], [{"id": 3, "name": "a"}, {"id": 7, "name": "b"}, {"id": 9, "name": "c"}]
    for image_id in range(1, num_images + 1):
        h, w = int(torch.randint(150, 400, (1,), generator=g)), int(torch.randint(150, 400, (1,), generator=g))
        images.append({"id": image_id, "height": h, "width": w, "file_name": f"{image_id}.jpg"})
        for _ in range(int(torch.randint(1, 6, (1,), generator=g))):
            bw, bh = float(torch.randint(10, w // 2, (1,), generator=g)), float(torch.randint(10, h // 2, (1,), generator=g))
            x, y = float(torch.randint(0, int(w - bw), (1,), generator=g)), float(torch.randint(0, int(h - bh), (1,), generator=g))
            annotations.append({"id": len(annotations) + 1, "image_id": image_id, "bbox": [x, y, bw, bh],
                                "area": bw * bh, "iscrowd": 0, "category_id": categories[len(annotations) % 3]["id"]})
    return {"images": images, "annotations": annotations, "categories": categories}


def oracle_ap(gt, shift=0.0):
    """Targets as the data pipeline builds them (resized, normalised), an oracle's logits/boxes from them,
    then the detector's post-processing and COCO evaluation."""
    contiguous = {c["id"]: i for i, c in enumerate(gt["categories"])}
    num_queries, num_classes = 10, len(contiguous)
    detections = []
    for img in gt["images"]:
        anns = [a for a in gt["annotations"] if a["image_id"] == img["id"]]
        size = (int(img["height"] * 0.6), int(img["width"] * 0.6))  # a resize transform
        xywh = torch.tensor([a["bbox"] for a in anns])
        cxcywh = torch.cat([xywh[:, :2] + xywh[:, 2:] / 2, xywh[:, 2:]], 1)
        cxcywh = cxcywh / torch.tensor([img["width"], img["height"]] * 2)  # normalised, like "boxes" in targets
        cxcywh[:, 0] += shift
        logits = torch.full((1, num_queries, num_classes), -8.0)
        boxes = torch.rand(1, num_queries, 4) * 0.5 + 0.25
        for q, a in enumerate(anns):
            logits[0, q, contiguous[a["category_id"]]] = 8.0
        boxes[0, :len(anns)] = cxcywh
        (res,) = post_process(logits, boxes, [size], [(img["height"], img["width"])], num_select=300)
        to_dataset = {i: c for c, i in contiguous.items()}
        for (x0, y0, x1, y1), s, l in zip(res["boxes"].tolist(), res["scores"].tolist(), res["labels"].tolist()):
            detections.append({"image_id": img["id"], "category_id": to_dataset[l], "bbox": [x0, y0, x1 - x0, y1 - y0],
                               "score": s})
    return evaluate_coco_detections(gt, detections)


def test_oracle_detector_scores_ap_100():
    gt = synthetic_coco()
    results = oracle_ap(gt)
    assert results["bbox/AP"] == pytest.approx(100.0, abs=1e-6)
    assert results["bbox/AP50"] == pytest.approx(100.0, abs=1e-6)
    # the same oracle with shifted boxes is no longer perfect (the test can fail)
    assert oracle_ap(gt, shift=0.05)["bbox/AP"] < 90.0
