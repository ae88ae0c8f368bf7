"DetInterpretation: per-class numbers against pycocotools on coco128, hand-made confusion and TIDE cases, per-image losses, plots and the results folder."
import contextlib, copy, io, json, os
from collections import Counter
import numpy as np
import pytest
import torch
import matplotlib
matplotlib.use('Agg')
import matplotlib.pyplot as plt
from PIL import Image
from fastai.callback.progress import CSVLogger
from fastdet.boxes import convert_boxes
from fastdet.data.records import DetRecord
from fastdet.data.readers import read_coco
from fastdet.data.core import DetDataLoaders
from fastdet.learner import ssd_learner
from fastdet.metrics import COCOMetric, evaluate
from fastdet.interpret import DetInterpretation, save_results, plot_losses, plot_metrics, TIDE_ERRORS, _MEAN_COLOR

pytest.importorskip('pycocotools')
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval


def _threads():
    n = os.cpu_count() or 1
    return 1 if os.getloadavg()[0] > n - .5 else n

# ---------- per-class numbers: pycocotools per category, on coco128

def _synthetic(recs, names, seed=0):
    "Per record: jittered true boxes (some with a wrong class, some duplicated, some missed), boxes on crowd regions, background boxes."
    rng = np.random.default_rng(seed)
    dets = []
    for r in recs:
        h, w = r.hw
        b, l, s = [], [], []
        for box, lab in zip(r.boxes.tolist(), r.labels):
            if rng.random() < .15: continue
            for _ in range(1 + int(rng.random() < .2)):
                bw, bh = box[2] - box[0], box[3] - box[1]
                j = rng.normal(0, .1, 4) * [bw, bh, bw, bh]
                b.append([box[0] + j[0], box[1] + j[1], box[2] + j[2], box[3] + j[3]])
                l.append(lab if rng.random() > .1 else names[rng.integers(len(names))]); s.append(rng.random())
        for box in r.crowd.tolist():
            b.append([box[0] + 1, box[1] + 1, box[0] + (box[2] - box[0]) / 2, box[1] + (box[3] - box[1]) / 2]); l.append(names[0]); s.append(rng.random())
        for _ in range(int(rng.integers(0, 4))):
            x0, y0 = rng.uniform(0, w * .7), rng.uniform(0, h * .7)
            b.append([x0, y0, x0 + rng.uniform(5, w * .3), y0 + rng.uniform(5, h * .3)]); l.append(names[rng.integers(len(names))]); s.append(rng.random())
        dets.append((torch.tensor(b, dtype=torch.float64).reshape(-1, 4), l, torch.tensor(s, dtype=torch.float64)))
    return dets


