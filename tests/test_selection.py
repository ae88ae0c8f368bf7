"The noise-aware rule for the best epoch and early stopping, on recorded sequences of epochs: a plateau, a late gain, a slow climb; and the callbacks that apply it."
from types import SimpleNamespace
import numpy as np
import pytest
from fastai.callback.core import CancelFitException
from fastdet.evaluation import match_coco, coco_compare, coco_resampled, resample_weights, COCOEvaluation, COCO_STATS
from fastdet.metrics import COCOMetric
from fastdet.selection import NoiseAwareBest, NoiseAwareTracker, NoiseAwareSaveModel, NoiseAwareEarlyStopping, epoch_matches

def _gt(n=60, seed=0)->tuple:
    "Ground truth of `n` images: 1-3 boxes each, 3 classes, pixel xywh."
    rng = np.random.default_rng(seed)
    img = np.repeat(np.arange(n), rng.integers(1, 4, n))
    return img, rng.integers(1, 4, len(img)), np.c_[rng.uniform(0, 400, (len(img), 2)), rng.uniform(20, 150, (len(img), 2))]

def _dets(gt, quality:float, seed:int)->tuple:
    "Detections `(image, class, xywh, score)` of a detector of `quality` in [0, 1]: finds more boxes, places them better, scores false positives lower."
    img, cat, xywh = gt
    rng = np.random.default_rng(seed)
    G, n = len(img), img.max() + 1
    found = rng.random(G) < .4 + .6 * quality
    box = xywh + (1 - quality) * .3 * np.tile(xywh[:, 2:], 2) * rng.standard_normal((G, 4))
    box[:, 2:] = np.maximum(box[:, 2:], 2)
    fp = 2 * G
    return (np.r_[img[found], rng.integers(0, n, fp)], np.r_[cat[found], rng.integers(1, 4, fp)],
            np.r_[box[found], np.c_[rng.uniform(0, 400, (fp, 2)), rng.uniform(20, 150, (fp, 2))]],
            np.r_[quality * .5 + .5 * rng.random(found.sum()), rng.random(fp) * (1 - .8 * quality)])

def _match(gt, dets):
    img, cat, xywh = gt
    return match_coco(img, cat, xywh, xywh[:, 2] * xywh[:, 3], None, *dets, n=img.max() + 1)

def _run(gt, qualities, seed:int=0)->list:
    "A recorded run: each epoch's matches, from a detector of that epoch's quality, each epoch's chance its own."
    return [_match(gt, _dets(gt, q, seed * 1000 + e)) for e, q in enumerate(qualities)]

def _apply(rule, run)->list:
    return [rule.update(e, m) for e, m in enumerate(run)]

def _points(run)->np.ndarray: return np.array([coco_resampled(m, np.ones((1, m.n)))[0]['AP'][0] for m in run])

GT = _gt()
RISE_THEN_PLATEAU = [.3, .5, .65, .75, .75, .75, .75, .75, .75, .75]

def test_the_best_is_the_plateaus_first_epoch_and_stays():
    run = _run(GT, RISE_THEN_PLATEAU, seed=0)
    rule = NoiseAwareBest()
    assert _apply(rule, run) == [True] * 4 + [False] * 6
    assert (rule.best_epoch, rule.epochs_since_best) == (3, 6)
    points = _points(run)
    assert rule.value == points[3]
    assert max(h['p_better'] for h in rule.history[4:]) < .95
    assert np.argmax(points) == 7 and points[7] > points[3] + .02  # best by point value: a noise-sized wiggle

def test_noise_rarely_moves_the_best():
    "Over 8 recorded runs (48 plateau epochs), the rule moves the best on the plateau far less often than the point value does."
    rule_moves = point_moves = 0
    for seed in range(8):
        run = _run(GT, RISE_THEN_PLATEAU, seed)
        rule = NoiseAwareBest()
        moved = _apply(rule, run)
        assert moved[:4] == [True] * 4  # the rise: every epoch a clear gain
        points = _points(run)
        rule_moves += sum(moved[4:])
        point_moves += sum(points[e] > points[:e].max() for e in range(4, len(run)))
    assert rule_moves <= 3 and point_moves >= 8, (rule_moves, point_moves)  # recorded: 2 and 10

