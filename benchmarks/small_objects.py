"""Small objects in large images (HIT-UAV): whole-image prediction, sliced prediction (`predict_sliced`), and sliced
training (`slice=`, `fastdet train --slice`) then sliced prediction; AP and AP_small with their 95% bootstrap intervals,
the paired interval of each difference (the same resampled validation images for both), and prediction images/s.

Default: EfficientDet from scratch (the EfficientDet tutorial's small configuration, `benchmarks/fit_boxes.py`) with
default boxes fitted to the training boxes (`fit_boxes=True`: without them the architecture's smallest boxes miss most of
HIT-UAV's 21 px objects), at 320 px: HIT-UAV's 640 x 512 images squished to 320 (objects halved) or cut into 320 px
tiles (objects at full size). Both models get the same number of optimizer steps of one-cycle at 6e-3, with flips.

    FASTDET_TEST_DATA=../shared/data python benchmarks/small_objects.py                  # about 30 minutes on 2 CPU cores
    FASTDET_TEST_DATA=../shared/data python benchmarks/small_objects.py --steps 100       # a quick look

A benchmark, not a test: it prints, it asserts nothing.
"""
import argparse, math, os, time, warnings
from pathlib import Path
import numpy as np
import torch
from fastai.torch_core import set_seed
from fastai.vision.augment import Flip
from fastdet.data.core import DetDataLoaders
from fastdet.learner import NoValidation
from fastdet.commands import StepCap
from fastdet.metrics import DetResults, coco_evaluation, compare, detection_results
from fastdet.evaluation import coco_intervals
from fastdet.slicing import sliced_results
from fit_boxes import learner


def trained(data, a, slice=None):
    "A detector trained `a.steps` optimizer steps on whole images (`slice=None`) or on tiles and whole images; `(learn, dls, seconds)`."
    set_seed(a.seed, reproducible=True)
    dls = DetDataLoaders.from_yolo(data, size=a.size, bs=a.bs, batch_tfms=[Flip()], num_workers=0, slice=slice, overlap=a.overlap)
    learn = learner(dls, a.arch, fit=True)
    epochs = math.ceil(a.steps / len(dls.train))
    per_epoch = min(len(dls.train), math.ceil(a.steps / epochs))  # the one-cycle fitted to them (`fastdet train --max-steps`)
    t0 = time.time()
    with learn.no_bar(), learn.no_logging(): learn.fit_one_cycle(epochs, a.lr, cbs=[NoValidation(), StepCap(per_epoch)])
    print(f"trained on {'tiles of %d px and whole images' % slice if slice else 'whole images'}: {len(dls.train_ds)} items, "
          f"{epochs} epochs of {per_epoch} steps in {time.time() - t0:.0f} s", flush=True)
    return learn, dls, time.time() - t0


def whole_results(learn, recs:list)->tuple:
    "`(DetResults, images/s)` of whole-image prediction on `recs`, every detection the model decodes."
    t0 = time.time()
    with learn.no_bar(): dets = learn.predict_batch(recs, score_thresh=0., num_workers=0)
    return DetResults.from_records(recs, dets, [str(v) for v in learn.dls.vocab]), len(recs) / (time.time() - t0)


def tiled_results(learn, recs:list, slice:int, overlap:float)->tuple:
    "`(DetResults, images/s)` of sliced prediction on `recs`."
    t0 = time.time()
    res = sliced_results(learn, recs, slice, overlap, progress=False)
    return res, len(recs) / (time.time() - t0)


def row(name:str, res:DetResults, speed:float)->str:
    ev = coco_evaluation(res)
    iv = coco_intervals(ev.matches)[0]
    def f(k): return f"{ev.stats[k]:.3f} [{iv[k][0]:.3f}, {iv[k][1]:.3f}]" if ev.stats[k] >= 0 else '-'
    return f"{name:<44} {f('AP'):>22} {f('AP50'):>22} {f('APs'):>22} {speed:8.1f}"


def main():
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('--arch', default='efficientdet', help="'efficientdet' (the small configuration above) or an SSD architecture")
    p.add_argument('--size', type=int, default=320, help='input size of the model; also the tile side')
    p.add_argument('--overlap', type=float, default=.2)
    p.add_argument('--steps', type=int, default=500, help='optimizer steps of each model')
    p.add_argument('--lr', type=float, default=6e-3)
    p.add_argument('--bs', type=int, default=16)
    p.add_argument('--seed', type=int, default=0)
    a = p.parse_args()
    data = Path(os.environ.get('FASTDET_TEST_DATA', '../shared/data'))/'hit-uav'/'data.yaml'
    warnings.filterwarnings('ignore')
    print(f"{a.arch} from scratch with fitted default boxes on {data.parent.name} at {a.size} px (tiles {a.size} px, overlap {a.overlap:g}), "
          f"{a.steps} steps of one-cycle at {a.lr:g}, bs {a.bs}, seed {a.seed}, {torch.get_num_threads()} threads", flush=True)
    whole, dls, _ = trained(data, a)
    sliced, _, _ = trained(data, a, slice=a.size)
    recs = list(dls.valid.items)  # the 69 whole validation images
    runs = {'trained whole, predicted whole': whole_results(whole, recs),
            'trained whole, predicted sliced': tiled_results(whole, recs, a.size, a.overlap),
            'trained sliced, predicted sliced': tiled_results(sliced, recs, a.size, a.overlap),
            'trained sliced, predicted whole': whole_results(sliced, recs)}
    print(f"\n{len(recs)} validation images, {sum(len(r.labels) for r in recs)} boxes; 95% intervals from 1000 bootstrap resamples of the images")
    print(f"{'':<44} {'AP':>22} {'AP50':>22} {'AP_small':>22} {'images/s':>8}")
    for k, (res, speed) in runs.items(): print(row(k, res, speed))
    base = runs['trained whole, predicted whole'][0]
    for k in list(runs)[1:3]:
        st = compare(base, runs[k][0])[0].set_index('stat')
        print(f"\n{k} - trained whole, predicted whole (paired):")
        print(st.loc[['AP', 'AP50', 'APs', 'AR100']].round(3).to_string())


if __name__ == '__main__': main()
