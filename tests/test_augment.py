"""fastdet.data.augment against torchvision's transforms.v2 (`RandomPhotometricDistort`, `RandomZoomOut`, `RandomIoUCrop`,
`RandomHorizontalFlip`) on real COCO128 photos, with the same random draws.

The images are those fastdet batches hold: each photo squished to 320 x 320 (`DetResize`), floats in [0, 1]; torchvision
gets the same tensors and its draws (`make_params`) are handed to fastdet's transforms (`apply`). torchvision's zoom-out
and crop return images of another size, which torchvision's SSD then resizes to its input size with a bilinear
`F.interpolate` (`GeneralizedRCNNTransform`); fastdet's batch transforms resample to the batch size in the same step.
So torchvision's output is compared after that resize, and fastdet's [-1,1] boxes are compared in the pixels of
torchvision's output image (`bbox_to_pixels` with torchvision's canvas size).
"""
import pickle
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torchvision import tv_tensors
from torchvision.transforms import v2 as T
from fastai.torch_core import TensorImage, TensorMultiCategory
from fastai.vision.core import TensorBBox
from fastdet.boxes import bbox_to_pixels, pixels_to_bbox, is_padding
from fastdet.data.readers import read_coco
from fastdet.data.core import DetDataLoaders
from fastdet.data.augment import (PhotometricDistort, ZoomOut, IoUCrop, DetFlip, DetAffine, ssd_aug_transforms,
                                  dropped_boxes, distort_colors, SSD_MEAN)
from conftest import pad_items

S = 320

@pytest.fixture(scope='module')
def photos(data_dir):
    "Six COCO128 photos with objects and their pixel boxes, squished to S x S: `[(image [3,S,S], boxes [G,4])]`."
    recs = [r for r in read_coco(data_dir/'coco128/annotations/instances_train2017.json') if len(r.boxes) >= 2][:6]
    out = []
    for r in recs:
        im = Image.open(r.file).convert('RGB')
        w, h = im.size
        x = torch.from_numpy(__import__('numpy').array(im.resize((S, S), Image.BILINEAR))).permute(2, 0, 1).float() / 255
        out.append((x, torch.as_tensor(r.boxes, dtype=torch.float32) * torch.tensor([S / w, S / h, S / w, S / h])))
    return out

def batch(photos, negative=False):
    "A fastai batch of `photos` (boxes [-1,1], padded, labels 1..G); with an image without objects last if `negative`."
    items = [(pixels_to_bbox(b, (S, S)), torch.arange(1, len(b) + 1)) for _, b in photos]
    xs = [x for x, _ in photos]
    if negative: items.append((torch.zeros(0, 4), torch.zeros(0, dtype=torch.long))); xs.append(photos[0][0].flip(1))
    b, l = pad_items(items)
    return TensorImage(torch.stack(xs)), TensorBBox(b), TensorMultiCategory(l)

def tv_sample(x, boxes, hw=(S, S)):
    return tv_tensors.Image(x), tv_tensors.BoundingBoxes(boxes, format='XYXY', canvas_size=hw)

def run(tfm, b, *params):
    "`tfm.apply(b, *params)` as plain tensors."
    return [t.as_subclass(torch.Tensor) for t in tfm.apply(b, *params)]

def resize(x): return F.interpolate(x[None], size=(S, S), mode='bilinear', align_corners=False)[0]

def test_photometric_equals_torchvision(photos):
    "Pixels equal torchvision's for the same factors, order and permutation, to float tolerance (HSV: fastai's `rgb2hsv`)."
    torch.manual_seed(0)
    xb = batch(photos)[0]
    ps, outs = [], []
    for i, (x, _) in enumerate(photos):
        tv = T.RandomPhotometricDistort(p=1. if i % 2 else .5)
        p = tv.make_params([x])
        outs.append(tv.transform(x, p))
        ps.append(p)
    neutral = dict(brightness_factor=1., contrast_factor=1., saturation_factor=1., hue_factor=0.)
    f = {k: torch.tensor([neutral[k] if p[k] is None else float(p[k]) for p in ps]) for k in neutral}
    params = dict(brightness=f['brightness_factor'], contrast=f['contrast_factor'], saturation=f['saturation_factor'],
                  hue=f['hue_factor'], contrast_before=torch.tensor([p['contrast_before'] for p in ps]),
                  perm=torch.stack([torch.arange(3) if p['channel_permutation'] is None else p['channel_permutation'] for p in ps]))
    assert (params['hue'] != 0).sum() >= 3 and (params['perm'] != torch.arange(3)).any()  # the draws exercise every step
    ours = PhotometricDistort().apply(xb, params)
    torch.testing.assert_close(ours.as_subclass(torch.Tensor), torch.stack(outs), atol=2e-5, rtol=0)

