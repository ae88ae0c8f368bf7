"""Fitted default boxes (`fit_boxes=True`, `fastdet train --fit-boxes`) against the architecture's own, on HIT-UAV's small
objects: the share of training boxes fitted, and the COCO stats of two detectors trained the same way from scratch
(same seed, data, schedule), with the paired bootstrap interval of each difference (the validation images resampled
1000 times, the same draws for both models).

Default: EfficientDet from scratch at 384 px (effdet's `efficientdet_d0` entry with the EfficientDet tutorial's small
configuration: a `mobilenetv3_small_100` backbone, levels P3-P5, one BiFPN cell), HIT-UAV's 276 training and 69
validation images (640 x 512 thermal, median box 21 px a side, 13 px at this size), 30 epochs of one-cycle at 6e-3, flips.

    FASTDET_TEST_DATA=../shared/data python benchmarks/fit_boxes.py                 # about 20 minutes on 2 CPU cores
    FASTDET_TEST_DATA=../shared/data python benchmarks/fit_boxes.py --epochs 10 --seeds 0 1

A benchmark, not a test: it prints, it asserts nothing.
"""
import argparse, os, time, warnings
from pathlib import Path
import torch
from fastai.torch_core import set_seed
from fastai.vision.augment import Flip
from fastdet.data.core import DetDataLoaders
from fastdet.learner import efficientdet_learner, ssd_learner
from fastdet.metrics import detection_results, compare
from fastdet.recipes import EFFDET_SHAPES_RECIPE


def learner(dls, arch:str, fit:bool):
    "A detector from scratch, with the architecture's default boxes or fitted ones."
    if arch == 'efficientdet':
        return efficientdet_learner(dls, 'efficientdet_d0', weights=None, config=EFFDET_SHAPES_RECIPE['config'], fit_boxes=fit)
    return ssd_learner(dls, arch, weights=None, fit_boxes=fit)


def main():
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('--arch', default='efficientdet', help="'efficientdet' (the small configuration above) or an SSD architecture")
    p.add_argument('--size', type=int, default=384)
    p.add_argument('--epochs', type=int, default=30)
    p.add_argument('--lr', type=float, default=6e-3)
    p.add_argument('--bs', type=int, default=16)
    p.add_argument('--seeds', type=int, nargs='+', default=[0])
    a = p.parse_args()
    data = Path(os.environ.get('FASTDET_TEST_DATA', '../shared/data'))/'hit-uav'/'data.yaml'
    warnings.filterwarnings('ignore')
    print(f"{a.arch} from scratch on {data.parent.name} at {a.size} px, {a.epochs} epochs of one-cycle at {a.lr:g}, bs {a.bs}, "
          f"{torch.get_num_threads()} threads")
    for seed in a.seeds:
        res = {}
        for fit in (False, True):
            set_seed(seed, reproducible=True)
            dls = DetDataLoaders.from_yolo(data, size=a.size, bs=a.bs, batch_tfms=[Flip()], num_workers=0)
            t0 = time.time()
            learn = learner(dls, a.arch, fit)
            t_fit = time.time() - t0
            recs = list(dls.train.items)
            share = dls.prior_fit(learn.recipe['arch'], **learn.recipe['model_kwargs']).share['all', 'all']
            with learn.no_bar(), learn.no_logging(): learn.fit_one_cycle(a.epochs, a.lr)
            res[fit] = detection_results(learn)
            print(f"seed {seed}, {'fitted ' if fit else 'default'} boxes: fit {share:.1%} of {len(recs)} images' boxes "
                  f"({t_fit:.0f} s to build{' and fit' if fit else ''}; trained in {time.time() - t0 - t_fit:.0f} s); "
                  f"options {learn.recipe['model_kwargs'] if fit else 'the architecture''s own'}", flush=True)
        stats, per_class = compare(res[False], res[True])
        print(stats.round(3).to_string(index=False))
        print(per_class.round(3).to_string(index=False), flush=True)


if __name__ == '__main__': main()
