"""Learning on real photos, from scratch: fastdet's recipe against torchvision's reference recipe, in one run.

Same network (`ssdlite320_mobilenet_v3_large`, no pretrained weights), same image size (320), batch size and number of
optimizer steps, same validation images, both scored with pycocotools:

- torchvision: `ssdlite320_mobilenet_v3_large(weights=None, weights_backbone=None)` trained as its detection references
  train SSDLite (`--data-augmentation ssdlite`: `RandomIoUCrop`, `RandomHorizontalFlip`, `SanitizeBoundingBoxes`; SGD
  momentum 0.9, weight decay 4e-5, cosine schedule with a linear warm-up; their lr 0.15 for 192 images a step,
  scaled linearly to the batch size here);
- fastdet: its from-scratch recipe (`fastdet train DATA --weights none`: `SCRATCH_RECIPE`: Adam one-cycle, SSD
  augmentation, weight EMA) on the same network, on `ssdlite_mobilenetv2`, and with flips only (the lift from
  augmentation as a number).

Datasets: the shared raccoon set (Pascal VOC xml, its own 160/40 split from train_labels.csv / test_labels.csv) and
COCO128 (COCO json; the last 26 images by file name are the validation set). The first line of each dataset is the
floor: one constant box on every image, the training boxes' median (on the raccoon photos, where one raccoon fills
most of the frame, it scores AP50 0.59).

Each model is trained with `--seeds` seeds (3 by default): the table gives each seed's AP, their mean and spread
(max - min), and for each fastdet run the ratio of its mean AP to torchvision's with a 95% paired bootstrap interval
(the validation images resampled 1000 times, the same draws for both models, every seed's detections scored on each
draw): a claimed improvement is either outside the noise of seeds and images, or it is not.

    FASTDET_TEST_DATA=../shared/data python benchmarks/learning.py --steps 300
    python benchmarks/learning.py --datasets raccoon --steps 200 --runs tv,fastdet,flips --seeds 5

A benchmark, not a test: it prints, it asserts nothing.
"""
import argparse, contextlib, io, json, math, os, sys, time, warnings
from pathlib import Path
import numpy as np
import torch
import torchvision
from torchvision import tv_tensors
from torchvision.transforms import v2 as T
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval
from fastdet.data.records import DetRecords, open_image
from fastdet.data.readers import read_records
from fastdet.data.core import DetDataLoaders
from fastdet.learner import make_learner
from fastdet.recipes import SCRATCH_RECIPE
from fastdet.commands import aug_tfms
from fastdet.evaluation import match_coco, coco_resampled, resample_weights, percentile_interval

warnings.filterwarnings('ignore')
SIZE, BS = 320, 16

# ---------- data

def raccoon(root:Path)->tuple:
    "Records, classes and validation indices of the raccoon set: VOC xml, split as its CSVs split it."
    recs = read_records(root/'annotations', 'voc', root/'images')
    valid = set(l.split(',')[0] for l in (root/'data'/'test_labels.csv').read_text().splitlines()[1:])
    return recs, [i for i, r in enumerate(recs) if r.file.name in valid]

def coco128(root:Path)->tuple:
    recs = read_records(root/'annotations'/'instances_train2017.json', 'coco', root/'images'/'train2017')
    order = sorted(range(len(recs)), key=lambda i: recs[i].file.name)
    return recs, sorted(order[-26:])

def coco_gt(recs, idx, classes)->COCO:
    "pycocotools ground truth of `recs[idx]`, category ids 1..C in `classes`' order."
    images, anns = [], []
    for j, i in enumerate(idx):
        r = recs[i]; h, w = r.hw
        images.append(dict(id=j, height=h, width=w, file_name=r.file.name))
        for b, l in zip(r.boxes.tolist(), r.labels):
            anns.append(dict(id=len(anns) + 1, image_id=j, category_id=classes.index(l) + 1, bbox=[b[0], b[1], b[2] - b[0], b[3] - b[1]],
                             area=(b[2] - b[0]) * (b[3] - b[1]), iscrowd=0))
    gt = COCO()
    gt.dataset = dict(images=images, annotations=anns, categories=[dict(id=i + 1, name=c) for i, c in enumerate(classes)])
    with contextlib.redirect_stdout(io.StringIO()): gt.createIndex()
    return gt

def score(gt:COCO, dets:list)->tuple:
    "`(AP, AP50)` of `dets` (COCO results) against `gt`."
    if not dets: return 0., 0.
    with contextlib.redirect_stdout(io.StringIO()):
        ev = COCOeval(gt, gt.loadRes(dets), 'bbox'); ev.evaluate(); ev.accumulate(); ev.summarize()
    return float(ev.stats[0]), float(ev.stats[1])

