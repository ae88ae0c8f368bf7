"COCO and VOC metrics against pycocotools and a straightforward VOC reference, on coco128 and inside a fastai loop."
import contextlib, copy, io, json
from collections import defaultdict
from types import SimpleNamespace
import numpy as np
import pytest
import torch

from fastdet.boxes import bbox_to_pixels, pixels_to_bbox, unpad, convert_boxes
from conftest import pad_items
from fastdet.metrics import COCO_STATS, COCOMetric, VOCMetric, coco_stats, voc_map, coco_backend

pycocotools = pytest.importorskip('pycocotools')
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval


def pycoco_stats(gt:dict, dets:list)->dict:
    "pycocotools run directly: loadRes + evaluate + accumulate + summarize."
    with contextlib.redirect_stdout(io.StringIO()):
        c = COCO(); c.dataset = copy.deepcopy(gt); c.createIndex()
        r = c.loadRes(copy.deepcopy(dets))
        E = COCOeval(c, r, 'bbox'); E.evaluate(); E.accumulate(); E.summarize()
    return dict(zip(COCO_STATS, map(float, E.stats)))


def assert_stats(a:dict, b:dict, tol=1e-6):
    for k in COCO_STATS: assert abs(a[k] - b[k]) <= tol, (k, a[k], b[k])


@pytest.fixture(scope='module')
def coco128(data_dir):
    with open(data_dir/'coco128'/'annotations'/'instances_train2017.json') as f: return json.load(f)


def make_dets(gt:dict, seed=0)->list:
    "Jittered true boxes, duplicates, wrong classes, misses, background boxes, boxes on crowd regions, images with none, one image with >100."
    rng = np.random.default_rng(seed)
    cats = [c['id'] for c in gt['categories']]
    by_img = defaultdict(list)
    for a in gt['annotations']: by_img[a['image_id']].append(a)
    dets = []
    def add(iid, cat, bb): dets.append(dict(image_id=iid, category_id=int(cat), bbox=[float(v) for v in bb], score=float(rng.random())))
    for k, im in enumerate(gt['images']):
        iid, W, H = im['id'], im['width'], im['height']
        if rng.random() < .1: continue  # an image without any detection
        for a in by_img[iid]:
            x, y, w, h = a['bbox']
            if a.get('iscrowd', 0):  # detections on a crowd region: ignored by COCO, not false positives
                for _ in range(int(rng.integers(1, 4))):
                    bw, bh = w * rng.uniform(.1, .5), h * rng.uniform(.1, .5)
                    add(iid, a['category_id'] if rng.random() < .7 else rng.choice(cats), [x + rng.uniform(0, w - bw), y + rng.uniform(0, h - bh), bw, bh])
                continue
            if rng.random() < .15: continue  # a miss
            for _ in range(1 + int(rng.random() < .3)):  # sometimes a duplicate
                j = rng.normal(0, .12, 4) * np.array([w, h, w, h])
                add(iid, a['category_id'] if rng.random() > .1 else rng.choice(cats), [x + j[0], y + j[1], max(w + j[2], 1.), max(h + j[3], 1.)])
        for _ in range(int(rng.integers(0, 6))):  # background boxes
            bw, bh = rng.uniform(4, W / 2), rng.uniform(4, H / 2)
            add(iid, rng.choice(cats), [rng.uniform(0, W - bw), rng.uniform(0, H - bh), bw, bh])
        if k == 3:  # more than maxDets=100 on one image
            for _ in range(150): add(iid, rng.choice(cats[:3]), [rng.uniform(0, W / 2), rng.uniform(0, H / 2), 30., 40.])
    return dets


def test_coco_json_exact(coco128):
    "All 12 stats equal pycocotools' on the COCO json with generated detections, with either evaluator."
    dets = make_dets(coco128)
    assert sum(a['iscrowd'] for a in coco128['annotations']) > 0
    ref = pycoco_stats(coco128, dets)
    assert 0.05 < ref['AP'] < 0.95 and ref['APs'] > 0
    for backend in ('auto', 'pycocotools', 'faster_coco_eval'):
        assert_stats(coco_stats(copy.deepcopy(coco128), copy.deepcopy(dets), backend=backend), ref)


