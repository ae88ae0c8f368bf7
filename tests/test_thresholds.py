"Score thresholds chosen from data (issue 25, point 5): F1 against confidence, the F1-optimal threshold overall and per class, stored in the model and ONNX files, and the default of every prediction path."
import json
import numpy as np
import pytest
import torch
from fastdet.evaluation import match_coco
from fastdet.thresholds import (ScoreThreshold, f1_curves, best_threshold, threshold_to_use, threshold_of, plot_threshold_curves,
                                CURVE_FILES)

BOX, AWAY = [10, 10, 20, 20], [60, 60, 20, 20]  # xywh: an object's box, and a place in the same image with nothing

def matches(objects:list, dets:list, crowd:list=(), n:int=None):
    "`match_coco` of `objects` `[(image, class)]` (each a `BOX` in its image), crowd regions `[(image, class)]` (a `BOX` too), and `dets` `[(image, class, on_box, score)]`."
    g = list(objects) + list(crowd)
    n = n or 1 + max([i for i, *_ in g] + [i for i, *_ in dets])
    return match_coco([i for i, _ in g], [c for _, c in g], [BOX] * len(g), [400.] * len(g), [False] * len(objects) + [True] * len(crowd),
                      [d[0] for d in dets], [d[1] for d in dets], [BOX if d[2] else AWAY for d in dets], [d[3] for d in dets], n=n)

def at(curves, c:float)->int:
    "Index of the first grid confidence at or above `c`."
    return int(np.searchsorted(curves.conf, c))

# --- a set with a known optimum ---

def test_one_class_true_positives_above_false_positives():
    "8 of 10 objects found, all scored 0.62 or more; every false detection scored 0.58 or less: F1 peaks (at 2 * 0.8 / 1.8) between them."
    rng = np.random.default_rng(0)
    objects = [(i, 1) for i in range(10)]
    dets = [(i, 1, True, s) for i, s in zip(range(8), rng.uniform(.62, .95, 8).round(3).tolist() + [])]
    dets[0] = (0, 1, True, .62)
    dets += [(i, 1, False, s) for i, s in zip(rng.integers(0, 12, 9).tolist(), rng.uniform(.05, .58, 9).round(3).tolist())] + [(11, 1, False, .58)]
    dets += [(10, 1, True, .99)]  # on a crowd region: neither right nor wrong, so it changes nothing
    m = matches(objects, dets, crowd=[(10, 1)], n=12)
    thr = best_threshold(f1_curves(m), 'the test set')
    assert .58 < thr.value <= .62, thr
    assert thr.f1 == pytest.approx(2 * .8 / 1.8) and thr.per_class == {'1': thr.value} and thr.source == 'the test set'
    curves = f1_curves(m)
    assert curves.precision[0, at(curves, .6)] == 1 and curves.recall[0, at(curves, .6)] == pytest.approx(.8)
    assert curves.f1[0, at(curves, .5)] < thr.f1 and curves.f1[0, at(curves, .7)] < thr.f1

def test_per_class_optima_differ_from_the_overall():
    "Class 1 alone is best from 0.6 to 0.8, class 2 alone from 0.2 to 0.4; their mean F1 peaks at 0.9 from 0.2 to 0.4 (class 1 then keeps its false detection)."
    objects = [(0, 1), (1, 1), (2, 2), (3, 2)]
    dets = [(0, 1, True, .9), (1, 1, True, .8), (0, 1, False, .6), (2, 2, True, .5), (3, 2, True, .4), (2, 2, False, .2)]
    curves = f1_curves(matches(objects, dets), names={1: 'cat', 2: 'dog'})
    thr = best_threshold(curves)
    assert .2 < thr.value <= .4 and thr.f1 == pytest.approx(.9)
    assert .6 < thr.per_class['cat'] <= .8 and .2 < thr.per_class['dog'] <= .4
    assert abs(thr.value - .3) < .002  # the middle of the flat top: as far as the data allows from where F1 changes
    assert curves.f1[:, at(curves, .7)] == pytest.approx([1, 0]) and curves.f1[:, at(curves, .3)] == pytest.approx([.8, 1])
    assert curves.mean('f1')[at(curves, .45)] == pytest.approx((.8 + 2 / 3) / 2)