def test_per_class_equals_pycocotools(data_dir):
    "per_class() and the 12 stats equal pycocotools run per category on the COCO json (crowd regions included)."
    fn = data_dir/'coco128'/'annotations'/'instances_train2017.json'
    gt = json.loads(fn.read_text())
    recs = read_coco(fn)
    assert sum(len(r.crowd) for r in recs) > 0
    name2id = {v: k for k, v in recs.categories.items()}
    names = [recs.categories[k] for k in sorted(recs.categories)]
    dets = _synthetic(recs, names)
    interp = DetInterpretation.from_records(recs, dets, vocab=['#na#'] + names)
    table = interp.per_class().set_index('name')
    res = [dict(image_id=r.image_id, category_id=name2id[l], bbox=convert_boxes(b[None], 'xyxy', 'xywh')[0].tolist(), score=float(s))
           for r, (bs, ls, ss) in zip(recs, dets) for b, l, s in zip(bs, ls, ss)]
    with contextlib.redirect_stdout(io.StringIO()):
        c = COCO(); c.dataset = copy.deepcopy(gt); c.createIndex()
        E = COCOeval(c, c.loadRes(copy.deepcopy(res)), 'bbox'); E.evaluate(); E.accumulate(); E.summarize()
        overall = E.stats
        n_checked = 0
        for cid, name in recs.categories.items():
            n_gt = sum(1 for a in gt['annotations'] if a['category_id'] == cid and not a['iscrowd'])
            n_det = sum(1 for d in res if d['category_id'] == cid)
            assert (table.loc[name, 'n_gt'], table.loc[name, 'n_det']) == (n_gt, n_det), name
            if not n_gt and not n_det:
                assert table.loc[name, 'AP'] == -1; continue
            E.params.catIds = [cid]; E.evaluate(); E.accumulate(); E.summarize()
            ref = dict(AP=E.stats[0], AP50=E.stats[1], AP75=E.stats[2], AR100=E.stats[8])
            for k, v in ref.items(): assert abs(table.loc[name, k] - v) <= 1e-9, (name, k, table.loc[name, k], v)
            n_checked += 1
    assert n_checked >= 60 and 0.2 < table.AP[table.AP > -1].mean() < 0.9
    np.testing.assert_allclose([interp.stats[k] for k in ('AP', 'AP50', 'AP75', 'AR100')], overall[[0, 1, 2, 8]], atol=1e-9)
    # the PR curves are COCOeval's own, and each curve's mean is that class's AP50
    fig = interp.plot_pr_curves(); plt.close(fig)
    from fastdet.metrics import coco_curves
    prec = coco_curves(interp.eval)[0][0]  # [recall, class] at IoU 0.5
    k = interp.cats.index(1 + names.index('person'))
    assert abs(prec[:, k].mean() - table.loc['person', 'AP50']) < 1e-9

# ---------- hand-made cases

def _rec(boxes, labels, crowd=None, crowd_labels=None, hw=(400, 400)):
    return DetRecord('x.jpg', boxes, labels, hw=hw, crowd=crowd, crowd_labels=crowd_labels)

def test_confusion_matrix_every_cell():
    "Rows true class, columns predicted, background last: every cell of a hand-made case."
    recs = [_rec([[0, 0, 10, 10], [20, 20, 40, 40], [50, 50, 70, 70], [100, 100, 200, 200]], ['a', 'b', 'c', 'c']),
            _rec([[30, 30, 50, 50], [60, 60, 80, 80]], ['b', 'c'], crowd=[[300, 300, 400, 400]], crowd_labels=['a'])]
    dets = [([[0, 0, 10, 10], [20, 20, 40, 40], [100, 100, 200, 195], [50, 50, 70, 70]], ['a', 'a', 'b', 'a'], [.9, .8, .7, .1]),
            ([[0, 0, 10, 10], [31, 30, 50, 50], [30, 31, 50, 50], [64, 64, 84, 84], [310, 310, 350, 350], [310, 310, 350, 350]],
             ['b', 'b', 'b', 'c', 'a', 'b'], [.7, .6, .55, .5, .9, .9])]
    interp = DetInterpretation.from_records(recs, dets, vocab=['#na#', 'a', 'b', 'c'])
    #                              a  b  c  background (predicted)
    np.testing.assert_array_equal(interp.confusion_matrix(), [
                                  [1, 0, 0, 0],  # a: found
                                  [1, 1, 0, 0],  # b: one taken for an a, one found
                                  [0, 1, 0, 2],  # c: one taken for a b; two missed (a score below 0.25, an IoU of 0.47)
                                  [0, 3, 1, 0]]) # background: b on nothing, a duplicate b, a b on a crowd region of 'a', a misplaced c
    # the a on the crowd region of 'a' is ignored; at IoU 0.4 the misplaced c finds its object; at score 0 the weak a finds the first c
    assert interp.confusion_matrix(iou=.4)[2, 2] == 1 and interp.confusion_matrix(iou=.4)[3, 2] == 0
    assert interp.confusion_matrix(score=0.)[2, 0] == 1
    # counts are conserved: every object in one row cell, every counted detection in one column cell
    m = interp.confusion_matrix()
    assert m[:3].sum() == 6 and m[:, :3].sum() == 8
    # one detection over two objects pairs with the one it overlaps most
    two = DetInterpretation.from_records([_rec([[0, 0, 10, 10], [0, 0, 10, 12]], ['a', 'b'])], [([[0, 0, 10, 11.9]], ['a'], [.9])], vocab=['#na#', 'a', 'b'])
    np.testing.assert_array_equal(two.confusion_matrix(), [[0, 0, 1], [1, 0, 0], [0, 0, 0]])


