"EfficientDet through effdet: labelling, loss, decoding against effdet's own benches; freezing; learning."
import io, time, contextlib, warnings
import pytest
import torch
from effdet import DetBenchTrain, DetBenchPredict
from effdet.anchors import Anchors, AnchorLabeler
from fastdet.boxes import bbox_to_pixels, convert_boxes, unpad
from fastdet.data.core import DetDataLoaders
from fastdet.anchors.efficientdet import EffDetLabeler
from fastdet.models.efficientdet import create_efficientdet, efficientdet_archs, efficientdet_config, efficientdet_split
from fastdet.losses.efficientdet import EffDetLoss, effdet_targets
from fastdet.learner import efficientdet_learner

warnings.filterwarnings('ignore', category=FutureWarning)  # effdet's torch.jit.script


@pytest.fixture(scope='module')
def dls():
    return DetDataLoaders.from_shapes(n=48, size=256, render_size=256, bs=8, seed=3, num_workers=0)


def _random_targets(gen, B, G, n_boxes, size):
    "yxyx pixel boxes `[B, G, 4]` and classes (1..3, -1 padding) with `n_boxes[i]` real boxes in image i."
    yx = torch.rand(B, G, 2, generator=gen) * size * .8
    hw = torch.rand(B, G, 2, generator=gen) * size * .5 + 2
    boxes = torch.cat([yx, (yx + hw).clamp(max=size)], -1)
    cls = torch.randint(1, 4, (B, G), generator=gen)
    for i, n in enumerate(n_boxes):
        cls[i, n:] = -1; boxes[i, n:] = 0
    return boxes, cls


def _check_same_targets(ref, ours):
    rc, rb, rn = ref
    oc, ob, on = ours
    assert len(rc) == len(oc) == len(rb) == len(ob)
    for a, b in zip(rc + rb + [rn], oc + ob + [on]):  # identical, NaN where effdet has NaN (boxes with y2 < y1)
        torch.testing.assert_close(b, a, rtol=0, atol=0, equal_nan=True)


def _labellers(arch, size, n_classes):
    "effdet's `AnchorLabeler` and fastdet's `EffDetLabeler` on `arch`'s anchors at `size`."
    anchors = Anchors.from_config(efficientdet_config(arch, num_classes=n_classes, image_size=size))
    ours = EffDetLabeler(anchors)
    assert ours._anchors(torch.device('cpu'))[1] is not None  # the windowed search, not the dense reference
    return AnchorLabeler(anchors, n_classes, match_threshold=.5), ours


@pytest.mark.parametrize('n_boxes', [[0, 0, 0], [1, 1, 1], [1, 0, 5], [12, 3, 7, 0]])
def test_labeller_equals_effdet(n_boxes):
    ref, ours = _labellers('tf_efficientdet_d0', 256, 3)
    gen = torch.Generator().manual_seed(sum(n_boxes))
    for G in sorted({max(n_boxes), max(n_boxes) + 2}):
        boxes, cls = _random_targets(gen, len(n_boxes), G, n_boxes, 256)
        _check_same_targets(ref.batch_label_anchors(boxes, cls.float()), ours(boxes, cls))