def test_a_class_without_ground_truth_is_left_out_of_the_mean():
    objects = [(0, 1), (1, 1)]
    dets = [(0, 1, True, .9), (1, 1, True, .7), (1, 2, False, .8)]  # class 2: only a false detection
    m = match_coco([0, 1], [1, 1], [BOX] * 2, [400.] * 2, None, [d[0] for d in dets], [d[1] for d in dets],
                   [BOX if d[2] else AWAY for d in dets], [d[3] for d in dets], n=2, cat_ids=[1, 2])
    curves = f1_curves(m)
    assert curves.valid.tolist() == [True, False] and np.isnan(curves.f1[1]).all()
    thr = best_threshold(curves)
    assert thr.value <= .7 and thr.f1 == 1 and set(thr.per_class) == {'1'}

def test_no_true_positive_no_threshold():
    m = matches([(0, 1)], [(0, 1, False, .9)])
    assert best_threshold(f1_curves(m)) is None and threshold_of(None) is None

# --- the curves against a brute-force count ---

def test_curves_equal_a_brute_force_count():
    rng = np.random.default_rng(3)
    n, g, d = 40, [[] for _ in range(5)], [[] for _ in range(4)]
    for i in range(n):
        for _ in range(rng.integers(0, 4)):
            x, y, c = *rng.uniform(0, 200, 2), int(rng.integers(1, 4))
            crowd = rng.random() < .1
            for a, v in zip(g, (i, c, [x, y, 30, 30], 900., crowd)): a.append(v)
            for _ in range(rng.integers(0, 3)):  # detections near it, some good enough at IoU 0.5, fewer at 0.75
                for a, v in zip(d, (i, c, [x + rng.normal(0, 5), y + rng.normal(0, 5), 30, 30], rng.random())): a.append(v)
        for _ in range(rng.integers(0, 3)):  # and some anywhere
            for a, v in zip(d, (i, int(rng.integers(1, 4)), [*rng.uniform(0, 200, 2), 20, 20], rng.random())): a.append(v)
    m = match_coco(*g, *d, n=n)
    for iou, t in ((.5, 0), (.75, 5)):
        curves = f1_curves(m, iou)
        for j in (0, 1, 137, 400, 500, 731, 998, 999):
            c = curves.conf[j]
            for k in range(len(m.cat_ids)):
                keep = (m.d_k == k) & (m.d_score >= c)
                tp, fp, n_gt = m.tp[0, t, keep].sum(), m.fp[0, t, keep].sum(), m.npig()[k, 0]
                p = tp / (tp + fp) if tp + fp else 1.
                r = tp / n_gt
                assert curves.precision[k, j] == pytest.approx(p) and curves.recall[k, j] == pytest.approx(r)
                assert curves.f1[k, j] == pytest.approx(2 * p * r / (p + r) if p + r else 0.)
    assert len(curves.conf) == 1000 and curves.conf[0] == 0 and curves.conf[-1] == 1
    assert (f1_curves(m, .75).recall <= f1_curves(m, .5).recall + 1e-12).all()  # a stricter IoU finds no more

def test_arguments_are_checked():
    m = matches([(0, 1)], [(0, 1, True, .9)])
    with pytest.raises(ValueError, match="iou must be one of COCO's IoU thresholds"): f1_curves(m, iou=.6001)
    with pytest.raises(ValueError, match='n must be'): f1_curves(m, n=1)
    with pytest.raises(ValueError, match='smooth must be'): best_threshold(f1_curves(m), smooth=-1)
    with pytest.raises(ValueError, match='score_thresh must be a number from 0 to 1, got 1.5'): threshold_to_use(1.5)
    with pytest.raises(ValueError, match='got True'): threshold_to_use(True)
    for bad, field in ((dict(value=float('nan')), 'value'), (dict(value=.5, f1=2), 'F1'), (dict(value=.5, per_class={'a': 'x'}), 'per-class'),
                       (dict(value=.5, extra=1), 'fields'), ([.5], 'fields'), (dict(value=.5, source=3), 'source')):
        with pytest.raises(ValueError, match=f"m.pth: its score threshold's {field}"): ScoreThreshold.from_dict(bad, 'm.pth')