def test_tide_error_kinds():
    "One of each TIDE error kind, and the missed objects, in a hand-made case."
    recs = [_rec([[0, 0, 100, 100], [200, 200, 300, 300]], ['a', 'b']), _rec([[0, 0, 50, 50]], ['c']),
            _rec([[0, 0, 50, 50]], ['a']), _rec([], [])]
    dets = [([[0, 0, 100, 100], [2, 2, 100, 100], [0, 0, 100, 98], [200, 200, 240, 300], [200, 200, 230, 300], [500, 500, 520, 520]],
             ['a', 'a', 'b', 'b', 'a', 'c'], [.9, .8, .7, .6, .5, .4]),
            ([], [], []), ([[300, 300, 320, 320]], ['b'], [.9]), ([[0, 0, 9, 9]], ['a'], [.3])]
    interp = DetInterpretation.from_records(recs, dets, vocab=['#na#', 'a', 'b', 'c'])
    e = interp.errors(score=0)
    assert e == dict(classification=1, localisation=1, both=1, duplicate=1, background=3, missed=2, correct=1), e
    # at score 0.55 the misplaced a (0.5) and the background boxes under it are not counted: the b box stays a localisation error
    assert interp.errors(score=.55) == dict(classification=1, localisation=1, both=0, duplicate=1, background=1, missed=2, correct=1)
    assert set(TIDE_ERRORS) | {'correct'} == set(e)

# ---------- with a learner: per-image losses, plots, the results folder

@pytest.fixture(scope='module')
def trained(tmp_path_factory):
    torch.set_num_threads(_threads())
    dls = DetDataLoaders.from_shapes(n=64, size=96, render_size=128, bs=8, seed=3, num_workers=0)
    learn = ssd_learner(dls, weights=None, metrics=[COCOMetric('AP'), COCOMetric('AP50')], path=tmp_path_factory.mktemp('run'))
    with contextlib.redirect_stdout(io.StringIO()), learn.no_bar(): learn.fit_one_cycle(2, 5e-3, cbs=CSVLogger('results.csv'))
    return learn


def test_top_losses_are_the_learners_loss_per_image(trained):
    "Each image's loss is loss_func on that image alone (a batch of one, its own padding); top_losses sorts by it."
    learn = trained
    interp = DetInterpretation.from_learner(learn)
    learn.model.eval()
    ref = []
    with torch.no_grad():
        for x, bx, lb in learn.dls.valid.new(bs=1, shuffle=False):
            ref.append(float(learn.loss_func(learn.model(x), bx, lb)))
    ref = torch.tensor(ref)
    assert len(interp.losses) == len(learn.dls.valid_ds) == len(ref)
    torch.testing.assert_close(interp.losses, ref, rtol=1e-4, atol=1e-5)
    assert ref.std() > 0.01  # the order means something
    losses, idx = interp.top_losses(5)
    assert idx.tolist() == ref.argsort(descending=True)[:5].tolist()
    assert interp.top_losses(3, largest=False)[1].tolist() == ref.argsort()[:3].tolist()
    # the 12 numbers are those the learner's metric gave at the end of training (the same model on the same images)
    for k, v in learn.metrics[0].stats.items(): assert abs(v - interp.stats[k]) < 1e-9, k
    # drawn in each original image's pixels (128 px renders, the model saw 96 px)
    fig = interp.plot_top_losses(2)
    shapes = [ax.images[0].get_array().shape[:2] for ax in fig.axes if ax.images]
    assert len(shapes) == 4 and all(s == (128, 128) for s in shapes)
    plt.close(fig)


def _pixel(fig, ax, x, y, fn):
    "The RGB colour of the PNG `fn` (saved from `fig`) at data point `(x, y)` of `ax`."
    px, py = ax.transData.transform((x, y))
    im = np.asarray(Image.open(fn).convert('RGB'))
    return im[int(round(im.shape[0] - py)), int(round(px))]