def test_photometric_draws():
    "Each distortion drawn with probability p within its range; the validation split is left alone."
    tfm = PhotometricDistort()
    torch.manual_seed(0)
    d = tfm.draw(torch.zeros(4000, 3, 1, 1))
    for k, rng, neutral in (('brightness', tfm.brightness, 1.), ('contrast', tfm.contrast, 1.), ('saturation', tfm.saturation, 1.), ('hue', tfm.hue, 0.)):
        on = d[k] != neutral
        assert abs(on.float().mean() - .5) < .03 and rng[0] <= d[k][on].min() and d[k][on].max() <= rng[1]
    assert abs(d['contrast_before'].float().mean() - .5) < .03
    assert abs((d['perm'] != torch.arange(3)).any(1).float().mean() - .5 * 5 / 6) < .03  # a random permutation is the identity 1/6 of the time
    x = TensorImage(torch.rand(2, 3, 8, 8))
    assert tfm(x, split_idx=1) is x

def test_zoom_out_equals_torchvision(photos):
    "Boxes equal torchvision's `RandomZoomOut` in its canvas pixels; pixels equal its canvas resized to S x S."
    torch.manual_seed(1)
    b = batch(photos)
    tv = T.RandomZoomOut(fill=list(SSD_MEAN), p=1.)
    pads, tv_out = [], []
    for x, bx in photos:
        img, boxes = tv_sample(x, bx)
        p = tv.make_params([img, boxes])
        tv_out.append((tv.transform(img, p), tv.transform(boxes, p)))
        pads.append(p['padding'])
    tfm = ZoomOut()
    xo, bo, lo = run(tfm, b, dict(padding=torch.tensor(pads, dtype=torch.float)))
    for i, (img, boxes) in enumerate(tv_out):
        g = len(photos[i][1])
        torch.testing.assert_close(bbox_to_pixels(bo[i, :g], boxes.canvas_size), boxes.as_subclass(torch.Tensor), atol=2e-3, rtol=0)
        torch.testing.assert_close(xo[i].as_subclass(torch.Tensor), resize(img.as_subclass(torch.Tensor)), atol=1e-4, rtol=0)
    assert max(img.shape[-1] for img, _ in tv_out) > 2 * S  # some canvases at least twice the image
    _eq(lo, b[2]); assert tfm.n_dropped == 0

def _eq(a, b): assert torch.equal(a.as_subclass(torch.Tensor), b.as_subclass(torch.Tensor))

def _tv_crop_params(tv, img, boxes, seed):
    "torchvision's draw of a crop (a draw that leaves the image whole is drawn again)."
    for s in range(seed, seed + 100):
        torch.manual_seed(s)
        p = tv.make_params([img, boxes])
        if p and not p['is_within_crop_area'].all(): return p  # a crop that drops boxes: the case to test
    raise AssertionError('no crop dropping a box in 100 draws')

def test_iou_crop_equals_torchvision(photos):
    "Kept boxes are torchvision's `is_within_crop_area`, clipped boxes equal its crop's in pixels; pixels its crop resized."
    b = batch(photos)
    tv = T.RandomIoUCrop()
    ps, tv_out = [], []
    for i, (x, bx) in enumerate(photos):
        img, boxes = tv_sample(x, bx)
        p = _tv_crop_params(tv, img, boxes, 10 * i)
        tv_out.append((tv.transform(img, p), tv.transform(boxes, p), p['is_within_crop_area']))
        ps.append([p['left'], p['top'], p['width'], p['height']])
    tfm = IoUCrop()
    xo, bo, lo = run(tfm, b, dict(do=torch.ones(len(ps), dtype=torch.bool), ltwh=torch.tensor(ps, dtype=torch.float)))
    dropped = 0
    for i, (img, boxes, within) in enumerate(tv_out):
        g = len(photos[i][1])
        kept = lo[i, :g] != 0
        assert torch.equal(kept, within)
        torch.testing.assert_close(bbox_to_pixels(bo[i, :g][kept], boxes.canvas_size), boxes.as_subclass(torch.Tensor)[within], atol=1e-3, rtol=0)
        assert (bo[i, :g][~kept] == 0).all()
        torch.testing.assert_close(xo[i].as_subclass(torch.Tensor), resize(img.as_subclass(torch.Tensor)), atol=1e-4, rtol=0)
        dropped += int((~within).sum())
    assert dropped > 0 and (tfm.n_dropped, tfm.n_boxes) == (dropped, sum(len(bx) for _, bx in photos))