def test_plots(tmp_path):
    import matplotlib; matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    objects = [(0, 1), (1, 1), (2, 2), (3, 2)]
    curves = f1_curves(matches(objects, [(0, 1, True, .9), (1, 1, True, .8), (0, 1, False, .6), (2, 2, True, .5)]))
    thr = best_threshold(curves)
    figs = plot_threshold_curves(curves, thr)
    assert list(figs) == ['f1', 'precision', 'recall'] and [CURVE_FILES[k] for k in figs] == ['f1_curve.png', 'p_curve.png', 'r_curve.png']
    ax = figs['f1'].axes[0]
    assert [l.get_label() for l in ax.get_lines()][:2] == ['1', '2'] and f"at {thr.value:.3f}" in ax.get_lines()[2].get_label()
    assert ax.get_lines()[3].get_xdata()[0] == pytest.approx(thr.value)  # the threshold marked
    for f in figs.values(): plt.close(f)

# --- stored with the model, used by predict ---

@pytest.fixture(scope='module')
def learn():
    from fastdet.data.core import DetDataLoaders
    from fastdet.learner import ssd_learner
    dls = DetDataLoaders.from_shapes(n=32, size=64, bs=8, num_workers=0, seed=0)
    return ssd_learner(dls, 'ssdlite_mobilenetv2', weights=None)

@pytest.fixture
def files(learn): return [r.file for r in learn.dls.valid.items[:3]]

def _median_score(learn, files)->float:
    with learn.no_bar(): _, _, s = learn.predict(files[0], score_thresh=0.)
    return float(s.median())

def test_model_file_round_trip(learn, tmp_path):
    from fastdet.modelfile import save_detector, load_detector
    learn.score_thresh = None
    save_detector(learn, tmp_path/'none.pth')
    assert load_detector(tmp_path/'none.pth').score_thresh is None  # a file without one (as every file before) loads
    assert 'score_thresh' not in torch.load(tmp_path/'none.pth', weights_only=True)
    thr = ScoreThreshold(.42, .7, {'circle': .5, 'cross': .3}, 'F1-optimal on a test')
    learn.score_thresh = thr
    try: save_detector(learn, tmp_path/'m.pth')
    finally: learn.score_thresh = None
    assert load_detector(tmp_path/'m.pth').score_thresh == thr
    obj = torch.load(tmp_path/'m.pth', weights_only=True)
    obj['score_thresh']['value'] = 7.
    torch.save(obj, tmp_path/'bad.pth')
    with pytest.raises(ValueError, match=r"bad.pth: its score threshold's value 7.0 is not a number from 0 to 1"): load_detector(tmp_path/'bad.pth')

def test_onnx_metadata_round_trip(learn, files, tmp_path):
    pytest.importorskip('onnxruntime')
    from fastdet.deploy import load_onnx
    t = _median_score(learn, files)
    learn.score_thresh = ScoreThreshold(t, .5, {'square': .25}, 'F1-optimal on a test')
    try: det = load_onnx(learn.export_onnx(tmp_path/'m.onnx'))
    finally: learn.score_thresh = None
    assert det.score_thresh == ScoreThreshold(t, .5, {'square': .25}, 'F1-optimal on a test')
    assert json.loads(det.session.get_modelmeta().custom_metadata_map['fastdet'])['score_thresh']['value'] == t
    every = det.predict_batch(files, bs=2, num_workers=0, score_thresh=0.)
    kept = det.predict_batch(files, bs=2, num_workers=0)
    for (b, n, s), (b2, n2, s2) in zip(every, kept):
        k = s >= t
        assert torch.equal(s2, s[k]) and n2 == [x for x, y in zip(n, k.tolist()) if y] and torch.equal(b2, b[k])
    assert 0 < sum(len(s) for _, _, s in kept) < sum(len(s) for _, _, s in every)
    learn.export_onnx(tmp_path/'plain.onnx')
    assert load_onnx(tmp_path/'plain.onnx').score_thresh is None

