"""COCO evaluation of one epoch, from accumulated tensors to the 12 stats: fastdet vs hotcoco vs faster-coco-eval vs pycocotools vs torchmetrics; and the time of the 95% bootstrap intervals.

    python benchmarks/metrics.py                 # 5,000 images x 100 detections, 20 classes
    python benchmarks/metrics.py --images 500    # quicker

fastdet's time starts from what `COCOMetric` holds after an epoch (padded [-1,1] boxes per batch, kept compactly)
and includes the mapping to original pixels (its default evaluator, `fastdet.evaluation`, works from arrays: no COCO
objects). hotcoco, pycocotools and faster-coco-eval get a ready COCO results list and a ready ground truth `COCO`
object, and are timed for `loadRes + evaluate + accumulate + summarize` only. The intervals are `COCOMetric.intervals()`
(1000 image-level bootstrap resamples, all 12 statistics and per-class AP), timed after the point estimate. torchmetrics gets per-image tensors and is timed for
`update + compute`. On a shared machine wall time depends on the neighbours, so each run is timed both as wall time
and as this process's CPU time, and the ratios are printed for both (hotcoco and fastdet use both cores in parts:
CPU time above wall time). Each evaluator's best of `--repeat` runs is kept (the intervals' too); fastdet (point
estimate and intervals) and hotcoco run in turn, the others after them (a run of faster-coco-eval leaves this process's memory in a state that slows the next numpy
evaluation by 20-50%: measured, 0.30-0.35 s against 0.43-0.61 s, a sleep between them does not help).
The paired bootstrap of two models (1000 resamples) is timed against `hotcoco.compare`, the other evaluator with one.
"""
import argparse, contextlib, copy, io, time, warnings
from types import SimpleNamespace
import numpy as np
import torch

from fastai.vision.core import TensorBBox
from fastai.vision.data import bb_pad
from fastdet.boxes import convert_boxes, pixels_to_bbox, pad_detections
from fastdet.metrics import COCO_STATS, COCOMetric, coco_backend


def make_data(n_images=5000, n_dets=100, n_classes=20, seed=0):
    "Per-image original sizes, ground truth and detections (pixel xyxy): jittered true boxes, duplicates, background."
    g = torch.Generator().manual_seed(seed)
    data = []
    for i in range(n_images):
        h, w = int(torch.randint(300, 640, (1,), generator=g)), int(torch.randint(300, 640, (1,), generator=g))
        n_gt = int(torch.randint(0, 12, (1,), generator=g))
        wh = torch.rand(n_gt, 2, generator=g) * torch.tensor([w, h]) * .5 + 4
        xy = torch.rand(n_gt, 2, generator=g) * (torch.tensor([w, h]) - wh)
        gb = torch.cat([xy, xy + wh], 1)
        gl = torch.randint(1, n_classes + 1, (n_gt,), generator=g)
        k = min(n_dets, 2 * n_gt)
        src = torch.randint(0, max(n_gt, 1), (k,), generator=g)
        db = gb[src] + torch.randn(k, 4, generator=g) * wh[src].repeat(1, 2) * .1 if n_gt else torch.zeros(0, 4)
        dl = gl[src] if n_gt else torch.zeros(0, dtype=torch.long)
        flip = torch.rand(k, generator=g) < .1
        dl = torch.where(flip, torch.randint(1, n_classes + 1, (k,), generator=g), dl)
        nb = n_dets - k  # background boxes
        bwh = torch.rand(nb, 2, generator=g) * torch.tensor([w, h]) * .4 + 4
        bxy = torch.rand(nb, 2, generator=g) * (torch.tensor([w, h]) - bwh)
        db = torch.cat([db, torch.cat([bxy, bxy + bwh], 1)])
        db = torch.stack([db[:, 0].clamp(0, w), db[:, 1].clamp(0, h), db[:, 2].clamp(0, w), db[:, 3].clamp(0, h)], 1)
        db[:, 2:] = torch.maximum(db[:, 2:], db[:, :2] + 1)
        dl = torch.cat([dl, torch.randint(1, n_classes + 1, (nb,), generator=g)])
        ds = torch.rand(n_dets, generator=g)
        data.append(((h, w), gb, gl, db, dl, ds))
    return data