def test_coco_json_path_and_per_class(coco128, data_dir):
    dets = make_dets(coco128, seed=1)
    stats, table = coco_stats(data_dir/'coco128'/'annotations'/'instances_train2017.json', dets, per_class=True)
    assert_stats(stats, pycoco_stats(coco128, dets))
    valid = table[table.AP > -1]
    assert len(table) == len(coco128['categories'])
    assert abs(valid.AP.mean() - stats['AP']) < 1e-9  # COCO's AP is the mean over classes with ground truth
    assert set(table.name) == {c['name'] for c in coco128['categories']}


def _per_image(gt:dict, dets:list):
    "The same data as per-image pixel xyxy tensors, and the reference json with box areas (what tensors imply)."
    ids = [im['id'] for im in gt['images']]
    g, d = {i: [] for i in ids}, {i: [] for i in ids}
    for a in gt['annotations']: g[a['image_id']].append((a['bbox'], a['category_id'], a['iscrowd']))
    for r in dets: d[r['image_id']].append((r['bbox'], r['category_id'], r['score']))
    def xyxy(bs): return convert_boxes(torch.tensor(bs, dtype=torch.float64).reshape(-1, 4), 'xywh', 'xyxy')
    G = [(xyxy([b for b, _, _ in g[i]]), torch.tensor([c for _, c, _ in g[i]], dtype=torch.long), torch.tensor([z for _, _, z in g[i]], dtype=torch.bool)) for i in ids]
    D = [(xyxy([b for b, _, _ in d[i]]), torch.tensor([c for _, c, _ in d[i]], dtype=torch.long), torch.tensor([s for _, _, s in d[i]], dtype=torch.float64)) for i in ids]
    ref = copy.deepcopy(gt)
    remap = {i: k + 1 for k, i in enumerate(ids)}
    for im in ref['images']: im['id'] = remap[im['id']]
    for a in ref['annotations']:
        bx = convert_boxes(xyxy(a['bbox']), 'xyxy', 'xywh')[0].tolist()
        a.update(image_id=remap[a['image_id']], bbox=bx, area=bx[2] * bx[3])
    rdets = [dict(image_id=k + 1, category_id=int(c), bbox=convert_boxes(b[None], 'xyxy', 'xywh')[0].tolist(), score=float(s))
             for k, (bs, cs, ss) in enumerate(D) for b, c, s in zip(bs, cs, ss)]
    return G, D, ref, rdets


def test_coco_tensors_exact(coco128):
    "Per-image pixel tensors (crowd flags included) give pycocotools' numbers on the equivalent json."
    G, D, ref, rdets = _per_image(coco128, make_dets(coco128, seed=2))
    assert_stats(coco_stats(G, D), pycoco_stats(ref, rdets))
    assert_stats(coco_stats(G, D, backend='pycocotools'), pycoco_stats(ref, rdets))


def test_coco_edges():
    "No detection at all: 0, not an error; one class; no output on stdout."
    G = [(torch.tensor([[0., 0., 50., 50.]]), torch.tensor([1])), (torch.zeros(0, 4), torch.zeros(0, dtype=torch.long))]
    none = [(torch.zeros(0, 4), torch.zeros(0, dtype=torch.long), torch.zeros(0))] * 2
    out = io.StringIO()
    with contextlib.redirect_stdout(out): s = coco_stats(G, none)
    assert out.getvalue() == '' and all(v == 0 for v in s.values())
    one = [(torch.tensor([[0., 0., 50., 50.]]), torch.tensor([1]), torch.tensor([.5])), none[0]]
    s = coco_stats(G, one)
    assert s['AP'] == pytest.approx(1.) and s['APs'] == -1. and s['APm'] == pytest.approx(1.)  # pycocotools: 1 / (1 + eps)