def matches(gt:COCO, dets:list):
    "fastdet's per-image matches of `dets` against `gt` (image ids 0..n-1), for resampling the validation images."
    A = gt.dataset['annotations']
    return match_coco([a['image_id'] for a in A], [a['category_id'] for a in A], [a['bbox'] for a in A], [a['area'] for a in A], None,
                      [d['image_id'] for d in dets], [d['category_id'] for d in dets], [d['bbox'] for d in dets], [d['score'] for d in dets],
                      n=len(gt.dataset['images']), cat_ids=[c['id'] for c in gt.dataset['categories']])

def ratio_interval(num:list, den:list, n_boot:int=1000, seed:int=0)->tuple:
    "Mean AP over the seeds of `num` over that of `den` (lists of matches on the same images), with its 95% paired bootstrap interval."
    w = resample_weights(num[0].n, n_boot, seed)
    mean = lambda ms, w: np.mean([coco_resampled(m, w)[0]['AP'] for m in ms], 0)
    one = np.ones((1, num[0].n))
    r = mean(num, w) / np.maximum(mean(den, w), 1e-12)
    return float(mean(num, one)[0] / max(mean(den, one)[0], 1e-12)), *percentile_interval(r)

def results(image_ids, boxes, labels, scores)->list:
    "COCO results of per-image xyxy pixel boxes."
    out = []
    for j, b, l, s in zip(image_ids, boxes, labels, scores):
        for (x1, y1, x2, y2), c, p in zip(b.tolist(), l, s.tolist()):
            out.append(dict(image_id=j, category_id=int(c), bbox=[x1, y1, x2 - x1, y2 - y1], score=p))
    return out

def constant_box(recs, train_idx, valid_idx, classes)->list:
    "The floor a detector must beat: on every validation image, one box, the training boxes' median (relative to the image), of the commonest class."
    rel = np.concatenate([recs[i].boxes.numpy() / np.array([recs[i].hw[1], recs[i].hw[0]] * 2) for i in train_idx if len(recs[i].boxes)])
    labels = [l for i in train_idx for l in recs[i].labels]
    c = classes.index(max(set(labels), key=labels.count)) + 1
    med = torch.tensor(np.median(rel, 0))
    return results(range(len(valid_idx)), [med[None] * torch.tensor([recs[i].hw[1], recs[i].hw[0]] * 2) for i in valid_idx],
                   [[c]] * len(valid_idx), [torch.ones(1)] * len(valid_idx))

# ---------- torchvision's reference recipe

class TVData(torch.utils.data.Dataset):
    "The training images with torchvision's `ssdlite` reference augmentation (transforms.v2)."
    def __init__(self, recs, idx, classes):
        self.recs, self.idx, self.classes = recs, idx, classes
        self.tfm = T.Compose([T.RandomIoUCrop(), T.RandomHorizontalFlip(), T.ToDtype(torch.float, scale=True),
                              T.SanitizeBoundingBoxes()])
    def __len__(self): return len(self.idx)
    def __getitem__(self, k):
        r = self.recs[self.idx[k]]
        img = tv_tensors.Image(torch.as_tensor(np.asarray(open_image(r.file))).permute(2, 0, 1))
        tgt = dict(boxes=tv_tensors.BoundingBoxes(r.boxes, format='XYXY', canvas_size=tuple(img.shape[-2:])),
                   labels=torch.tensor([self.classes.index(l) + 1 for l in r.labels], dtype=torch.int64))
        return self.tfm(img, tgt)