def test_pr_curve_draws_cocoeval_precision(tmp_path):
    "One class, detections TP, FP, TP: the drawn mean curve is at precision 1 up to recall 0.5, then 2/3."
    recs = [_rec([[0, 0, 50, 50], [100, 100, 150, 150]], ['a'] * 2)]
    interp = DetInterpretation.from_records(recs, [([[0, 0, 50, 50], [300, 300, 350, 350], [100, 100, 150, 150]], ['a'] * 3, [.9, .8, .7])])
    fig = interp.plot_pr_curves()
    ax = fig.axes[0]
    np.testing.assert_allclose(ax.lines[-1].get_ydata(), __import__('fastdet.metrics').metrics.coco_curves(interp.eval)[0][0, :, 0])
    fig.savefig(tmp_path/'pr.png', dpi=100)
    mean = np.array(matplotlib.colors.to_rgb(_MEAN_COLOR)) * 255
    assert np.abs(_pixel(fig, ax, .75, 2 / 3, tmp_path/'pr.png') - mean).max() < 30
    assert np.abs(_pixel(fig, ax, .25, 1., tmp_path/'pr.png') - mean).max() < 30
    assert _pixel(fig, ax, .75, .3, tmp_path/'pr.png').min() > 200  # nothing drawn there
    plt.close(fig)


def test_save_results(trained, tmp_path):
    "Every file of the results folder, as non-trivial PNGs; losses and metrics from the training log; nothing of them without training."
    learn = trained
    files = save_results(learn, tmp_path/'run')
    names = [f.name for f in files]
    assert names == ['per_class.csv', 'pr_curve.png', 'confusion_matrix.png', 'confusion_matrix_normalized.png', 'errors.png',
                     'f1_curve.png', 'p_curve.png', 'r_curve.png', 'top_losses.png', 'losses.png', 'metrics.png', 'predictions.png']
    for f in files:
        assert f.is_file() and f.stat().st_size > (100 if f.suffix == '.csv' else 10_000), f
        if f.suffix == '.png': assert min(Image.open(f).size) > 150
    import pandas as pd
    t = pd.read_csv(tmp_path/'run'/'per_class.csv')
    assert list(t.name) == list(learn.dls.vocab[1:]) and t.n_gt.sum() == sum(len(r.labels) for r in learn.dls.valid.items)
    log = pd.read_csv(learn.path/'results.csv')  # fastai's CSVLogger, as `fastdet train` adds it
    assert list(log.columns) == ['epoch', 'train_loss', 'valid_loss', 'AP', 'AP50', 'time'] and len(log) == 2
    # the metrics plot shows the log's values
    fig = plot_metrics(learn)
    np.testing.assert_allclose(fig.axes[0].lines[0].get_ydata(), log.AP.values, atol=1e-5)
    plt.close(fig)
    # a learner that never trained (`fastdet eval` on a saved model): no training curves, the rest written
    fresh = ssd_learner(learn.dls, weights=None)
    evaluate(fresh)  # a `validate` leaves a row in the log, but no training
    names = [f.name for f in save_results(fresh, tmp_path/'eval', dl=learn.dls.valid)]
    assert 'losses.png' not in names and 'metrics.png' not in names and 'pr_curve.png' in names and 'predictions.png' in names


def test_training_curves_without_validation_each_epoch(trained):
    "`fastdet train` validates only after the last epoch (`ValidateLastEpoch`): earlier rows of the log hold the train loss only."
    rec = trained.recorder
    values = rec.values
    try:
        rec.values = [values[0][:1]] + list(values[1:])
        fig = plot_losses(trained)
        assert fig.axes[0].lines[1].get_xdata().tolist() == rec.iters[1:]  # the validation points that exist
        plt.close(fig)
        fig = plot_metrics(trained)
        assert [len(l.get_xdata()) for l in fig.axes[0].lines] == [len(values) - 1] * 2
        plt.close(fig)
    finally: rec.values = values