# ---------- VOC

def ref_voc_ap(rec, prec, use_07):
    if use_07:
        ap = 0.
        for t in np.arange(0., 1.1, 0.1):
            p = 0 if np.sum(rec >= t) == 0 else np.max(prec[rec >= t])
            ap = ap + p / 11.
        return ap
    mrec = np.concatenate(([0.], rec, [1.])); mpre = np.concatenate(([0.], prec, [0.]))
    for i in range(mpre.size - 1, 0, -1): mpre[i - 1] = max(mpre[i - 1], mpre[i])
    i = np.where(mrec[1:] != mrec[:-1])[0]
    return np.sum((mrec[i + 1] - mrec[i]) * mpre[i + 1])


def ref_voc(G, D, thr=.5, use_07=False):
    "Pascal VOC's voc_eval, written out plainly: one class at a time, one detection at a time."
    classes = sorted({int(l) for b, ls, df in G for l, f in zip(ls.tolist(), df.tolist()) if not f})
    aps = {}
    for c in classes:
        R, npos = {}, 0
        for i, (b, l, df) in enumerate(G):
            m = l == c
            R[i] = dict(bbox=b[m].double().numpy(), difficult=df[m].numpy(), det=[False] * int(m.sum()))
            npos += int((~df[m]).sum())
        ids, conf, BB = [], [], []
        for i, (b, l, s) in enumerate(D):
            m = l == c
            ids += [i] * int(m.sum()); conf += s[m].tolist(); BB += b[m].double().tolist()
        order = np.argsort(-np.array(conf), kind='stable')
        nd = len(order)
        tp, fp = np.zeros(nd), np.zeros(nd)
        for k, di in enumerate(order):
            r, bb, ovmax = R[ids[di]], np.array(BB[di]), -np.inf
            BBGT = r['bbox']
            if BBGT.size > 0:
                iw = np.maximum(np.minimum(BBGT[:, 2], bb[2]) - np.maximum(BBGT[:, 0], bb[0]), 0.)
                ih = np.maximum(np.minimum(BBGT[:, 3], bb[3]) - np.maximum(BBGT[:, 1], bb[1]), 0.)
                inters = iw * ih
                uni = (bb[2] - bb[0]) * (bb[3] - bb[1]) + (BBGT[:, 2] - BBGT[:, 0]) * (BBGT[:, 3] - BBGT[:, 1]) - inters
                ov = inters / uni
                ovmax, jmax = np.max(ov), np.argmax(ov)
            if ovmax > thr:
                if not r['difficult'][jmax]:
                    if not r['det'][jmax]: tp[k] = 1.; r['det'][jmax] = True
                    else: fp[k] = 1.
            else: fp[k] = 1.
        fp, tp = np.cumsum(fp), np.cumsum(tp)
        rec, prec = tp / float(npos), tp / np.maximum(tp + fp, np.finfo(np.float64).eps)
        aps[c] = ref_voc_ap(rec, prec, use_07)
    return float(np.mean(list(aps.values()))), aps


@pytest.mark.parametrize('use_07', [True, False])
def test_voc_exact(coco128, use_07):
    gt = copy.deepcopy(coco128)
    gt['annotations'] = [a for a in gt['annotations'] if not a['iscrowd']]
    G, D, _, _ = _per_image(gt, make_dets(gt, seed=3))
    rng = np.random.default_rng(0)
    G = [(b, l, torch.as_tensor(rng.random(len(l)) < .15)) for b, l, _ in G]  # some objects `difficult`
    ref, ref_aps = ref_voc(G, D, use_07=use_07)
    m, aps = voc_map(G, D, eleven_point=use_07)
    assert 0.05 < ref < 0.95
    assert abs(m - ref) <= 1e-6
    assert set(aps) == set(ref_aps) and all(abs(aps[c] - ref_aps[c]) <= 1e-6 for c in aps)
    # difficult flags change the result (ignored, not counted)
    m_nd, _ = voc_map([(b, l) for b, l, _ in G], D, eleven_point=use_07)
    assert abs(m_nd - ref_voc([(b, l, torch.zeros(len(l), dtype=torch.bool)) for b, l, _ in G], D, use_07=use_07)[0]) <= 1e-6
    assert m_nd != m