def test_predict_uses_the_stored_threshold_unless_given(learn, files, capsys):
    with learn.no_bar(): every = learn.predict(files[0])  # no threshold of its own: all it decodes, as before
    t = _median_score(learn, files)
    thr = ScoreThreshold(t, .5, {}, 'F1-optimal on a test')
    learn.score_thresh = thr
    capsys.readouterr()
    try:
        with learn.no_bar():
            b, n, s = learn.predict(files[0])
            assert capsys.readouterr().out.strip() == f"score threshold {t:.3g} (F1-optimal on a test)"
            again = learn.predict(files[0])
            assert capsys.readouterr().out == ''  # said once
            given = learn.predict(files[0], score_thresh=0.)
            batch = learn.predict_batch(files, bs=2, num_workers=0)
            batch0 = learn.predict_batch(files, bs=2, num_workers=0, score_thresh=0.)
    finally: learn.score_thresh = None
    k = every[2] >= t
    assert 0 < k.sum() < len(k)
    assert torch.equal(s, every[2][k]) and torch.equal(b, every[0][k]) and n == [x for x, y in zip(every[1], k.tolist()) if y]
    assert torch.equal(again[2], s) and torch.equal(given[2], every[2])
    assert all((bs[2] >= t).all() for bs in batch) and [len(x[2]) for x in batch] == [int((x[2] >= t).sum()) for x in batch0]
    with pytest.raises(ValueError, match='score_thresh must be a number from 0 to 1'): learn.predict(files[0], score_thresh=-.1)

def test_fit_drops_the_threshold(learn):
    from fastai.callback.core import Callback, CancelFitException
    class Stop(Callback):
        def before_fit(self): raise CancelFitException()  # the weights would change from here
    learn.score_thresh = ScoreThreshold(.5, .5, {}, 'old weights')
    with learn.no_bar(), learn.no_logging(): learn.fit(1, 1e-4, cbs=Stop())
    assert learn.score_thresh is None  # measured on weights that are about to change

def test_fastdet_predict_default(learn, files, tmp_path, capsys):
    "`fastdet predict` (and `predict_files`): `--score-thresh`, else the model's own (said once, with where it came from), else 0.3."
    from fastdet.cli import main
    from fastdet.modelfile import save_detector
    t = _median_score(learn, files)
    learn.score_thresh = ScoreThreshold(t, .5, {}, 'F1-optimal on a test')
    try: save_detector(learn, tmp_path/'m.pth')
    finally: learn.score_thresh = None
    save_detector(learn, tmp_path/'plain.pth')
    capsys.readouterr()
    for model, extra, said, lo in (('m.pth', [], f"score threshold {t:.3g} (F1-optimal on a test)", t), ('m.pth', ['--score-thresh', '0.05'], 'score threshold 0.05 (given)', .05),
                                   ('plain.pth', [], 'score threshold 0.3 (the default: the model has no threshold of its own)', .3)):
        out = tmp_path/f"p{len(extra)}{model}"
        assert main(['predict', str(tmp_path/model), *map(str, files), '--out', str(out), '--workers', '0', '--device', 'cpu', *extra]) == 0
        cap = capsys.readouterr()
        assert (cap.out + cap.err).count('score threshold') == 1 and said in cap.err, cap
        scores = [r['score'] for r in json.loads((out/'detections.json').read_text())]
        assert all(s >= round(lo, 4) - 1e-4 for s in scores)
        if lo == t: assert 0 < len(scores) < 100 * len(files)

# --- `fastdet train`: chosen from the last validation, stored, plotted ---

def test_train_stores_and_plots_the_threshold(tmp_path, capsys, monkeypatch):
    from fastdet.commands import train
    from fastdet.modelfile import load_detector
    monkeypatch.chdir(tmp_path)
    learn, _ = train(n=40, size=64, epochs=1, bs=8, workers=0, out=tmp_path/'out')
    thr = learn.score_thresh
    assert thr is not None and thr.source == f"F1-optimal on the 8 validation images of {tmp_path/'out'}" and 0 < thr.f1 <= 1
    assert f"{thr}: mean F1 {thr.f1:.3f}" in capsys.readouterr().out
    assert load_detector(tmp_path/'out'/'model.pth').score_thresh == thr
    for f in CURVE_FILES.values(): assert (tmp_path/'out'/f).stat().st_size > 0, f
    with learn.no_bar(): again = learn.choose_threshold()  # a new pass over the validation set: the same detections, the same threshold
    assert again.value == thr.value and again.per_class == thr.per_class and again.f1 == pytest.approx(thr.f1)