def test_flip_equals_torchvision(photos):
    b = batch(photos)
    tv = T.RandomHorizontalFlip(p=1.)
    xo, bo, lo = run(DetFlip(), b, dict(do=torch.tensor([True, False] * 3)))
    for i, (x, bx) in enumerate(photos):
        img, boxes = tv_sample(x, bx)
        g = len(bx)
        want_x, want_b = (tv(img), tv(boxes)) if i % 2 == 0 else (img, boxes)
        torch.testing.assert_close(bbox_to_pixels(bo[i, :g], (S, S)), want_b.as_subclass(torch.Tensor), atol=1e-4, rtol=0)
        # the flip goes through `F.grid_sample` like the other ops: its float32 sampling grid is off by ~1e-6 pixel
        torch.testing.assert_close(xo[i].as_subclass(torch.Tensor), want_x.as_subclass(torch.Tensor), atol=1e-4, rtol=0)

def test_composed_equals_torchvision(photos):
    "Zoom-out, IoU crop and flip in one resampling equal torchvision's three transforms and the SSD resize."
    b = batch(photos)
    tz, tc, tf = T.RandomZoomOut(fill=list(SSD_MEAN), p=1.), T.RandomIoUCrop(), T.RandomHorizontalFlip(p=1.)
    pz, pc, tv_out = [], [], []
    for i, (x, bx) in enumerate(photos):
        torch.manual_seed(100 + i)
        img, boxes = tv_sample(x, bx)
        p = tz.make_params([img, boxes]); img, boxes = tz.transform(img, p), tz.transform(boxes, p); pz.append(p['padding'])
        p = _tv_crop_params(tc, img, boxes, 1000 * i)
        img, boxes = tc.transform(img, p), tc.transform(boxes, p); pc.append([p['left'], p['top'], p['width'], p['height']])
        if i % 2 == 0: img, boxes = tf(img), tf(boxes)
        tv_out.append((img, boxes, p['is_within_crop_area']))
    tfm = DetAffine(ZoomOut(), IoUCrop(), DetFlip())
    xo, bo, lo = run(tfm, b, dict(padding=torch.tensor(pz, dtype=torch.float)),
                           dict(do=torch.ones(6, dtype=torch.bool), ltwh=torch.tensor(pc, dtype=torch.float)),
                           dict(do=torch.tensor([True, False] * 3)))
    for i, (img, boxes, within) in enumerate(tv_out):
        g = len(photos[i][1])
        kept = lo[i, :g] != 0
        assert torch.equal(kept, within)
        torch.testing.assert_close(bbox_to_pixels(bo[i, :g][kept], boxes.canvas_size), boxes.as_subclass(torch.Tensor)[within], atol=2e-3, rtol=0)
        torch.testing.assert_close(xo[i].as_subclass(torch.Tensor), resize(img.as_subclass(torch.Tensor)), atol=2e-4, rtol=0)

def test_iou_crop_draws_follow_torchvision(photos):
    "fastdet's vectorised draws obey torchvision's rules, and crop as often and as much as torchvision's loop."
    b = batch(photos)
    tfm, tv = IoUCrop(), T.RandomIoUCrop()
    torch.manual_seed(0)
    ours = [tfm.draw(_state(b)) for _ in range(60)]
    do = torch.stack([d['do'] for d in ours])  # [60, 6]
    ltwh = torch.stack([d['ltwh'] for d in ours])
    l, t, w, h = ltwh[do].unbind(-1)
    assert (l >= 0).all() and (t >= 0).all() and (l + w <= S).all() and (t + h <= S).all()
    assert (w >= int(.3 * S)).all() and (h >= int(.3 * S)).all() and (w / h >= .5).all() and (w / h <= 2).all()
    bx = bbox_to_pixels(b[1], (S, S))
    for k in range(do.shape[0]):
        for i in do[k].nonzero()[:, 0]:
            c = (bx[i, :len(photos[i][1]), :2] + bx[i, :len(photos[i][1]), 2:]) / 2
            L, Tt, W, H = ltwh[k, i]
            assert ((L < c[:, 0]) & (c[:, 0] < L + W) & (Tt < c[:, 1]) & (c[:, 1] < Tt + H)).any()
    torch.manual_seed(0)
    tv_do, tv_area = [], []
    for _ in range(60):
        for x, bx_ in photos:
            p = tv.make_params(list(tv_sample(x, bx_)))
            tv_do.append(bool(p)); tv_area.append(p['width'] * p['height'] / S ** 2 if p else 1.)
    ours_area = torch.where(do, ltwh[..., 2] * ltwh[..., 3] / S ** 2, 1.)
    print(f"crop rate {do.float().mean():.3f} vs torchvision {sum(tv_do) / len(tv_do):.3f}; mean area {ours_area.mean():.3f} vs {sum(tv_area) / len(tv_area):.3f}")
    assert abs(do.float().mean() - sum(tv_do) / len(tv_do)) < .06, (do.float().mean(), sum(tv_do) / len(tv_do))
    assert abs(ours_area.mean() - sum(tv_area) / len(tv_area)) < .05, (ours_area.mean(), sum(tv_area) / len(tv_area))