# ---------- the metrics' plumbing, with records (original sizes, crowd regions) and several metrics sharing one store

def _records(gt:dict):
    from fastdet.data.records import DetRecord
    by_img = defaultdict(list)
    for a in gt['annotations']: by_img[a['image_id']].append(a)
    recs = []
    for im in gt['images']:
        anns = by_img[im['id']]
        xyxy = lambda bs: convert_boxes(torch.tensor(bs, dtype=torch.float32).reshape(-1, 4), 'xywh', 'xyxy')
        recs.append(DetRecord(file=im['file_name'], boxes=xyxy([a['bbox'] for a in anns if not a['iscrowd']]),
                              labels=[a['category_id'] for a in anns if not a['iscrowd']], hw=(im['height'], im['width']),
                              crowd=xyxy([a['bbox'] for a in anns if a['iscrowd']]), image_id=im['id']))
    return recs


def test_metric_with_records_matches_pycocotools(coco128):
    "Batches in [-1,1] of a 320 input, records with original sizes and crowd regions: the metric equals pycocotools."
    recs, dets = _records(coco128), make_dets(coco128, seed=4)
    rng = np.random.default_rng(5)
    for r in recs: r.difficult = torch.as_tensor(rng.random(len(r.labels)) < .15)
    vocab = ['#na#'] + [str(c) for c in range(1, 91)]  # category ids as vocab indices
    by_img = defaultdict(list)
    for d in dets: by_img[d['image_id']].append(d)
    mets = [COCOMetric('AP'), COCOMetric('AP50'), COCOMetric('APs'), VOCMetric()]
    learn = SimpleNamespace(metrics=mets, loss_func=SimpleNamespace(activation=lambda p: p), dl=SimpleNamespace(items=recs),
                            dls=SimpleNamespace(vocab=vocab))
    for m in mets: m.reset()
    ref_gt = dict(images=[dict(id=k + 1) for k in range(len(recs))], categories=[dict(id=c) for c in range(1, 91)], annotations=[])
    ref_dets, voc_g, voc_d = [], [], []
    for s in range(0, len(recs), 16):
        batch = recs[s:s + 16]
        tg, pr = [], []
        for k, r in enumerate(batch):
            tb = pixels_to_bbox(r.boxes, r.hw)
            tg.append((tb, torch.tensor(r.labels, dtype=torch.long)))
            ds = by_img[r.image_id]
            db = pixels_to_bbox(convert_boxes(torch.tensor([d['bbox'] for d in ds]).reshape(-1, 4), 'xywh', 'xyxy'), r.hw)
            pr.append((db.half() if s == 0 else db, torch.tensor([d['category_id'] for d in ds], dtype=torch.long),
                       torch.tensor([d['score'] for d in ds])))
            # the reference sees what the metric sees: the [-1,1] boxes mapped back to the original pixels
            for b, l in zip(bbox_to_pixels(tb, r.hw), r.labels):
                bx = convert_boxes(b[None].double(), 'xyxy', 'xywh')[0].tolist()
                ref_gt['annotations'].append(dict(id=len(ref_gt['annotations']) + 1, image_id=s + k + 1, category_id=l, bbox=bx, area=bx[2] * bx[3], iscrowd=0))
            for cr in r.crowd:  # a crowd region without a class ignores every class
                bx = convert_boxes(cr[None].double(), 'xyxy', 'xywh')[0].tolist()
                for c in range(1, 91):
                    ref_gt['annotations'].append(dict(id=len(ref_gt['annotations']) + 1, image_id=s + k + 1, category_id=c, bbox=bx, area=bx[2] * bx[3], iscrowd=1))
            for b, l, sc in zip(bbox_to_pixels(pr[-1][0].float(), r.hw), pr[-1][1], pr[-1][2]):
                ref_dets.append(dict(image_id=s + k + 1, category_id=int(l), bbox=convert_boxes(b[None].double(), 'xyxy', 'xywh')[0].tolist(), score=float(sc)))
            voc_g.append((bbox_to_pixels(tb, r.hw), torch.tensor(r.labels), r.difficult))
            voc_d.append((bbox_to_pixels(pr[-1][0].float(), r.hw), pr[-1][1], pr[-1][2]))
        learn.pred = pad_items(pr, length=260)
        learn.yb = pad_items(tg)
        learn.xb = (torch.zeros(len(batch), 3, 320, 320),)
        for m in mets: m.accumulate(learn)
    ref = pycoco_stats(ref_gt, ref_dets)
    assert abs(mets[0].value - ref['AP']) <= 1e-6 and abs(mets[1].value - ref['AP50']) <= 1e-6 and abs(mets[2].value - ref['APs']) <= 1e-6
    assert_stats(mets[0].stats, ref)
    assert mets[1]._leader is mets[0] and mets[1]._acc.n == 0  # one store, one evaluation
    assert mets[0]._cache[('coco', 'auto')] is mets[1]._result()
    assert mets[0].per_class() is not None and mets[3].value > 0
    assert abs(mets[3].value - voc_map(voc_g, voc_d)[0]) <= 1e-9 and abs(mets[3].value - voc_map([g[:2] for g in voc_g], voc_d)[0]) > 1e-4