def test_a_large_late_gain_is_a_new_best():
    run = _run(GT, RISE_THEN_PLATEAU[:7] + [.9], seed=0)
    rule = NoiseAwareBest()
    assert _apply(rule, run)[-1]
    assert (rule.best_epoch, rule.epochs_since_best) == (7, 0) and rule.p_better > .99

def _slow_climb(k:int=2, epochs:int=12)->list:
    "Epoch `e` detects images `< k * e` as a good detector does, the others as a poor one: each epoch improves `k` more images and leaves the others' detections as they were."
    good, poor = _dets(GT, .9, 1), _dets(GT, .5, 2)
    def mix(lim): return tuple(np.r_[a[good[0] < lim], b[poor[0] >= lim]] for a, b in zip(good, poor))
    return [_match(GT, mix(k * e)) for e in range(epochs)]

def test_gains_too_small_for_one_epoch_add_up_against_the_best():
    run = _slow_climb()
    # consecutive epochs differ on 2 of 60 images: in about 13% of the resamples neither is drawn, a tie, so no
    # comparison with the epoch before can reach 95%; against the best, the gains accumulate
    consecutive = [coco_compare(a, b, n_boot=500)[0].set_index('stat').loc['AP', 'p_B_better'] for a, b in zip(run, run[1:])]
    assert max(consecutive) < .95
    rule = NoiseAwareBest()
    _apply(rule, run)
    moves = [h['best_epoch'] for h in rule.history]
    assert rule.best_epoch >= len(run) - 2 and len(set(moves)) >= 5, moves
    assert max(rule.history[e]['epoch'] - rule.history[e]['best_epoch'] for e in range(len(run))) <= 2  # never 3 behind: patience 3 would not stop

def test_the_share_is_the_paired_bootstraps_and_the_value_pycocotools():
    a, b = _run(GT, [.6, .65], seed=4)
    for stat in COCO_STATS:  # each statistic accumulated over its own area range only: the same numbers
        rule = NoiseAwareBest(stat, n_boot=200, seed=3)
        rule.update(0, a); rule.update(1, b)
        assert rule.p_better == coco_compare(a, b, n_boot=200, seed=3)[0].set_index('stat').loc[stat, 'p_B_better'], stat
        np.testing.assert_allclose(rule.resampled(b), np.r_[coco_resampled(b, np.ones((1, b.n)))[0][stat],  # to float rounding:
                                                            coco_resampled(b, resample_weights(b.n, 200, 3))[0][stat]], rtol=0, atol=1e-15)  # rows summed in other batches

def test_edge_cases():
    run = _run(GT, [.5, .6], seed=5)
    rule = NoiseAwareBest()
    assert rule.update(0, None) and rule.value == 0  # nothing detected: 0, beaten by any detector, never beating one
    assert rule.update(1, run[0]) and not rule.update(2, None) and not rule.update(3, run[0])  # the same epoch again is no gain
    assert rule.p_better == 0 and rule.epochs_since_best == 2
    with pytest.raises(ValueError, match='different validation sets'): rule.update(4, _match(_gt(50), _dets(_gt(50), .5, 0)))
    rule.reset()
    assert rule.update(9, run[1]) and rule.best_epoch == 9 and rule.history == [dict(epoch=9, value=rule.value, p_better=None, best_epoch=9)]
    for bad, msg in ((dict(stat='mAP'), 'Unknown COCO statistic'), (dict(confidence=1), 'between 0 and 1'), (dict(n_boot=0), 'at least 1')):
        with pytest.raises(ValueError, match=msg): NoiseAwareBest(**bad)
    with pytest.raises(ValueError, match='patience'): NoiseAwareEarlyStopping(patience=0)

class _Replay(COCOMetric):
    "A `COCOMetric` whose last validation is whatever `r` is set to."
    def _result(self): return self.r

