"SSD family: parameter counts, gradients, box coder, batched matching, loss and decoding vs torchvision."
from types import SimpleNamespace
import pytest
import torch
from torchvision.ops import box_iou
from torchvision.models.detection import ssd300_vgg16
from torchvision.models.detection.ssd import SSD as TVSSD
from torchvision.models.detection import _utils as det_utils
from fastdet.boxes import pixels_to_bbox, bbox_to_pixels, is_padding
from conftest import pad_items
from fastdet.anchors.ssd import default_boxes, linear_scales, match_anchors, SSDBoxCoder, n_boxes_per_cell
from fastdet.models.ssd import create_ssd, fm_sizes, ssd_configs
from fastdet.losses.ssd import MultiBoxLoss, decode_ssd

torch.set_num_threads(1)

def n_params(m): return sum(p.numel() for p in m.parameters())

# ---------------------------------------------------------------- models
def test_ssd300_param_count_equals_torchvision():
    ours = create_ssd('ssd300_vgg16', num_classes=90)
    tv = ssd300_vgg16(num_classes=91, weights=None, weights_backbone=None)
    assert n_params(ours) == n_params(tv) == 35_641_826
    # and layer by layer: same multiset of parameter shapes
    shapes = lambda m: sorted(tuple(p.shape) for p in m.parameters())
    assert shapes(ours) == shapes(tv)

def test_feature_map_sizes():
    assert fm_sizes(create_ssd('ssd300_vgg16', 3), 300) == [(38, 38), (19, 19), (10, 10), (5, 5), (3, 3), (1, 1)]
    m = create_ssd('ssd512_vgg16', 3)
    sz = fm_sizes(m, 512)
    assert [s[0] for s in sz] == [64, 32, 16, 8, 4, 2, 1]
    assert m.default_boxes(sz, (512, 512)).shape[0] == 24564
    lite = create_ssd('ssdlite_mobilenetv2', 3)
    assert fm_sizes(lite, 320) == [(20, 20), (10, 10), (5, 5), (3, 3), (2, 2), (1, 1)]
    assert fm_sizes(lite, 300)[0] == (19, 19)
    # non-square and small inputs work for every layout
    for name in ssd_configs:
        m = create_ssd(name, 2)
        cls, reg, anc = m.eval()(torch.randn(1, 3, 96, 160))
        assert cls.shape[:2] == reg.shape[:2] == anc.shape[:2] and cls.shape[-1] == 3

@pytest.mark.parametrize('name,size', [('ssdlite_mobilenetv2', 128), ('ssd300_vgg16', 128), ('ssd300_resnet34', 96),
                                       ('resnet18', 96)])