def test_metric_undoes_crop_resize():
    "A validation `Resize` that crops: boxes go back to the original image as `DetLearner.predict` maps them."
    from fastai.vision.augment import Resize
    from fastdet.data.records import DetRecord
    from fastdet.boxes import detections_to_pixels
    rsz = Resize(64, method='crop')
    recs = [DetRecord('a.jpg', [[60., 10., 120., 90.]], ['x'], hw=(100, 200)), DetRecord('b.jpg', [[5., 40., 50., 90.]], ['x'], hw=(200, 100))]
    m = COCOMetric('AP')
    learn = SimpleNamespace(metrics=[m], loss_func=SimpleNamespace(activation=lambda p: p), dls=SimpleNamespace(vocab=['#na#', 'x']),
                            dl=SimpleNamespace(items=recs, after_item=SimpleNamespace(fs=[rsz])), xb=(torch.zeros(2, 3, 64, 64),))
    d = torch.tensor([[[-1., -1., 1., 1.], [-.5, -.2, .3, .9]], [[-.2, -.2, .6, .4], [0., 0., 0., 0.]]])
    learn.pred = (d, torch.tensor([[1, 1], [1, 0]]), torch.tensor([[.9, .8], [.7, 0.]]))
    learn.yb = (d[:, :1], torch.tensor([[1], [1]]))
    m.accumulate(learn)
    data = m._acc.collect()
    ref = torch.cat([detections_to_pixels(d[0], (100, 200), rsz), detections_to_pixels(d[1, :1], (200, 100), rsz)])
    assert torch.allclose(torch.as_tensor(data.d_box), ref)
    assert torch.allclose(torch.as_tensor(data.d_box[0]), torch.tensor([50., 0., 150., 100.]))  # the centred square crop
    g = [(detections_to_pixels(d[0, :1], (100, 200), rsz), torch.tensor([1])), (detections_to_pixels(d[1, :1], (200, 100), rsz), torch.tensor([1]))]
    p = [(ref[:2], torch.tensor([1, 1]), torch.tensor([.9, .8])), (ref[2:], torch.tensor([1]), torch.tensor([.7]))]
    assert abs(m.value - coco_stats(g, p)['AP']) < 1e-9 and 0 < m.value < 1