@pytest.mark.parametrize('arch,size', [('tf_efficientdet_d0', 512), ('tf_efficientdet_lite0', 384), ('efficientdet_d0', 256)])
def test_labeller_equals_effdet_hard_cases(arch, size):
    "Tiny, huge and elongated boxes, duplicates (ties between boxes), grid-aligned boxes (ties between anchors)."
    ref, ours = _labellers(arch, size, 5)
    for seed in range(12):
        g = torch.Generator().manual_seed(seed)
        B, G = 4, 3 + seed
        yx = torch.rand(B, G, 2, generator=g) * size * .9
        hw = torch.rand(B, G, 2, generator=g) ** 2 * size * .7 + torch.rand(B, G, 2, generator=g) * 3
        bx = torch.cat([yx, (yx + hw).clamp(max=size)], -1)
        bx[0, 1] = bx[0, 0]  # duplicate box
        bx[1, 2] = torch.round(bx[1, 2] / 8) * 8  # on the anchor grid
        cl = torch.randint(1, 6, (B, G), generator=g)
        cl[3, G // 2:] = -1
        _check_same_targets(ref.batch_label_anchors(list(bx), list(cl.float())), ours(bx, cl))


@pytest.mark.parametrize('arch,size', [('tf_efficientdet_d0', 256), ('tf_efficientdet_lite0', 384), ('efficientdet_d1', 640)])
def test_labeller_equals_effdet_random_stress(arch, size):
    "Boxes of every scale (sub-pixel to larger than the image), partly or wholly outside, degenerate, on the grid."
    ref, ours = _labellers(arch, size, 4)
    g = torch.Generator().manual_seed(size)
    for _ in range(25):
        B, G = 3, int(torch.randint(1, 16, (1,), generator=g))
        yx = (torch.rand(B, G, 2, generator=g) * 1.4 - .2) * size
        hw = torch.exp(torch.rand(B, G, 2, generator=g) * 9 - 3) * size / 100  # 0.05% .. 400% of the image
        bx = torch.cat([yx, yx + hw], -1)
        snap = torch.rand(B, G, generator=g) < .2
        bx[snap] = torch.round(bx[snap] / 16) * 16  # on the anchor grid: ties between anchors
        bx[0, -1] = bx[0, 0]  # duplicate: ties between boxes
        flat = torch.rand(B, G, generator=g) < .05
        bx[flat, 2] = bx[flat, 0]  # no height
        cl = torch.randint(1, 5, (B, G), generator=g)
        cl[torch.rand(B, G, generator=g) < .15] = -1
        _check_same_targets(ref.batch_label_anchors(list(bx), list(cl.float())), ours(bx, cl))


def test_labeller_batch_without_boxes_and_issue_44():
    ref, ours = _labellers('tf_efficientdet_d0', 512, 1)
    # a batch in which no image has an object: no box columns at all
    empty_b, empty_c = torch.zeros(2, 0, 4), torch.zeros(2, 0, dtype=torch.long)
    o = ours(empty_b, empty_c)
    _check_same_targets(ref.batch_label_anchors(list(empty_b), list(empty_c.float())), o)
    assert (torch.cat([c.flatten() for c in o[0]]) == -1).all() and o[2].sum() == 0
    # effdet issue #44: a single box per image (there even with y2 < y1), one image
    tb = torch.tensor([[[468., 353., 52., 386.5]]]).int().float()
    tl = torch.tensor([[1]])
    _check_same_targets(ref.batch_label_anchors(list(tb), list(tl.float())), ours(tb, tl))
    tb = torch.tensor([[[52., 353., 468., 386.5]]])
    _check_same_targets(ref.batch_label_anchors(list(tb), list(tl.float())), ours(tb, tl))


def _effdet_reference_targets(dls, n):
    "Targets of the first `n` validation images built from the records (not from the batch), effdet-style."
    recs, vocab = list(dls.valid.items)[:n], list(dls.vocab)
    G = max([len(r.labels) for r in recs] + [1])
    boxes, cls = torch.zeros(n, G, 4), torch.full((n, G), -1.)
    for i, r in enumerate(recs):
        boxes[i, :len(r.labels)] = convert_boxes(r.boxes, 'xyxy', 'yxyx')  # rendered at 256 = model input
        cls[i, :len(r.labels)] = torch.tensor([float(vocab.index(c)) for c in r.labels])
    return boxes, cls


def test_targets_conversion(dls):
    x, b, l = dls.valid.one_batch()
    rb, rc = _effdet_reference_targets(dls, len(x))
    eb, ec = effdet_targets(b, l, (256, 256))
    G = rb.shape[1]
    real = rc > -1
    torch.testing.assert_close(eb[:, :G][real], rb[real], atol=1e-3, rtol=0)
    assert torch.equal(ec[:, :G], rc.long()) and (ec[:, G:] == -1).all()
    assert (eb[ec == -1] == 0).all()  # padding stays all-zero boxes


def test_loss_equals_detbenchtrain(dls):
    learn = efficientdet_learner(dls, 'tf_efficientdet_d0', weights=None)
    x, b, l = dls.valid.one_batch()
    model = learn.model.eval()  # no drop-path: both forwards see the same network
    rb, rc = _effdet_reference_targets(dls, len(x))
    bench = DetBenchTrain(model, create_labeler=True).eval()
    n = len(x)
    target = dict(bbox=rb, cls=rc, img_scale=torch.ones(n), img_size=torch.tensor([[256., 256.]] * n))
    with torch.no_grad():
        ref = bench(x, target)
        ours = learn.loss_func(model(x), b, l)
    assert ref['loss'].item() > 0
    torch.testing.assert_close(ours, ref['loss'], atol=1e-5, rtol=0)
    torch.testing.assert_close(learn.loss_func.class_loss, ref['class_loss'], atol=1e-5, rtol=0)
    torch.testing.assert_close(learn.loss_func.box_loss, ref['box_loss'], atol=1e-5, rtol=0)


def _canonical(dets):
    "Detections `[B, K, 6]` ordered by score (descending), then by box, so that ties are in a fixed order."
    out = []
    for d in dets:
        for col in (3, 2, 1, 0): d = d[torch.sort(d[:, col], stable=True)[1]]
        out.append(d[torch.sort(-d[:, 4], stable=True)[1]])
    return torch.stack(out)


@pytest.mark.parametrize('soft_nms', [False, True])
def test_detections_equal_detbenchpredict(dls, soft_nms):
    "effdet's post-processing, hard NMS or its Gaussian soft-NMS (`config.soft_nms`), as `DetBenchPredict` gives it."
    cfg = efficientdet_config('tf_efficientdet_d0', num_classes=len(dls.vocab) - 1, image_size=256, soft_nms=soft_nms)
    torch.manual_seed(0)
    model = create_efficientdet(cfg, pretrained=False).eval()
    with torch.no_grad():  # untrained heads give near-constant scores: spread them so NMS and top-k matter
        for p in model.class_net.predict.parameters(): p.add_(torch.randn_like(p) * 2.)
        for p in model.box_net.predict.parameters(): p.add_(torch.randn_like(p) * .05)
    x, _, _ = dls.valid.one_batch()
    if soft_nms: x = x[:2]  # effdet's soft-NMS is a Python loop over every candidate
    with torch.no_grad():
        ref = DetBenchPredict(model)(x)
        boxes, labels, scores = EffDetLoss(cfg).activation(model(x))
    assert boxes.shape == (len(x), 100, 4) and labels.shape == scores.shape == (len(x), 100)
    ours = torch.cat([bbox_to_pixels(boxes, (256, 256)), scores[..., None], labels[..., None].float()], -1)
    ref, ours = _canonical(ref), _canonical(ours)  # equal scores may come out of NMS in either order
    valid = ref[..., 4] > 0
    assert valid.sum() > 0
    torch.testing.assert_close(ours[..., :4][valid], ref[..., :4][valid], atol=1e-3, rtol=0)
    torch.testing.assert_close(ours[..., 4], ref[..., 4], atol=1e-6, rtol=0)
    assert torch.equal(ours[..., 5], ref[..., 5])
    # padding rows: zero box, label 0, score 0 (fastdet's protocol)
    pad = ~valid
    assert (boxes[pad] == 0).all() and (labels[pad] == 0).all() and (scores[pad] == 0).all()


def test_every_arch_configures():
    names = efficientdet_archs()
    assert {'tf_efficientdet_d0', 'tf_efficientdet_d7x', 'tf_efficientdet_lite0', 'efficientdet_d0', 'cspresdet50'} <= set(names)
    for name in names:
        size = 3 * 2 ** efficientdet_config(name).max_level
        cfg = efficientdet_config(name, num_classes=5, image_size=size)
        assert cfg.num_classes == 5 and tuple(cfg.image_size) == (size, size)


def test_size_error_names_valid_sizes():
    dls = DetDataLoaders.from_shapes(n=16, size=192, render_size=192, bs=4, seed=1, num_workers=0)
    with pytest.raises(ValueError, match=r'192, 192.*128 or 256'):
        efficientdet_learner(dls, 'tf_efficientdet_d0', weights=None)
    # a config with max_level 5 takes it (and the size comes from the DataLoaders)
    learn = efficientdet_learner(dls, 'tf_efficientdet_d0', weights=None, config=dict(max_level=5))
    assert tuple(learn.loss_func.hw) == (192, 192) and learn.loss_func.num_classes == 4


def test_freeze_trains_bifpn_and_heads(dls):
    learn = efficientdet_learner(dls, 'tf_efficientdet_d0', weights=None)
    m = learn.model
    groups = efficientdet_split(m)
    assert len(groups) == 3
    learn.create_opt()
    learn.freeze()
    trainable = sum(p.numel() for p in m.parameters() if p.requires_grad)
    expected = sum(p.numel() for mod in (m.fpn, m.class_net, m.box_net) for p in mod.parameters())
    assert trainable == expected
    assert not any(p.requires_grad for p in m.backbone.parameters())
    learn.unfreeze()
    assert all(p.requires_grad for p in m.parameters())


def test_predict_show_results_export(dls, tmp_path):
    import matplotlib; matplotlib.use('Agg')
    from fastai.learner import load_learner
    learn = efficientdet_learner(dls, 'tf_efficientdet_d0', weights=None, path=tmp_path, max_det=20)
    rec = list(dls.valid.items)[0]
    boxes, labels, scores = learn.predict(rec.file)
    assert boxes.shape == (len(labels), 4) and scores.shape == (len(labels),) and 0 < len(labels) <= 20
    assert set(labels) <= set(dls.vocab[1:]) and boxes.dtype == torch.float32
    assert (scores[:-1] >= scores[1:]).all()
    learn.show_results(max_n=2)
    learn.export('effdet.pkl')
    learn2 = load_learner(tmp_path/'effdet.pkl')
    b2, l2, s2 = learn2.predict(rec.file)
    assert torch.equal(b2, boxes) and l2 == labels and torch.equal(s2, scores)
    # the safe format: the same detections, bit for bit
    from fastdet.modelfile import save_detector, load_detector
    save_detector(learn, tmp_path/'effdet.pth')
    b3, l3, s3 = load_detector(tmp_path/'effdet.pth').predict(rec.file)
    assert torch.equal(b3, boxes) and l3 == labels and torch.equal(s3, scores)


def test_fine_tune_runs():
    "`fine_tune` (freeze, train BiFPN + heads, unfreeze, train all) on a tiny set; the backbone moves only when unfrozen."
    small = DetDataLoaders.from_shapes(n=16, size=128, render_size=128, bs=8, seed=2, num_workers=0)
    learn = efficientdet_learner(small, 'tf_efficientdet_d0', weights=None)
    bb0 = [p.detach().clone() for p in learn.model.backbone.parameters()]
    fpn0 = [p.detach().clone() for p in learn.model.fpn.parameters()]
    learn.create_opt(); learn.freeze()
    with learn.no_bar(), learn.no_logging(): learn.fit(1, 1e-3)
    assert all(torch.equal(a, b) for a, b in zip(bb0, learn.model.backbone.parameters()))
    assert not all(torch.equal(a, b) for a, b in zip(fpn0, learn.model.fpn.parameters()))
    with learn.no_bar(), learn.no_logging(): learn.fine_tune(1, 1e-3, freeze_epochs=1)
    assert not all(torch.equal(a, b) for a, b in zip(bb0, learn.model.backbone.parameters()))


def coco_map(learn)->float:
    "COCO mAP@[.5:.95] of `learn` on its validation set, with pycocotools directly."
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval
    recs, vocab = list(learn.dls.valid.items), list(learn.dls.vocab)
    b, l, s = learn.get_preds()[0]
    gt = dict(images=[dict(id=i, height=r.hw[0], width=r.hw[1]) for i, r in enumerate(recs)],
              categories=[dict(id=i, name=n) for i, n in enumerate(vocab) if i],
              annotations=[dict(id=k + 1, image_id=i, category_id=vocab.index(c), iscrowd=0, bbox=xywh,
                                area=xywh[2] * xywh[3])
                           for k, (i, xywh, c) in enumerate((i, xywh, c) for i, r in enumerate(recs)
                               for xywh, c in zip(convert_boxes(r.boxes, 'xyxy', 'xywh').tolist(), r.labels))])
    res = [dict(image_id=i, category_id=c, bbox=xywh, score=sc)
           for i, (r, (bb, ll, ss)) in enumerate(zip(recs, unpad(b, l, s)))
           for xywh, c, sc in zip(bbox_to_pixels(bb, r.hw, 'xywh').tolist(), ll.tolist(), ss.tolist())]
    with contextlib.redirect_stdout(io.StringIO()):
        G = COCO(); G.dataset = gt; G.createIndex()
        E = COCOeval(G, G.loadRes(res), 'bbox'); E.evaluate(); E.accumulate(); E.summarize()
    return float(E.stats[0])


@pytest.mark.slow
def test_learns_shapes_from_scratch():
    """From scratch (no weights) on the built-in shapes at 256: COCO mAP@[.5:.95] >= 0.3 by pycocotools, and rising.

    The detector is the EfficientDet tutorial's, `efficientdet_shapes_detector()`: `EFFDET_SHAPES_RECIPE` (effdet's
    `efficientdet_d0` table entry with a timm `mobilenetv3_small_100` backbone, levels P3-P5 for the 38-115 px shapes,
    one BiFPN cell, two head repeats; `fit_one_cycle(8, 6e-3)` under `torch.manual_seed(0)`, fastai's Adam, bs 16, 800
    training / 200 validation images), trained once per test session into the session's model cache (conftest: a fresh
    folder unless `$FASTDET_CACHE` is set) by whichever asks first, the docs build or this test. On a clean run (CI)
    it is trained from scratch in this session. Measured alone on this 2-core machine: mAP 0.41 in about 4 minutes.
    One torch thread when the machine is loaded (two threads on two busy cores thrash), both when it is idle."""
    import os, pandas as pd
    from fastdet.commands import efficientdet_shapes_detector
    from fastdet.recipes import EFFDET_SHAPES_RECIPE
    threads = torch.get_num_threads()
    torch.set_num_threads(1 if os.getloadavg()[0] > 1.5 else min(2, threads))
    try:
        t0 = time.time()
        learn = efficientdet_shapes_detector()
        elapsed = time.time() - t0
        with learn.no_bar(): m = coco_map(learn)
    finally: torch.set_num_threads(threads)
    hist = pd.read_csv(learn.path/'history.csv')
    print(f'EfficientDet on shapes from scratch: mAP@[.5:.95] {m:.3f} ({elapsed / 60:.1f} min to train or read from {learn.path}); '
          f'AP per epoch {hist.AP.round(3).tolist()}')
    assert learn.recipe['model_kwargs'] == EFFDET_SHAPES_RECIPE['config'] and len(learn.dls.train_ds) == 800
    assert len(hist) == EFFDET_SHAPES_RECIPE['epochs'] and hist.AP.iloc[0] < .2 < m  # from scratch: it learned in this run
    assert m >= 0.3 and abs(hist.AP.iloc[-1] - m) < 1e-6, (m, hist.AP.iloc[-1])  # fastdet's in-loop AP equals pycocotools'