def train_torchvision(recs, train_idx, valid_idx, classes, steps, workers, seed=0):
    torch.manual_seed(seed)
    model = torchvision.models.detection.ssdlite320_mobilenet_v3_large(weights=None, weights_backbone=None, num_classes=len(classes) + 1)
    dl = torch.utils.data.DataLoader(TVData(recs, train_idx, classes), batch_size=BS, shuffle=True, drop_last=True, num_workers=workers,
                                     collate_fn=lambda b: tuple(zip(*b)))
    lr = 0.15 * BS / 192  # the reference: lr 0.15 for 24 images on each of 8 GPUs
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=lr, momentum=.9, weight_decay=4e-5)
    warm = max(1, steps // 20)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: (s + 1) / warm if s < warm else .5 * (1 + math.cos(math.pi * (s - warm) / max(1, steps - warm))))
    model.train(); step = 0
    while step < steps:
        for imgs, tgts in dl:
            keep = [i for i, t in enumerate(tgts) if len(t['boxes'])]  # (the reference drops images left without boxes)
            if not keep: continue
            loss = sum(model([imgs[i] for i in keep], [tgts[i] for i in keep]).values())
            opt.zero_grad(); loss.backward(); opt.step(); sched.step()
            step += 1
            if step == steps: break
    model.eval(); dets = []
    with torch.no_grad():
        for j0 in range(0, len(valid_idx), BS):
            ids = list(range(j0, min(j0 + BS, len(valid_idx))))
            imgs = [torch.as_tensor(np.asarray(open_image(recs[valid_idx[j]].file))).permute(2, 0, 1).float() / 255 for j in ids]
            out = model(imgs)
            dets += results(ids, [o['boxes'] for o in out], [o['labels'].tolist() for o in out], [o['scores'] for o in out])
    return dets

# ---------- fastdet's recipe

def train_fastdet(recs, valid_idx, classes, steps, arch, aug, workers, seed=0):
    from fastai.torch_core import set_seed
    set_seed(seed)
    r = SCRATCH_RECIPE
    dls = DetDataLoaders.from_records(DetRecords(recs, getattr(recs, 'categories', None)), vocab=classes, valid_idx=valid_idx, size=SIZE, bs=BS,
                                      batch_tfms=aug_tfms(aug), num_workers=workers, check_images=False)
    learn = make_learner(dls, arch, weights=None, ema=r['ema'] == 'on')
    epochs = max(1, round(steps / len(dls.train)))
    with learn.no_bar(), learn.no_logging(): learn.fit_one_cycle(epochs, r['lr'])
    files = [recs[i].file for i in valid_idx]
    with learn.no_bar(): preds = learn.predict_batch(files, bs=BS, num_workers=workers)
    return results(range(len(files)), [b for b, _, _ in preds], [[classes.index(n) + 1 for n in names] for _, names, _ in preds],
                   [s for _, _, s in preds]), epochs * len(dls.train)

RUNS = {'tv': 'torchvision ssdlite320_mobilenet_v3_large (reference recipe)',
        'fastdet': 'fastdet ssdlite320_mobilenet_v3_large (recipe)',
        'mbv2': 'fastdet ssdlite_mobilenetv2 (recipe)',
        'flips': 'fastdet ssdlite320_mobilenet_v3_large (flips only)'}

def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--datasets', default='raccoon,coco128')
    p.add_argument('--steps', type=int, default=300, help='optimizer steps per model (batch size 16)')
    p.add_argument('--runs', default='tv,fastdet,mbv2,flips', help=f"which of {list(RUNS)}")
    p.add_argument('--workers', type=int, default=0)
    p.add_argument('--threads', type=int, default=0)
    p.add_argument('--seeds', type=int, default=3, help='training seeds per model (0, 1, ...)')
    a = p.parse_args()
    if a.threads: torch.set_num_threads(a.threads)
    data = Path(os.environ.get('FASTDET_TEST_DATA', Path(__file__).parent.parent.parent/'shared'/'data'))
    print(f"torch {torch.__version__}, torchvision {torchvision.__version__}, {torch.get_num_threads()} threads; size {SIZE}, batch {BS}, "
          f"{a.steps} optimizer steps per model, from scratch, {a.seeds} seeds each")
    for name in a.datasets.split(','):
        recs, valid_idx = {'raccoon': raccoon, 'coco128': coco128}[name](data/name)
        train_idx = [i for i in range(len(recs)) if i not in set(valid_idx)]
        classes = sorted({l for r in recs for l in r.labels})
        gt = coco_gt(recs, valid_idx, classes)
        per_epoch = len(train_idx) // BS  # both drop the last partial batch
        steps = math.ceil(a.steps / per_epoch) * per_epoch  # whole epochs, the same for every run
        print(f"\n{name}: {len(train_idx)} training / {len(valid_idx)} validation images, {len(classes)} classes")
        floor = score(gt, constant_box(recs, train_idx, valid_idx, classes))
        print(f"  {'one constant box (the training boxes median), no training':<58} AP {floor[0]:.4f}  AP50 {floor[1]:.4f}")
        got, found = {}, {}
        for run in a.runs.split(','):
            t0, aps = time.time(), []
            for seed in range(a.seeds):
                if run == 'tv': dets, done = train_torchvision(recs, train_idx, valid_idx, classes, steps, a.workers, seed), steps
                else:
                    arch = 'ssdlite_mobilenetv2' if run == 'mbv2' else 'ssdlite320_mobilenet_v3_large'
                    dets, done = train_fastdet(recs, valid_idx, classes, steps, arch, 'flip' if run == 'flips' else SCRATCH_RECIPE['aug'], a.workers, seed)
                aps.append(score(gt, dets)); found.setdefault(run, []).append(matches(gt, dets))
            got[run] = ap = np.array(aps)
            print(f"  {RUNS[run]:<58} AP {ap[:, 0].mean():.4f} (spread {np.ptp(ap[:, 0]):.4f}; seeds {', '.join(f'{v:.3f}' for v in ap[:, 0])})"
                  f"  AP50 {ap[:, 1].mean():.4f}  {done} steps  {(time.time() - t0) / a.seeds:6.0f} s a seed", flush=True)
        if 'tv' in got:
            for run in got:
                if run == 'tv': continue
                if got['tv'][:, 0].mean() <= 0: print(f"  {run} / torchvision: torchvision's AP is 0"); continue
                r, lo, hi = ratio_interval(found[run], found['tv'])
                verdict = 'better' if lo > 1 else 'worse' if hi < 1 else 'inside the noise'
                print(f"  {run} / torchvision: mean AP x{r:.2f} [{lo:.2f}, {hi:.2f}] (95%, images resampled, {a.seeds} seeds each): {verdict}")

if __name__ == '__main__': main()
