"DetLearner and ssd_learner: predict in original pixels, export round trip, freezing, fastai's loops, learning."
import os, time, warnings
import pytest
import torch
import matplotlib
matplotlib.use('Agg')
from fastai.learner import load_learner
from fastai.callback.schedule import *  # fit_one_cycle, fine_tune, lr_find
from fastai.vision.augment import Resize, Flip
from fastai.data.transforms import Normalize
from fastai.vision.core import imagenet_stats
from fastdet.boxes import bbox_to_pixels, unpad, detections_to_pixels, input_window
from fastdet.data.records import DetRecord
from fastdet.data.core import DetDataLoaders, det_block
from fastdet.data.shapes import make_shapes, SHAPE_CLASSES
from fastdet.models.ssd import ssd_split
from fastdet.learner import DetLearner, ssd_learner, ValidateLastEpoch
from fastdet.prediction import ChannelsLastInference
from fastdet.losses.ssd import MultiBoxLoss

def _threads():
    "All cores when the machine is idle, one when it is shared (OpenMP threads spinning on busy cores are very slow)."
    n = os.cpu_count() or 1
    return 1 if os.getloadavg()[0] > n - .5 else n

@pytest.fixture(scope='module')
def small_dls():
    torch.set_num_threads(_threads())
    return DetDataLoaders.from_shapes(n=32, size=64, render_size=96, bs=8, seed=5, num_workers=0)

def test_predict_in_original_pixels_and_export_round_trip(small_dls, tmp_path):
    learn = ssd_learner(small_dls, weights=None, path=tmp_path)
    learn.fit(1, 1e-3)
    learn.loss_func.score_thresh = 0.  # keep the full 100 detections: more to compare
    rec = small_dls.valid.items[0]
    boxes, labels, scores = learn.predict(rec.file)
    assert boxes.ndim == 2 and boxes.shape[1] == 4 and boxes.dtype == torch.float32
    assert len(labels) == len(scores) == len(boxes) > 0 and set(labels) <= set(small_dls.vocab[1:])
    # the same detections as get_preds on the validation set, mapped from the 64px input to the 96px image
    # (in predict's channels-last memory format: the default one's last bits differ)
    _, _, dec = learn.get_preds(dl=small_dls.valid.new(shuffle=False, drop_last=False), with_decoded=True, cbs=[ChannelsLastInference()])
    b0, l0, s0 = unpad(*dec)[0]
    torch.testing.assert_close(boxes, bbox_to_pixels(b0, rec.hw), atol=1e-3, rtol=0)
    torch.testing.assert_close(scores, s0)
    assert labels == [small_dls.vocab[int(i)] for i in l0]
    assert boxes.min() >= 0 and boxes.max() <= 96
    # a PIL image or a record give the same
    from fastdet.data.records import open_image
    b2, l2, s2 = learn.predict(open_image(rec.file))
    torch.testing.assert_close(b2, boxes); assert l2 == labels
    # export / load_learner: exactly the same predictions
    learn.export('ssd.pkl')
    learn2 = load_learner(tmp_path/'ssd.pkl')
    assert isinstance(learn2, DetLearner)
    b3, l3, s3 = learn2.predict(rec.file)
    assert torch.equal(b3, boxes) and l3 == labels and torch.equal(s3, scores)

def _norms(dls): return [t for t in dls.after_batch.fs if isinstance(t, Normalize)]

