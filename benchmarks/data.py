"""Images/s of one pass over COCO128 at size 320, bs 16: fastdet DataLoaders vs a plain torch Dataset + DataLoader.

The plain loader reads the same files with PIL, converts to RGB, resizes to 320x320 (bilinear, like fastai's
`Resize(method='squish')`), scales the boxes, normalises with ImageNet statistics and pads boxes per batch: the
minimum any detection loader has to do. Both use the same `num_workers`; timings alternate and the best of
`--repeats` passes counts. Building the DataLoaders (the check pass that decodes every image once) is timed apart.

    FASTDET_TEST_DATA=../shared/data python benchmarks/data.py [--workers 2] [--repeats 5] [--fastai-resize]

The same run also times fastdet's training loader with SSD's augmentation (`ssd_aug_transforms()`: photometric
distortion, zoom-out, min-IoU crop, flip, as batch transforms in the main process, on the CPU here) against the
same loader without it, and prints that ratio and each transform's time per batch. Measured here (2 shared cores,
`--threads 1`): 50 against 90 images/s (0.55x); PhotometricDistort 83 ms and DetAffine 49 ms per batch of 16. With
torch's 2 threads on the loaded machine the same ops took 10x longer (OpenMP threads waiting for each other). In
training the batch transforms run where the batch is, on the GPU when there is one.

Where fastdet's time went (profiled in one process, one torch thread, per item): fastai's squish `Resize` copies the
image and pads it by zero pixels through numpy before resizing (`DetResize` skips both), and `open_image` copied
every image twice (EXIF transpose and RGB conversion of images needing neither). Items went from 54 to 77 images/s
against the plain loader's 86-90. fastai's default `num_workers` here is `defaults.cpus` (2), the same as the plain
loader gets. On a loaded machine the main process's two torch threads contend with the workers; both loaders pay
that alike (they normalise in the main process), but it makes single runs noisy: read the ratio, not the rates.
"""
import argparse, os, time
from pathlib import Path
import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset, DataLoader
from fastai.vision.core import imagenet_stats
from fastai.data.transforms import Normalize, IntToFloatTensor
from fastai.vision.augment import Resize
from fastdet.data.core import DetDataLoaders
from fastdet.data.readers import read_coco
from fastdet.data.augment import ssd_aug_transforms, dropped_boxes, PhotometricDistort, DetAffine

SIZE, BS = 320, 16

class PlainDataset(Dataset):
    "Read with PIL, RGB, resize to SIZE x SIZE, boxes scaled to the new size."
    def __init__(self, records): self.records = records
    def __len__(self): return len(self.records)
    def __getitem__(self, i):
        r = self.records[i]
        im = Image.open(r.file).convert('RGB')
        w, h = im.size
        im = im.resize((SIZE, SIZE), Image.BILINEAR)
        x = torch.from_numpy(np.array(im)).permute(2, 0, 1)
        boxes = r.boxes * torch.tensor([SIZE / w, SIZE / h, SIZE / w, SIZE / h])
        return x, boxes, torch.arange(len(r.labels)) + 1

_mean = torch.tensor(imagenet_stats[0]).view(1, 3, 1, 1)
_std = torch.tensor(imagenet_stats[1]).view(1, 3, 1, 1)

def plain_collate(batch):
    xs, bs, ls = zip(*batch)
    g = max(len(l) for l in ls)
    boxes = torch.zeros(len(bs), g, 4); labels = torch.zeros(len(bs), g, dtype=torch.long)
    for i, (b, l) in enumerate(zip(bs, ls)): boxes[i, :len(b)] = b; labels[i, :len(l)] = l
    return torch.stack(xs), boxes, labels

def one_pass(dl):
    n, t = 0, time.perf_counter()
    for x, *_ in dl:
        if x.dtype == torch.uint8: x = (x.float() / 255 - _mean) / _std  # plain: normalise in the main process, like fastai
        n += len(x)
    return n, time.perf_counter() - t