def filled_metric(data, bs=32):
    "A `COCOMetric` in the state an epoch leaves it: batches of padded [-1,1] detections and targets added."
    m = COCOMetric('AP')
    m.input_hw = (512, 512)
    for s in range(0, len(data), bs):
        b = data[s:s + bs]
        img = torch.cat([torch.full((len(d[4]),), i) for i, d in enumerate(b)])
        preds = pad_detections(img, torch.cat([pixels_to_bbox(d[3], d[0]) for d in b]), torch.cat([d[4] for d in b]),
                               torch.cat([d[5] for d in b]), len(b), 100)
        padded = bb_pad([(None, TensorBBox(pixels_to_bbox(gb, hw)), gl) for hw, gb, gl, db, dl, ds in b])
        targs = torch.stack([p[1] for p in padded]), torch.stack([p[2] for p in padded])
        m.accum_values(preds, targs)
    m._acc.items = [SimpleNamespace(hw=d[0], crowd=None, difficult=None) for d in data]
    m._acc.vocab = ['#na#'] + [f'c{i}' for i in range(1, 21)]
    return m


def coco_inputs(data, n_classes=20):
    "Ground truth dict and results list, as pycocotools users have them (the same pixel values fastdet evaluates)."
    from fastdet.boxes import bbox_to_pixels
    images, anns, dets = [], [], []
    for i, (hw, gb, gl, db, dl, ds) in enumerate(data):
        images.append(dict(id=i + 1, height=hw[0], width=hw[1]))
        gx = convert_boxes(bbox_to_pixels(pixels_to_bbox(gb, hw), hw).double(), 'xyxy', 'xywh').tolist()
        for b, l in zip(gx, gl.tolist()):
            anns.append(dict(id=len(anns) + 1, image_id=i + 1, category_id=l, bbox=b, area=b[2] * b[3], iscrowd=0))
        dx = convert_boxes(bbox_to_pixels(pixels_to_bbox(db, hw), hw).double(), 'xyxy', 'xywh').tolist()
        for b, l, s in zip(dx, dl.tolist(), ds.tolist()):
            dets.append(dict(image_id=i + 1, category_id=l, bbox=b, score=s))
    gt = dict(images=images, annotations=anns, categories=[dict(id=c, name=f'c{c}') for c in range(1, n_classes + 1)])
    return gt, dets


class timer:
    "Wall and process CPU seconds of a block."
    def __enter__(self): self.w, self.c = time.perf_counter(), time.process_time(); return self
    def __exit__(self, *a): self.wall, self.cpu = time.perf_counter() - self.w, time.process_time() - self.c


def run_fastdet(m):
    m._cache = {}
    with timer() as t: s = m.stats
    return t, s


def run_intervals(m):
    m._cache = {}
    m.stats
    with timer() as t: m.intervals(n_boot=1000)
    return t


def run_cocoapi(backend, gt, dets):
    if backend == 'hotcoco':
        import hotcoco
        COCOeval = hotcoco.COCOeval
        c = hotcoco.COCO(copy.deepcopy(gt))
    else:
        _, COCO, COCOeval = coco_backend(backend)
        c = COCO(); c.dataset = copy.deepcopy(gt); c.createIndex()
    with contextlib.redirect_stdout(io.StringIO()):
        d = copy.deepcopy(dets)
        with timer() as t:
            r = c.loadRes(d)
            E = COCOeval(c, r, 'bbox'); E.evaluate(); E.accumulate(); E.summarize()
    return t, dict(zip(COCO_STATS, map(float, E.stats)))


def run_torchmetrics(data, backend='pycocotools'):
    from torchmetrics.detection import MeanAveragePrecision
    from fastdet.boxes import bbox_to_pixels
    preds = [dict(boxes=bbox_to_pixels(pixels_to_bbox(db, hw), hw), labels=dl, scores=ds) for hw, gb, gl, db, dl, ds in data]
    targs = [dict(boxes=bbox_to_pixels(pixels_to_bbox(gb, hw), hw), labels=gl) for hw, gb, gl, db, dl, ds in data]
    with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
        warnings.simplefilter('ignore')
        with timer() as t:
            m = MeanAveragePrecision(box_format='xyxy', iou_type='bbox', backend=backend)
            m.update(preds, targs)
            r = m.compute()
    return t, float(r['map'])