def test_normalisation_follows_the_weights_and_is_installed_once(tmp_path):
    "The data give [0, 1] pixels; the learner installs the statistics its weights expect, once; a hand-built Normalize is kept."
    dls = DetDataLoaders.from_shapes(n=16, size=64, render_size=64, bs=4, seed=1, num_workers=0)
    x, _, _ = dls.valid.one_batch()
    assert not _norms(dls) and x.min() >= 0 and x.max() <= 1
    learn = ssd_learner(dls, weights=None, path=tmp_path)
    (n,) = _norms(dls)
    mean, std = (torch.tensor(s).view(1, 3, 1, 1) for s in imagenet_stats)
    torch.testing.assert_close(dls.valid.one_batch()[0].cpu(), (x.cpu() - mean) / std)
    ssd_learner(dls, weights=None)  # a second learner on the same DataLoaders
    assert len(_norms(dls)) == 1
    # exported and loaded: the same Normalize, so predictions agree
    learn.export('m.pkl')
    (n2,) = _norms(load_learner(tmp_path/'m.pkl').dls)
    assert torch.equal(n2.mean.cpu(), n.mean.cpu()) and torch.equal(n2.std.cpu(), n.std.cpu())
    # VGG16: torchvision's 0-255 statistics; a timm backbone: its pretrained_cfg's (inception_v3: 0.5, 0.5)
    for arch, m, s in (('ssd300_vgg16', [0.48235, 0.45882, 0.40784], [1 / 255] * 3), ('inception_v3', [.5] * 3, [.5] * 3)):
        d = DetDataLoaders.from_shapes(n=16, size=64, render_size=64, bs=4, seed=1, num_workers=0)
        ssd_learner(d, arch, weights=None)
        (n,) = _norms(d)
        torch.testing.assert_close(n.mean.flatten().cpu(), torch.tensor(m)); torch.testing.assert_close(n.std.flatten().cpu(), torch.tensor(s))
    # DataLoaders built by hand with their own Normalize: not normalised twice
    db = det_block(vocab=list(SHAPE_CLASSES), size=64, batch_tfms=[Normalize.from_stats(*imagenet_stats)])
    hand = db.dataloaders(make_shapes(n=16, size=64), bs=4, num_workers=0)
    ssd_learner(hand, weights=None)
    assert len(_norms(hand)) == 1
    with pytest.warns(UserWarning, match='ssd300_vgg16 expects mean'):
        ssd_learner(hand, 'ssd300_vgg16', weights=None)
    assert len(_norms(hand)) == 1

def test_input_window_crop_and_pad():
    # undoing fastai's validation Resize (crop / pad) puts a box back where it was in the original image
    from fastai.vision.core import PILImage, TensorBBox
    from fastai.vision.augment import PointScaler
    from PIL import Image
    img = PILImage(Image.new('RGB', (200, 120)))
    px = torch.tensor([[60., 20., 140., 100.]])
    for method in ('crop', 'pad', 'squish'):
        rsz = Resize(64, method=method)
        rsz.split_idx = 1
        # fastai's item pipeline: PointScaler maps to [-1,1] first, then Resize crops / pads / squishes those
        _, bb = rsz(PointScaler()((img, TensorBBox.create(px, img_size=img.size))), split_idx=1)
        back = detections_to_pixels(bb, (120, 200), rsz)
        torch.testing.assert_close(back, px, atol=1.5, rtol=0)

def test_splitter_freeze_and_fastai_loops(small_dls, tmp_path):
    learn = ssd_learner(small_dls, weights=None, path=tmp_path)
    groups = ssd_split(learn.model)
    assert len(groups) == 3
    assert sum(len(g) for g in groups) == len(list(learn.model.parameters()))
    learn.freeze()
    trainable = {n.split('.')[0] for n, p in learn.model.named_parameters() if p.requires_grad}
    assert {'neck', 'extras', 'cls_heads', 'reg_heads'} <= trainable | {'neck'}
    assert all(not p.requires_grad for n, p in learn.model.backbone.named_parameters() if 'bn' not in n and p.ndim > 1)
    learn.fine_tune(1, 1e-3, freeze_epochs=1)
    learn.fit_one_cycle(1, 1e-3)
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        learn.lr_find(num_it=5, show_plot=False)
    learn.show_results(max_n=2)

def test_to_fp16_runs(small_dls, tmp_path):
    learn = ssd_learner(small_dls, weights=None, path=tmp_path).to_fp16()
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        learn.fit(1, 1e-3)
    assert len(learn.recorder.losses) > 0