def _drive(cb, run:list)->tuple:
    "Run callback `cb` over a recorded `run` (matches, a `COCOMetric` result, or `None`: an epoch without validation) with a stand-in learner: `(epochs run, epochs saved, loaded)`."
    met, saved, loaded = _Replay(), [], []
    met.r = None
    cb.learn = SimpleNamespace(metrics=[met], save=lambda f, with_opt: saved.append(ep) or f, load=lambda f, with_opt: loaded.append(f))
    ep = -1
    cb.before_fit()
    try:
        for ep, m in enumerate(run):
            if m is not None: met.r = m if isinstance(m, dict) else dict(stats={}, eval=COCOEvaluation(m, None, None, {}))
            cb.learn.epoch = ep
            cb.after_epoch()
    except CancelFitException: pass
    cb.after_fit()
    return ep + 1, saved, loaded

def test_patience_stops_after_n_epochs_without_a_new_best():
    run = _run(GT, RISE_THEN_PLATEAU, seed=0)
    for patience in (1, 3, 5):
        assert _drive(NoiseAwareEarlyStopping(patience), run)[0] == 3 + patience + 1
    assert _drive(NoiseAwareEarlyStopping(10), run)[0] == len(run)
    assert _drive(NoiseAwareEarlyStopping(3), _slow_climb())[0] == 12  # still climbing: never stopped

def test_callbacks_save_the_best_and_skip_unvalidated_epochs():
    run = _run(GT, RISE_THEN_PLATEAU, seed=0)
    assert _drive(NoiseAwareSaveModel('best'), run) == (10, [0, 1, 2, 3], ['best'])
    assert _drive(NoiseAwareSaveModel('best', load_best=False), run)[2] == []
    # epochs without validation (the metric still holds the last one) neither count nor save
    with_gaps = run[:2] + [None] + run[2:4] + [None, None] + run[4:]
    assert _drive(NoiseAwareTracker(fname='b', patience=3), with_gaps) == (10, [0, 1, 3, 4], ['b'])
    tracker = NoiseAwareTracker()
    assert _drive(tracker, run) == (10, [], []) and tracker.rule.best_epoch == 3
    with pytest.raises(ValueError, match="backend 'fastdet'"): _drive(NoiseAwareTracker(), [dict(stats={}, eval=object())])

def test_the_metric_must_be_there():
    cb = NoiseAwareTracker()
    cb.learn = SimpleNamespace(metrics=[])
    with pytest.raises(ValueError, match='COCOMetric'): cb.before_fit()
    met = _Replay()
    met.r = None
    with pytest.raises(ValueError, match='No validation'): epoch_matches(SimpleNamespace(metrics=[met]))
    m = _run(GT, [.5])[0]
    met.r = dict(stats={}, eval=COCOEvaluation(m, None, None, {}))
    assert epoch_matches(SimpleNamespace(metrics=[met])) is m

def test_a_tiny_learner_saves_its_best_and_stops(tmp_path):
    "End to end: a real fit, validated by `COCOMetric`, saved and stopped by the rule, the best model loaded back."
    import torch
    from fastai.callback.schedule import fit_one_cycle  # noqa: F401 (patches `Learner`)
    from fastdet.data.core import DetDataLoaders
    from fastdet.learner import ssd_learner
    torch.manual_seed(0)
    dls = DetDataLoaders.from_shapes(n=24, size=64, bs=8, seed=5, num_workers=0)
    learn = ssd_learner(dls, 'ssdlite_mobilenetv2', weights=None, metrics=[COCOMetric('AP')], path=tmp_path)
    save, stop = NoiseAwareSaveModel('best'), NoiseAwareEarlyStopping(patience=1)
    with learn.no_bar(), learn.no_logging(): learn.fit_one_cycle(3, 1e-2, cbs=[save, stop])
    ran = len(learn.recorder.values)
    assert ran == 3 or ran == stop.rule.best_epoch + 2
    assert [h['value'] for h in save.rule.history] == pytest.approx([max(v[-1], 0) for v in learn.recorder.values], abs=1e-12)
    assert save.rule.best_epoch == stop.rule.best_epoch and (tmp_path/'models'/'best.pth').is_file()
    best = torch.load(tmp_path/'models'/'best.pth', weights_only=True)
    assert all(torch.equal(best[k].cpu(), v.cpu()) for k, v in learn.model.state_dict().items())  # loaded back after the fit
