"""Repeat-factor sampling against uniform sampling: the same recipe and steps, seed for seed, each class's AP with the
paired bootstrap interval of the difference (the validation images resampled 1000 times, the same draws for both).

Two sets:

- `shapes-longtail` (default): the built-in shapes, 1,200 images, one class made rare in the *training* images only
  (all but `--keep` of the training images holding it left out), the validation images untouched, so the rare class is
  scored on as many boxes as the others. Synthetic, but it learns in two minutes, so an effect can show.
- `coco128`: COCO128's 80 classes (real, imbalanced: person in 61 of 128 images, 29 classes in one image or two), its
  COCO json with the last 26 images by file name as the validation set, from scratch (no pretrained weights offline).

    python benchmarks/sampling.py                                  # shapes-longtail, 2 seeds
    FASTDET_TEST_DATA=../shared/data python benchmarks/sampling.py --data coco128 --steps 300 --seeds 1

A benchmark, not a test: it prints, it asserts nothing.
"""
import argparse, contextlib, io, json, os, tempfile, time, warnings
from pathlib import Path
import numpy as np
import pandas as pd
from fastai.torch_core import set_seed
from fastdet.commands import train
from fastdet.data.shapes import make_shapes, SHAPE_CLASSES
from fastdet.metrics import detection_results, coco_evaluation, coco_per_class
from fastdet.evaluation import coco_compare


def shapes_longtail(folder:Path, rare:str, keep:int, n:int=1200, seed:int=2)->tuple:
    "COCO files of the built-in shapes: training images with `rare` cut to `keep` images, and the untouched validation images (the last 20%)."
    recs = make_shapes(n=n, size=160, seed=seed)
    coco = json.loads((recs[0].file.parent.parent/'annotations.json').read_text())
    img_dir = recs[0].file.parent
    cid = SHAPE_CLASSES.index(rare) + 1
    ids = [im['id'] for im in coco['images']]
    valid = set(ids[int(.8 * len(ids)):])
    holds = {a['image_id'] for a in coco['annotations'] if a['category_id'] == cid}
    kept_rare = sorted(holds - valid)[:keep]
    train = {i for i in ids if i not in valid and (i not in holds or i in kept_rare)}
    def subset(keep_ids, name):
        d = dict(coco, images=[im for im in coco['images'] if im['id'] in keep_ids],
                 annotations=[a for a in coco['annotations'] if a['image_id'] in keep_ids])
        (folder/name).write_text(json.dumps(d))
        return folder/name
    return subset(train, 'train.json'), subset(valid, 'valid.json'), img_dir, dict(train=len(train), valid=len(valid), rare_train=len(kept_rare))


def coco128_split(folder:Path, data_dir:Path)->tuple:
    "COCO128's json split by file name: the last 26 images are the validation set (as benchmarks/learning.py)."
    src = data_dir/'coco128'
    coco = json.loads((src/'annotations'/'instances_train2017.json').read_text())
    ims = sorted(coco['images'], key=lambda im: im['file_name'])
    valid = {im['id'] for im in ims[-26:]}
    def subset(pick, name):
        keep = {im['id'] for im in ims if pick(im['id'])}
        d = dict(coco, images=[im for im in ims if im['id'] in keep], annotations=[a for a in coco['annotations'] if a['image_id'] in keep])
        (folder/name).write_text(json.dumps(d))
        return folder/name
    tr, va = subset(lambda i: i not in valid, 'train.json'), subset(lambda i: i in valid, 'valid.json')
    return tr, va, src/'images'/'train2017', dict(train=128 - 26, valid=26)


def run(data, valid, images, sampling, seed, out, **kw):
    "Train one model as `fastdet train` does; its validation's matches and per-class table."
    set_seed(seed, reproducible=True)
    with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
        warnings.simplefilter('ignore')
        learn, stats = train(data=str(data), valid=str(valid), images=str(images), valid_images=str(images), sampling=sampling,
                             out=str(out), exist_ok=True, show=False, validate='last', **kw)
    ev = coco_evaluation(detection_results(learn))
    return ev.matches, coco_per_class(ev), stats


def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--data', default='shapes-longtail', choices=['shapes-longtail', 'coco128'])
    ap.add_argument('--rare', default='triangle', help='shapes-longtail: the class made rare')
    ap.add_argument('--keep', type=int, default=25, help='shapes-longtail: training images of the rare class kept')
    ap.add_argument('--thresh', type=float, default=0.1, help='repeat-factor threshold (--sampling rfs:T)')
    ap.add_argument('--seeds', type=int, default=2)
    ap.add_argument('--first-seed', type=int, default=0, help='seeds first_seed .. first_seed + seeds - 1')
    ap.add_argument('--steps', type=int, default=None, help='optimizer steps (default: the recipe\'s epochs)')
    a = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix='fastdet_sampling_'))
    if a.data == 'shapes-longtail':
        tr, va, img, info = shapes_longtail(tmp, a.rare, a.keep)
        kw = dict(weights='none', arch='ssdlite_mobilenetv2', size=160, lr=1e-2, epochs=5, aug='flip', ema='off')
    else:
        tr, va, img, info = coco128_split(tmp, Path(os.environ['FASTDET_TEST_DATA']))
        kw = dict(weights='none')
    if a.steps: kw['max_steps'] = a.steps
    print(f"{a.data}: {info}; rfs threshold {a.thresh}; {a.seeds} seeds; {kw}")
    per, pairs = {'uniform': [], 'rfs': []}, []
    for s in range(a.first_seed, a.first_seed + a.seeds):
        t0 = time.time()
        mu, cu, su = run(tr, va, img, None, s, tmp/f'u{s}', **kw)
        mr, cr, sr = run(tr, va, img, f'rfs:{a.thresh}', s, tmp/f'r{s}', **kw)
        per['uniform'].append(cu.set_index('name').AP); per['rfs'].append(cr.set_index('name').AP)
        stats, cls = coco_compare(mu, mr, n_boot=1000, seed=s)
        pairs.append((stats.set_index('stat').loc['AP'], cls.assign(name=cu.name.values).set_index('name')))
        print(f"seed {s}: AP uniform {su['AP']:.4f}, rfs {sr['AP']:.4f} ({time.time() - t0:.0f} s)")
    mean = lambda xs: pd.concat(xs, axis=1).mean(1)
    u, r = mean(per['uniform']), mean(per['rfs'])
    print(f"\n{'class':16s} {'AP uniform':>10s} {'AP rfs':>8s}  per seed: rfs - uniform [95% paired interval], share of resamples rfs better")
    for name in u.index:
        seeds = '; '.join(f"{c.loc[name, 'delta']:+.3f} [{c.loc[name, 'lo']:+.3f}, {c.loc[name, 'hi']:+.3f}] {c.loc[name, 'p_B_better']:.2f}" for _, c in pairs)
        print(f"{str(name):16s} {u[name]:10.4f} {r[name]:8.4f}  {seeds}")
    allap = '; '.join(f"{p['delta']:+.4f} [{p['lo']:+.4f}, {p['hi']:+.4f}]" for p, _ in pairs)
    print(f"{'all classes':16s} {u.mean():10.4f} {r.mean():8.4f}  AP: {allap}")


if __name__ == '__main__': main()