def test_single_class_and_negatives(tmp_path):
    recs = make_shapes(n=24, size=64, seed=7)
    one = [DetRecord(r.file, r.boxes, ['thing'] * len(r.labels), hw=r.hw) for r in recs]
    one += [DetRecord(r.file, [], [], hw=r.hw) for r in recs[:8]]  # and images without objects
    dls = DetDataLoaders.from_records(one, size=64, bs=8, num_workers=0, check_images=False)
    assert dls.vocab == ['#na#', 'thing']
    learn = ssd_learner(dls, weights=None, path=tmp_path)
    assert learn.model.cls_heads[0][-1].out_channels % 2 == 0
    learn.fit(1, 1e-3)
    boxes, labels, scores = learn.predict(recs[0].file)
    assert set(labels) <= {'thing'}
    # a batch made only of negatives
    neg = DetDataLoaders.from_records([DetRecord(r.file, [], [], hw=r.hw) for r in recs[:8]], vocab=['thing'],
                                      size=64, bs=4, num_workers=0, check_images=False, valid_pct=.5)
    x, b, l = neg.one_batch()
    assert b.shape[1] == 0 or (l == 0).all()
    loss = learn.loss_func(learn.model(x), b, l)
    assert torch.isfinite(loss)

# ---------------------------------------------------------------- learning (slow)
LEARN_CFG = dict(n=2000, size=160, bs=16, epochs=5, lr=5e-3)

@pytest.mark.slow
def test_ssdlite_from_scratch_learns_shapes(tmp_path):
    "SSDLite-MobileNetV2 from scratch on the built-in shapes: COCO mAP@[.5:.95] >= 0.5 on the validation split in < 10 min."
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval
    import contextlib, io, json
    torch.set_num_threads(_threads()); torch.manual_seed(0)
    c = LEARN_CFG
    t0 = time.time()
    dls = DetDataLoaders.from_shapes(n=c['n'], size=c['size'], bs=c['bs'], num_workers=0, batch_tfms=[Flip()])
    t_data = time.time() - t0  # rendering the built-in dataset the first time (cached afterwards)
    t0 = time.time()
    learn = ssd_learner(dls, weights=None, path=tmp_path)
    learn.fit_one_cycle(c['epochs'], c['lr'], cbs=ValidateLastEpoch())
    # evaluate with pycocotools directly, on the shapes' own COCO json (original pixels)
    _, _, dec = learn.get_preds(dl=dls.valid.new(shuffle=False, drop_last=False), with_decoded=True)
    recs = list(dls.valid.items)
    results = []
    for r, (b, l, s) in zip(recs, unpad(*dec)):
        px = bbox_to_pixels(b, r.hw, 'xywh')
        results += [dict(image_id=r.image_id, category_id=int(k), bbox=[float(v) for v in bb], score=float(sc))
                    for bb, k, sc in zip(px, l, s)]
    ann = recs[0].file.parent.parent/'annotations.json'
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(str(ann))
        E = COCOeval(gt, gt.loadRes(results), 'bbox')
        E.params.imgIds = [r.image_id for r in recs]
        E.evaluate(); E.accumulate(); E.summarize()
    elapsed = time.time() - t0
    print(f"\nSSDLite from scratch on shapes {c}: mAP@[.5:.95] {E.stats[0]:.4f}, AP50 {E.stats[1]:.4f}; "
          f"train+eval {elapsed:.0f} s (dataset {t_data:.0f} s), {torch.get_num_threads()} threads, load {os.getloadavg()[0]:.1f}")
    assert E.stats[0] >= .5
    # the budget is fixed (epochs, images, size); the clock only informs, as the CPU may be shared (house rule: no
    # timing in pass/fail tests). Measured figures are in the issue report.
    if elapsed > 600: warnings.warn(f"learning took {elapsed:.0f} s (> 10 min) on this machine")