def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--images', type=int, default=5000)
    ap.add_argument('--dets', type=int, default=100)
    ap.add_argument('--repeat', type=int, default=3, help='runs of fastdet, hotcoco and faster-coco-eval (best kept); the slow ones run once')
    ap.add_argument('--no-torchmetrics', action='store_true')
    a = ap.parse_args()
    data = make_data(a.images, a.dets)
    m = filled_metric(data)
    gt, dets = coco_inputs(data)
    print(f"{a.images} images x {a.dets} detections, 20 classes: {len(gt['annotations'])} ground truth boxes, {len(dets)} detections")
    runs = []
    for _ in range(a.repeat):  # the two fastest interleaved, so both see the same neighbours; the intervals with them
        runs.append((run_fastdet(m), run_cocoapi('hotcoco', gt, dets), (run_intervals(m), None)))
    best = lambda rs: min(rs, key=lambda x: x[0].wall)
    (t_fd, s_fd), (t_hc, s_hc), (t_ci, _) = best([r[0] for r in runs]), best([r[1] for r in runs]), best([r[2] for r in runs])
    t_fce, s_fce = best([run_cocoapi('faster_coco_eval', gt, dets) for _ in range(a.repeat)])
    t_pc, s_pc = run_cocoapi('pycocotools', gt, dets)
    res = [('fastdet COCOMetric (from tensors)', t_fd, s_fd['AP']), ('hotcoco', t_hc, s_hc['AP']), ('faster-coco-eval', t_fce, s_fce['AP']),
           ('pycocotools', t_pc, s_pc['AP'])]
    if not a.no_torchmetrics:
        t_tm, ap_tm = run_torchmetrics(data)
        res.append(('torchmetrics MeanAveragePrecision', t_tm, ap_tm))
    diff = {name: max(abs(s[k] - s_pc[k]) for k in COCO_STATS) for name, s in (('fastdet', s_fd), ('hotcoco', s_hc), ('faster-coco-eval', s_fce))}
    for name, d in diff.items(): assert d < 1e-6, (name, d)
    print(f"{'':36s} {'AP':>7s} | {'wall s':>7s} {'x hotcoco':>9s} {'x pycoco':>9s} | {'cpu s':>7s} {'x hotcoco':>9s} {'x pycoco':>9s}")
    for n, t, v in res:
        print(f"{n:36s} {v:7.4f} | {t.wall:7.2f} {t.wall / t_hc.wall:9.3f} {t.wall / t_pc.wall:9.3f} | {t.cpu:7.2f} {t.cpu / t_hc.cpu:9.3f} {t.cpu / t_pc.cpu:9.3f}")
    print(f"{'fastdet 95% intervals (1000 resamples)':36s} {'':7s} | {t_ci.wall:7.2f} {'':9s} {'':9s} | {t_ci.cpu:7.2f}")
    for kind in ('wall', 'cpu'):
        r1, r2 = getattr(t_fd, kind) / getattr(t_hc, kind), getattr(t_ci, kind) / getattr(t_fd, kind)
        print(f"targets ({kind}): fastdet <= 1.0x hotcoco ({r1:.3f}x: {'met' if r1 <= 1 else 'MISSED'}); "
              f"intervals <= 5x the point estimate ({r2:.2f}x: {'met' if r2 <= 5 else 'MISSED'})")
    print("largest difference from pycocotools over the 12 stats: " + ', '.join(f"{n} {d:.1e}" for n, d in diff.items()))
    t_pf, t_ph = run_paired(gt, dets)
    print(f"paired comparison of two models, 1000 resamples (from evaluated sets): fastdet coco_compare {t_pf.wall:.2f} s, "
          f"hotcoco.compare {t_ph.wall:.2f} s ({t_pf.wall / t_ph.wall:.2f}x; cpu {t_pf.cpu:.2f} s / {t_ph.cpu:.2f} s)")


def run_paired(gt, dets, n_boot=1000):
    "Time of the paired bootstrap alone, both sides from evaluated sets: fastdet's `coco_compare` on matches, hotcoco's `compare` on two `COCOeval`s."
    import hotcoco
    from fastdet.evaluation import match_coco, coco_compare
    rng = np.random.default_rng(1)
    dets_b = [{**d, 'score': float(np.clip(d['score'] + rng.normal(0, .05), 0, 1))} for d in dets]  # model B: the same boxes, other scores
    ids = sorted(i['id'] for i in gt['images']); pos = {i: n for n, i in enumerate(ids)}
    G = gt['annotations']
    def matches(ds):
        return match_coco([pos[a['image_id']] for a in G], [a['category_id'] for a in G], [a['bbox'] for a in G], [a['area'] for a in G],
                          [a.get('iscrowd', 0) for a in G], [pos[d['image_id']] for d in ds], [d['category_id'] for d in ds],
                          [d['bbox'] for d in ds], [d['score'] for d in ds], n=len(ids), cat_ids=[c['id'] for c in gt['categories']])
    def hc(ds):
        c = hotcoco.COCO(copy.deepcopy(gt))
        E = hotcoco.COCOeval(c, c.loadRes(copy.deepcopy(ds)), 'bbox')
        with contextlib.redirect_stdout(io.StringIO()): E.evaluate(); E.accumulate(); E.summarize()
        return E
    ma, mb, ea, eb = matches(dets), matches(dets_b), hc(dets), hc(dets_b)
    with timer() as t_f: coco_compare(ma, mb, n_boot=n_boot)
    with timer() as t_h: hotcoco.compare(ea, eb, n_bootstrap=n_boot, seed=0)
    return t_f, t_h


if __name__ == '__main__': main()