def _state(b):
    from fastdet.data.augment import _box_state
    return _box_state(*b)

def test_negatives_stay_negative_and_drops_are_counted(photos):
    "Over many random batches: the image without objects stays without, every image with objects keeps one, drops counted."
    b = batch(photos[:3], negative=True)
    tfms = ssd_aug_transforms()
    torch.manual_seed(0)
    real_in = int((~is_padding(b[1], b[2])).sum())
    lost = 0
    for _ in range(40):
        out = b
        for t in tfms: out = t(out, split_idx=0)
        x, bx, lb = out
        real = ~is_padding(bx, lb)
        assert not real[-1].any() and real[:-1].any(1).all()
        assert ((lb == 0) == ~real).all() and (bx[~real] == 0).all()  # dropped boxes are padding
        assert x.shape == b[0].shape and x.min() >= -1e-6 and x.max() <= 1 + 1e-6  # rounding of the fill blend
        lost += real_in - int(real.sum())
    aff = tfms[-1]
    assert lost > 0 and aff.n_dropped == lost and aff.n_boxes == 40 * real_in

def test_nothing_on_validation():
    dls = DetDataLoaders.from_shapes(n=48, bs=8, size=64, num_workers=0, batch_tfms=ssd_aug_transforms())
    plain = DetDataLoaders.from_shapes(n=48, bs=8, size=64, num_workers=0)
    for a, p in zip(dls.valid.one_batch(), plain.valid.one_batch()): _eq(a, p)
    assert dropped_boxes(dls) == (0, 0)
    dls.train.one_batch()
    dropped, seen = dropped_boxes(dls)
    assert seen > 0 and 0 <= dropped <= seen
    tfm = [t for t in dls.train.after_batch.fs if isinstance(t, DetAffine)][0]
    assert pickle.loads(pickle.dumps(tfm)).n_boxes == seen and not hasattr(pickle.loads(pickle.dumps(tfm)), 'boxes')

def test_show_batch_draws_the_kept_boxes():
    "`show_batch` of an augmented batch draws each kept box where the batch has it, and none of the dropped ones."
    import matplotlib; matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle
    dls = DetDataLoaders.from_shapes(n=64, bs=16, size=96, num_workers=0, batch_tfms=ssd_aug_transforms())
    torch.manual_seed(3)
    b = dls.one_batch()
    assert dropped_boxes(dls)[0] > 0  # the batch has dropped boxes (label 0 between kept ones) to leave out
    dls.show_batch(b=b, max_n=16, nrows=4, ncols=4)
    for ax, bx, lb in zip(plt.gcf().axes, b[1].as_subclass(torch.Tensor), b[2].as_subclass(torch.Tensor)):
        xywh = [[float(v) for v in (r.get_x(), r.get_y(), r.get_width(), r.get_height())] for r in ax.patches if isinstance(r, Rectangle)]
        # fastai's drawing holds two equal rectangles per box, and empty ones at the centre for padding (so for dropped)
        # boxes, which show nothing
        drawn = sorted({(round(x, 2), round(y, 2), round(x + w, 2), round(y + h, 2)) for x, y, w, h in xywh if w * h > 0})
        px = bbox_to_pixels(bx[lb != 0].cpu(), (96, 96))
        assert drawn == sorted(tuple(round(v, 2) for v in p.tolist()) for p in px), (drawn, px)
    plt.close('all')