def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--data', default=os.environ.get('FASTDET_TEST_DATA', '../shared/data'))
    ap.add_argument('--workers', type=int, default=None, help="num_workers of both loaders (default: fastai's default)")
    ap.add_argument('--repeats', type=int, default=5)
    ap.add_argument('--fastai-resize', action='store_true', help="fastai's own squish `Resize` instead of `DetResize` (for comparison)")
    ap.add_argument('--threads', type=int, default=None, help="torch threads of the main process (default: torch's); on a loaded "
                    "machine 1 avoids OpenMP threads waiting for each other, which slows elementwise ops (the augmentation's) 10x")
    a = ap.parse_args()
    if a.threads: torch.set_num_threads(a.threads)
    ann = Path(a.data)/'coco128/annotations/instances_train2017.json'
    t = time.perf_counter()
    kw = {} if a.workers is None else dict(num_workers=a.workers)
    if a.fastai_resize: kw['item_tfms'] = [Resize(SIZE, method='squish')]
    dls = DetDataLoaders.from_coco(ann, size=SIZE, bs=BS, valid_pct=0., **kw)
    dls.add_tfms([Normalize.from_stats(*imagenet_stats)], 'after_batch')  # as a learner installs it: the same work as plain
    build = time.perf_counter() - t
    workers = dls.train.fake_l.num_workers
    fdl = dls.train.new(shuffle=False, drop_last=False)
    recs = read_coco(ann)
    pdl = DataLoader(PlainDataset(recs), batch_size=BS, shuffle=False, num_workers=workers, collate_fn=plain_collate)
    adls = DetDataLoaders.from_coco(ann, size=SIZE, bs=BS, valid_pct=0., check_images=False, batch_tfms=ssd_aug_transforms(), **kw)
    adls.add_tfms([Normalize.from_stats(*imagenet_stats)], 'after_batch')
    adl = adls.train.new(shuffle=False, drop_last=False)
    best = {'fastdet': 0., 'plain': 0., 'augmented': 0.}
    for _ in range(a.repeats):
        for name, dl in (('plain', pdl), ('fastdet', fdl), ('augmented', adl)):
            n, s = one_pass(dl)
            assert n == len(recs) == 128, n
            best[name] = max(best[name], n / s)
    print(f"COCO128, {len(recs)} images, size {SIZE}, bs {BS}, num_workers {workers}, {torch.get_num_threads()} torch threads, best of {a.repeats} passes"
          + (", fastai's Resize" if a.fastai_resize else ""))
    print(f"  plain torch DataLoader : {best['plain']:7.1f} images/s")
    print(f"  fastdet DataLoaders    : {best['fastdet']:7.1f} images/s")
    print(f"  ratio fastdet / plain  : {best['fastdet'] / best['plain']:.2f}x  (target >= 0.7x)")
    tfms = [t for t in adl.after_batch.fs if isinstance(t, (PhotometricDistort, DetAffine))]
    raw = adl.new(after_batch=[IntToFloatTensor()]).one_batch()  # one batch as the augmentation receives it
    ms = {}
    for t in tfms:
        t(raw, split_idx=0)
        t0 = time.perf_counter()
        for _ in range(5): t(raw, split_idx=0)
        ms[type(t).__name__] = (time.perf_counter() - t0) / 5 * 1000
    dropped, seen = dropped_boxes(adl)
    assert seen > 0, "the augmentation did not run"
    print(f"  fastdet + ssd_aug_transforms(): {best['augmented']:7.1f} images/s")
    print(f"  ratio augmented / fastdet: {best['augmented'] / best['fastdet']:.2f}x  ({dropped} of {seen} boxes dropped by the crops)")
    print("  per batch of %d in the main process: " % BS + ", ".join(f"{k} {v:.0f} ms" for k, v in ms.items()))
    print(f"  building the DataLoaders (read + check pass decoding every image): {build:.1f} s")

if __name__ == '__main__': main()