def test_every_parameter_gets_a_gradient(name, size):
    torch.manual_seed(0)
    m = create_ssd(name, num_classes=3)
    # timm ResNets zero-initialise the last BN of each block, which blocks the gradient of the residual branch at step 0
    for mod in m.modules():
        if isinstance(mod, torch.nn.BatchNorm2d): torch.nn.init.ones_(mod.weight)
    x = torch.randn(2, 3, size, size)
    # ground truth = one default box of every map, so that every map gets a positive (and mined negatives)
    sz = fm_sizes(m, size)
    counts = [h * w * n for (h, w), n in zip(sz, n_boxes_per_cell(m.aspect_ratios))]
    first = torch.tensor([0] + counts).cumsum(0)[:-1]
    pick = [int(o) + (h * w // 2) * n for o, (h, w), n in zip(first, sz, n_boxes_per_cell(m.aspect_ratios))]
    anc = m.default_boxes(sz, (size, size))
    b0 = anc[pick].as_subclass(torch.Tensor)
    boxes = torch.stack([b0, torch.cat([torch.tensor([[-.3, -.3, .4, .5]]), torch.zeros(len(b0) - 1, 4)])])
    labels = torch.stack([torch.arange(len(b0)) % 3 + 1, torch.tensor([2] + [0] * (len(b0) - 1))])
    loss = MultiBoxLoss()(m(x), boxes, labels)
    loss.backward()
    missing = [n for n, p in m.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not missing, missing
    # every parameter is registered: the state dict holds them all
    assert sum(v.numel() for k, v in m.state_dict().items() if not k.endswith(('running_mean', 'running_var', 'num_batches_tracked'))) == n_params(m)

def test_timm_backbone_channels_from_feature_info():
    m = create_ssd('timm/efficientnet_b0', num_classes=2)
    assert m.cls_heads[0].in_channels == m.backbone.model.feature_info.channels()[0]
    assert len(m.cls_heads) == 6

# ---------------------------------------------------------------- box coder
def test_encoding_equals_torchvision_box_coder():
    torch.manual_seed(0)
    H, W = 300, 400
    anc_px = bbox_to_pixels(default_boxes([(10, 12), (5, 6)], [.2, .5, .8], [[2, 3], [2]]), (H, W))
    idx = torch.randint(0, len(anc_px), (200,))
    a = anc_px[idx]
    xy = torch.rand(200, 2) * torch.tensor([W, H]) * .8
    wh = torch.rand(200, 2) * 100 + 2
    g = torch.cat([xy, xy + wh], 1)
    tv = det_utils.BoxCoder(weights=(10., 10., 5., 5.)).encode_single(g, a)
    ours = SSDBoxCoder().encode(pixels_to_bbox(g, (H, W)), pixels_to_bbox(a, (H, W)))
    torch.testing.assert_close(ours, tv, atol=1e-4, rtol=1e-5)
    back = SSDBoxCoder().decode(ours, pixels_to_bbox(a, (H, W)))
    torch.testing.assert_close(back, pixels_to_bbox(g, (H, W)).as_subclass(torch.Tensor), atol=1e-5, rtol=0)

# ---------------------------------------------------------------- matching
def match_reference(anchors, gt, labels, thr=.5):
    "Per image, plainly: forced best default box per gt (later gt wins a shared one), then IoU >= thr."
    A = len(anchors)
    if len(gt) == 0: return torch.full((A,), -1), torch.zeros(A, dtype=torch.long)
    iou = box_iou(gt, anchors)
    best_iou, best_gt = iou.max(0)
    matched = torch.where(best_iou >= thr, best_gt, torch.full_like(best_gt, -1))
    for g in range(len(gt)): matched[int(iou[g].argmax())] = g
    cls = torch.where(matched >= 0, labels[matched.clamp(min=0)], torch.zeros_like(matched))
    return matched, cls

def random_cases(seed):
    g = torch.Generator().manual_seed(seed)
    def rbox(n, lo=.05, hi=.6):
        c = torch.rand(n, 2, generator=g) * 1.6 - .8
        s = torch.rand(n, 2, generator=g) * (hi - lo) + lo
        return torch.cat([c - s / 2, c + s / 2], 1).clamp(-1, 1)
    base = rbox(1)
    overl = (base + torch.randn(12, 4, generator=g) * .03).clamp(-1, 1)
    overl = torch.cat([overl[:, :2].minimum(overl[:, 2:] - .05), overl[:, 2:]], 1)
    return [
        torch.zeros(0, 4),  # no ground truth
        rbox(1),  # one box
        torch.tensor([[.30, .30, .303, .302]]),  # smaller than every default box
        overl,  # many overlapping boxes (shared best default boxes)
        rbox(7),
        rbox(3, .5, 1.5),
    ]

@pytest.mark.parametrize('seed', [0, 1, 2])
def test_batched_matching_equals_per_image_reference(seed):
    anchors = default_boxes([(8, 8), (4, 4), (2, 2), (1, 1)], linear_scales(4, .15, .9), [[2], [2, 3], [2, 3], [2]])
    cases = random_cases(seed)
    g = torch.Generator().manual_seed(seed + 10)
    items = [(b, torch.randint(1, 5, (len(b),), generator=g)) for b in cases]
    boxes, labels = pad_items(items)
    matched, cls = match_anchors(anchors, boxes, labels)
    assert matched.shape == (len(cases), len(anchors))
    for i, (b, l) in enumerate(items):
        m_ref, c_ref = match_reference(anchors.as_subclass(torch.Tensor), b, l)
        assert torch.equal(matched[i], m_ref), i
        assert torch.equal(cls[i], c_ref), i
    assert (matched[0] == -1).all() and (cls[0] == 0).all()
    assert (matched[2] >= 0).sum() == 1  # the tiny box still gets its best default box
    # and the same as torchvision's SSDMatcher on each image with objects
    for i, (b, l) in enumerate(items):
        if len(b): assert torch.equal(matched[i], det_utils.SSDMatcher(.5)(box_iou(b, anchors.as_subclass(torch.Tensor)))), i

def test_matching_ignores_padding():
    anchors = default_boxes([(4, 4), (2, 2)], [.3, .6, .9], [[2], [2]])
    b = torch.tensor([[[-.5, -.5, .5, .5], [0, 0, 0, 0], [0, 0, 0, 0]]])
    m1, c1 = match_anchors(anchors, b, torch.tensor([[2, 0, 0]]))
    m2, c2 = match_anchors(anchors, b[:, :1], torch.tensor([[2]]))
    assert torch.equal(m1, m2) and torch.equal(c1, c2)

# ---------------------------------------------------------------- loss
def torchvision_loss(preds, boxes, labels, hw):
    "torchvision's `SSD.compute_loss` on the same default boxes, predictions and targets, in pixels."
    cls, reg, anc = preds
    anchors = [bbox_to_pixels(a, hw) for a in anc]
    targets, matched = [], []
    for (b, l), a in zip([(b[~is_padding(b, l)], l[~is_padding(b, l)]) for b, l in zip(boxes, labels)], anchors):
        b = bbox_to_pixels(b, hw)
        targets.append(dict(boxes=b, labels=l))
        matched.append(det_utils.SSDMatcher(.5)(box_iou(b, a)) if len(b) else torch.full((len(a),), -1, dtype=torch.int64))
    me = SimpleNamespace(box_coder=det_utils.BoxCoder(weights=(10., 10., 5., 5.)), neg_to_pos_ratio=3)
    d = TVSSD.compute_loss(me, targets, dict(cls_logits=cls, bbox_regression=reg), anchors, matched)
    return d['classification'] + d['bbox_regression']

@pytest.mark.parametrize('seed', [0, 1])
def test_loss_equals_torchvision_compute_loss(seed):
    torch.manual_seed(seed)
    anc = default_boxes([(10, 10), (5, 5), (3, 3), (1, 1)], linear_scales(4, .15, .9), [[2], [2, 3], [2, 3], [2]])
    B, A, C = 4, anc.shape[0], 6
    cases = random_cases(seed)
    # (the 12 near-identical boxes of `random_cases` are left out here: their IoUs tie to within float rounding, and
    # pixels vs [-1,1] coordinates can then pick a different best default box; matching is checked on them above)
    items = [(b, torch.randint(1, C, (len(b),))) for b in [cases[4], cases[1], cases[0], cases[5]]]
    boxes, labels = pad_items(items)
    preds = (torch.randn(B, A, C), torch.randn(B, A, 4), anc.expand(B, -1, -1))
    ours = MultiBoxLoss()(preds, boxes, labels)
    ref = torchvision_loss(preds, boxes, labels, (300, 300))
    torch.testing.assert_close(ours, ref, atol=1e-4, rtol=1e-5)

def test_loss_negatives_and_single_class():
    anc = default_boxes([(4, 4), (2, 2), (1, 1)], linear_scales(3, .2, .9), [[2]] * 3)
    A = anc.shape[0]
    for G in (0, 3):  # a batch of only negatives: no box column at all, or only padding
        cls = torch.randn(2, A, 2, requires_grad=True); reg = torch.randn(2, A, 4, requires_grad=True)
        loss = MultiBoxLoss()((cls, reg, anc.expand(2, -1, -1)), torch.zeros(2, G, 4), torch.zeros(2, G, dtype=torch.long))
        loss.backward()
        assert loss.item() == 0 and torch.isfinite(cls.grad).all()
    # single class: logits [B, A, 2]
    cls = torch.randn(2, A, 2, requires_grad=True); reg = torch.randn(2, A, 4, requires_grad=True)
    b = torch.tensor([[[-.5, -.5, .3, .4]], [[0., 0, 0, 0]]]); l = torch.tensor([[1], [0]])
    loss = MultiBoxLoss()((cls, reg, anc.expand(2, -1, -1)), b, l); loss.backward()
    assert loss > 0 and cls.grad[1].abs().sum() == 0  # the image without objects mines no negatives (torchvision's rule)
    ref = torchvision_loss((cls.detach(), reg.detach(), anc.expand(2, -1, -1)), b, l, (64, 64))
    torch.testing.assert_close(loss.detach(), ref, atol=1e-4, rtol=1e-5)
    boxes, labels, scores = MultiBoxLoss().activation((cls, reg, anc.expand(2, -1, -1)))
    assert set(labels.unique().tolist()) <= {0, 1}

# ---------------------------------------------------------------- decoding
def test_decoding_equals_torchvision_postprocess():
    torch.manual_seed(0)
    anc = default_boxes([(10, 10), (5, 5), (3, 3), (1, 1)], linear_scales(4, .15, .9), [[2], [2, 3], [2, 3], [2]])
    B, A, C = 3, anc.shape[0], 5
    cls = torch.randn(B, A, C) * 3; reg = torch.randn(B, A, 4) * .5
    H = W = 320
    boxes, labels, scores = MultiBoxLoss().activation((cls, reg, anc.expand(B, -1, -1)))
    assert boxes.shape == (B, 100, 4) and labels.shape == scores.shape == (B, 100)
    me = SimpleNamespace(box_coder=det_utils.BoxCoder(weights=(10., 10., 5., 5.)), score_thresh=.01, topk_candidates=200,
                         nms_thresh=.45, detections_per_img=100)
    anchors = [bbox_to_pixels(anc, (H, W))] * B
    tv = TVSSD.postprocess_detections(me, dict(cls_logits=cls, bbox_regression=reg), anchors, [(H, W)] * B)
    for i in range(B):
        n = len(tv[i]['scores'])
        assert (scores[i] > 0).sum() == n
        torch.testing.assert_close(scores[i, :n], tv[i]['scores'])
        assert torch.equal(labels[i, :n], tv[i]['labels'])
        torch.testing.assert_close(bbox_to_pixels(boxes[i, :n], (H, W)), tv[i]['boxes'], atol=1e-3, rtol=0)
        assert (labels[i, n:] == 0).all() and (boxes[i, n:] == 0).all()