def test_det_results_round_trip():
    "`collect` gives a `DetResults` of the 11 fields; its rows, handed back per image to `DetResults.from_records`, give the same fields and numbers."
    from dataclasses import fields
    from fastdet.data.records import DetRecord
    from fastdet.metrics import DetResults, _coco_from_accum, _voc_from_accum
    recs = [DetRecord('a.jpg', [[10., 10., 60., 50.], [100., 20., 180., 90.]], ['x', 'y'], hw=(100, 200), crowd=[[0., 60., 50., 100.]],
                      difficult=[False, True]),
            DetRecord('b.jpg', [[5., 40., 50., 90.]], ['x'], hw=(200, 100))]
    dets = [(torch.tensor([[12., 10., 60., 52.], [100., 20., 170., 90.], [5., 65., 45., 95.], [120., 30., 160., 80.]]),
             torch.tensor([1, 2, 1, 1]), torch.tensor([.9, .8, .7, .3])),
            (torch.tensor([[5., 40., 50., 88.], [0., 0., 30., 30.]]), torch.tensor([1, 2]), torch.tensor([.6, .5]))]
    m = COCOMetric('AP')
    learn = SimpleNamespace(metrics=[m], loss_func=SimpleNamespace(activation=lambda p: p), dls=SimpleNamespace(vocab=['#na#', 'x', 'y']),
                            dl=SimpleNamespace(items=recs), xb=(torch.zeros(2, 3, 64, 64),))
    learn.pred = pad_items([(pixels_to_bbox(b, r.hw), l, s) for (b, l, s), r in zip(dets, recs)])
    learn.yb = pad_items([(pixels_to_bbox(r.boxes, r.hw), torch.tensor([1 if l == 'x' else 2 for l in r.labels])) for r in recs])
    m.accumulate(learn)
    res = m._acc.collect()
    assert isinstance(res, DetResults) and res.n == 2 and res.class_ids() == [1, 2] and res.name(2) == 'y'
    assert {f.name for f in fields(DetResults)} == {'g_img', 'g_box', 'g_lbl', 'g_diff', 'crowd', 'd_img', 'd_box', 'd_lbl', 'd_score', 'vocab', 'n'}
    again = DetResults.from_records(recs, [(res.d_box[res.d_img == i], res.d_lbl[res.d_img == i], res.d_score[res.d_img == i]) for i in range(res.n)],
                                    res.vocab)
    for f in ('g_img', 'g_box', 'g_lbl', 'g_diff', 'd_img', 'd_box', 'd_lbl', 'd_score'): np.testing.assert_allclose(getattr(again, f), getattr(res, f), atol=1e-4)
    for a, b in zip(again.crowd_by_image(), res.crowd_by_image()): np.testing.assert_allclose(a[0], b[0]); assert a[1].tolist() == b[1].tolist()
    assert res.crowd_by_image()[0][1].tolist() == [-1]  # a crowd region without a class covers every class
    assert res.g_diff.tolist() == [False, True, False] and len(res.per_image(score=.65)[0][2]) == 3
    assert_stats(_coco_from_accum(again)['stats'], _coco_from_accum(res)['stats'], tol=1e-9)
    assert _voc_from_accum(again, .5, False)[1] == pytest.approx(_voc_from_accum(res, .5, False)[1]) and _coco_from_accum(res)['stats']['AP'] > 0


# ---------- inside fastai's loop

@pytest.mark.slow
def test_in_loop_equals_pycocotools():
    "`ssd_learner` logs the COCO stats each epoch; the last equals pycocotools on `learn.get_preds` mapped to original pixels."
    from fastdet.data.core import DetDataLoaders
    from fastdet.learner import ssd_learner
    dls = DetDataLoaders.from_shapes(n=48, size=96, render_size=128, bs=8, num_workers=0)
    mets = [COCOMetric('AP'), COCOMetric('AP50'), COCOMetric('AR100'), VOCMetric()]
    learn = ssd_learner(dls, weights=None, metrics=mets)
    out = io.StringIO()
    with contextlib.redirect_stdout(out): learn.fit(2, 1e-3)
    names = list(learn.recorder.metric_names)
    for n in ('AP', 'AP50', 'AR100', 'VOC_mAP'): assert n in names
    assert len(learn.recorder.values) == 2
    assert 'Average Precision' not in out.getvalue()  # pycocotools kept quiet
    logged = dict(zip(names[1:], learn.recorder.values[-1]))
    (boxes, labels, scores), targs = learn.get_preds(act=learn.loss_func.activation)
    recs = list(dls.valid.items)
    assert recs[0].hw == (128, 128)  # evaluated in pixels of the original images, not of the 96 px input
    t_boxes, t_labels = targs
    gt = dict(images=[dict(id=i + 1) for i in range(len(recs))], categories=[dict(id=c) for c in range(1, len(dls.vocab))], annotations=[])
    dets = []
    tg = [unpad(tb[None], tl[None])[0] for tb, tl in zip(t_boxes, t_labels)]
    for i, (r, (b, l, s), (tb, tl)) in enumerate(zip(recs, unpad(boxes, labels, scores), tg)):
        for bx, c in zip(bbox_to_pixels(tb, r.hw), tl):
            bx = convert_boxes(bx[None].double(), 'xyxy', 'xywh')[0].tolist()
            gt['annotations'].append(dict(id=len(gt['annotations']) + 1, image_id=i + 1, category_id=int(c), bbox=bx, area=bx[2] * bx[3], iscrowd=0))
        for bx, c, sc in zip(bbox_to_pixels(b, r.hw), l, s):
            dets.append(dict(image_id=i + 1, category_id=int(c), bbox=convert_boxes(bx[None].double(), 'xyxy', 'xywh')[0].tolist(), score=float(sc)))
    assert dets, 'the model should detect something'
    ref = pycoco_stats(gt, dets)
    for n in ('AP', 'AP50', 'AR100'):
        assert abs(logged[n] - max(ref[n], 0.)) <= 1e-6, (n, logged[n], ref[n])
    assert ref['AR100'] > 0

def test_metric_edges():
    "One-class vocab, fp16, an epoch of negatives without any detection: value 0 (not NaN or -1), nothing printed."
    vocab = ['#na#', 'thing']
    learn = SimpleNamespace(loss_func=SimpleNamespace(activation=lambda p: p), dl=SimpleNamespace(items=None), dls=SimpleNamespace(vocab=vocab))
    mets = [COCOMetric('AP'), COCOMetric('ARl'), VOCMetric(eleven_point=True)]
    learn.metrics = mets
    for m in mets: m.reset()
    learn.xb = (torch.zeros(2, 3, 64, 64),)
    learn.yb = (torch.zeros(2, 0, 4), torch.zeros(2, 0, dtype=torch.long))
    learn.pred = (torch.zeros(2, 100, 4).half(), torch.zeros(2, 100, dtype=torch.long), torch.zeros(2, 100).half())
    for m in mets: m.accumulate(learn)
    out = io.StringIO()
    with contextlib.redirect_stdout(out): vals = [m.value for m in mets]
    assert vals == [0., 0., 0.] and out.getvalue() == ''
    # one class with one object found: AP 1, and the store does not leak into the next epoch
    for m in mets: m.reset()
    learn.yb = (torch.tensor([[[-.5, -.5, .5, .5]]]), torch.tensor([[1]]))
    learn.pred = (torch.tensor([[[-.5, -.5, .5, .5], [0., 0., 0., 0.]]]).half(), torch.tensor([[1, 0]]), torch.tensor([[.7, 0.]]).half())
    learn.xb = (torch.zeros(1, 3, 64, 64),)
    for m in mets: m.accumulate(learn)
    assert [m.value for m in mets] == pytest.approx([1., 0., 1.], abs=1e-12)  # no large object in a 64x64 input: ARl undefined -> 0
    assert mets[0].stats['ARl'] == -1.
    assert mets[0]._acc.n == 1
