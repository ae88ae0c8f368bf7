"fastdet.evaluation: pycocotools' numbers from weighted accumulation, bootstrap intervals (repeatable, right by simulation), paired comparison against hotcoco."
import contextlib, copy, io, sys
from pathlib import Path
import numpy as np
import pytest

from fastdet.evaluation import (COCO_STATS, match_coco, coco_resampled, coco_intervals, coco_compare, evaluate_coco, resample_weights,
                                match_voc, voc_resampled, synthetic_matches, interval_coverage)
from fastdet.metrics import voc_map

sys.path.insert(0, str(Path(__file__).parents[1]/'benchmarks'))
from metrics import make_data, coco_inputs  # the benchmark's synthetic set: jittered true boxes, confusions, background


def arrays(gt:dict, dets:list)->tuple:
    "`match_coco`'s arguments from COCO dicts (image ids 1..n)."
    ids = sorted(i['id'] for i in gt['images'])
    pos = {i: n for n, i in enumerate(ids)}
    A = gt['annotations']
    return ([pos[a['image_id']] for a in A], [a['category_id'] for a in A], [a['bbox'] for a in A], [a['area'] for a in A], [a.get('iscrowd', 0) for a in A],
            [pos[d['image_id']] for d in dets], [d['category_id'] for d in dets], [d['bbox'] for d in dets], [d['score'] for d in dets])


def pycocotools_stats(gt, dets):
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval
    with contextlib.redirect_stdout(io.StringIO()):
        c = COCO(); c.dataset = copy.deepcopy(gt); c.createIndex()
        E = COCOeval(c, c.loadRes(copy.deepcopy(dets)), 'bbox'); E.evaluate(); E.accumulate(); E.summarize()
    return E


@pytest.fixture(scope='module')
def synthetic():
    gt, dets = coco_inputs(make_data(150, 40))
    return gt, dets, match_coco(*arrays(gt, dets), n=len(gt['images']), cat_ids=[c['id'] for c in gt['categories']])


def test_point_estimate_is_pycocotools_to_the_bit(synthetic):
    gt, dets, _ = synthetic
    ev = evaluate_coco(*arrays(gt, dets), n=len(gt['images']), cat_ids=[c['id'] for c in gt['categories']])
    E = pycocotools_stats(gt, dets)
    assert list(ev.stats.values()) == E.stats.tolist()
    assert np.array_equal(ev.precision, E.eval['precision'][..., -1]) and np.array_equal(ev.recall, E.eval['recall'])


def random_set(seed:int)->tuple:
    "COCO dicts of a small random set: crowd regions, tied scores, classes without boxes or without detections, empty images."
    r = np.random.default_rng(seed)
    n, K = int(r.integers(1, 30)), int(r.integers(1, 6))
    g_img = np.repeat(np.arange(n), r.integers(0, 8, n))
    boxes = np.c_[r.uniform(0, 300, (len(g_img), 2)), r.uniform(2, 200, (len(g_img), 2))]
    anns = [dict(id=j + 1, image_id=int(i) + 1, category_id=int(r.integers(1, K + 1)), bbox=b.tolist(), area=float(b[2] * b[3] * r.uniform(.7, 1.1)),
                 iscrowd=int(r.random() < .1)) for j, (i, b) in enumerate(zip(g_img, boxes))]
    dets = []
    for _ in range(int(r.integers(0, 40 * n))):
        a = anns[int(r.integers(len(anns)))] if anns and r.random() < .8 else None
        b = np.array(a['bbox']) + r.normal(0, 4, 4) if a else np.r_[r.uniform(0, 300, 2), r.uniform(2, 200, 2)]
        b[2:] = np.abs(b[2:]) + 1
        dets.append(dict(image_id=a['image_id'] if a else int(r.integers(1, n + 1)), category_id=a['category_id'] if a and r.random() < .7 else int(r.integers(1, K + 2)),
                         bbox=b.tolist(), score=round(float(r.random()), 1)))
    gt = dict(images=[dict(id=i + 1) for i in range(n)], annotations=anns, categories=[dict(id=k) for k in range(1, K + 1)])
    return gt, dets


@pytest.mark.parametrize('seed', range(12))
def test_random_sets_are_pycocotools_to_the_bit(seed):
    gt, dets = random_set(seed)
    assert dets, f'seed {seed} draws no detection'
    ev = evaluate_coco(*arrays(gt, dets), n=len(gt['images']), cat_ids=[c['id'] for c in gt['categories']])
    E = pycocotools_stats(gt, dets)
    assert list(ev.stats.values()) == E.stats.tolist()
    assert np.array_equal(ev.precision, E.eval['precision'][..., -1]) and np.array_equal(ev.recall, E.eval['recall'])


def test_infinite_boxes_are_pycocotools_without_a_warning():
    "An untrained detector's boxes can be infinite (effdet's decoding has no clamp): no match and no RuntimeWarning, as in pycocotools' C."
    import warnings
    gt, dets = random_set(5)
    for d, b in zip(dets[::7], ([-np.inf, 10., np.inf, 5.], [1., -np.inf, 3., np.inf], [np.inf, np.inf, np.inf, np.inf]) * len(dets)): d['bbox'] = b
    with warnings.catch_warnings():
        warnings.simplefilter('error')
        ev = evaluate_coco(*arrays(gt, dets), n=len(gt['images']), cat_ids=[c['id'] for c in gt['categories']])
    E = pycocotools_stats(gt, dets)
    assert list(ev.stats.values()) == E.stats.tolist()
    assert np.array_equal(ev.precision, E.eval['precision'][..., -1]) and np.array_equal(ev.recall, E.eval['recall'])


def test_sparse_sets_are_pycocotools_to_the_bit():
    "Most images empty: (image, category) pairs are looked up by search rather than in a table of all pairs."
    gt, dets = random_set(3)
    spread = lambda i: 200 * i - 199
    gt = dict(images=[dict(id=i) for i in range(1, spread(len(gt['images'])) + 1)], categories=gt['categories'],
              annotations=[{**a, 'image_id': spread(a['image_id'])} for a in gt['annotations']])
    dets = [{**d, 'image_id': spread(d['image_id'])} for d in dets]
    ev = evaluate_coco(*arrays(gt, dets), n=len(gt['images']), cat_ids=[c['id'] for c in gt['categories']])
    E = pycocotools_stats(gt, dets)
    assert list(ev.stats.values()) == E.stats.tolist()
    assert np.array_equal(ev.precision, E.eval['precision'][..., -1]) and np.array_equal(ev.recall, E.eval['recall'])


def test_a_resample_is_pycocotools_on_the_resampled_images(synthetic):
    "Weights `w` give what pycocotools gives on the set in which image i appears w[i] times (distinct scores)."
    gt, dets, m = synthetic
    w = resample_weights(m.n, 2, seed=3)
    stats, _ = coco_resampled(m, w)
    by_img = lambda xs: {i: [x for x in xs if x['image_id'] == i] for i in range(1, m.n + 1)}
    g_by, d_by = by_img(gt['annotations']), by_img(dets)
    for b in range(2):
        g2 = dict(images=[], annotations=[], categories=gt['categories'])
        d2 = []
        for i in np.repeat(np.arange(m.n), w[b].astype(int)):
            j = len(g2['images']) + 1
            g2['images'].append(dict(id=j))
            g2['annotations'] += [{**a, 'id': len(g2['annotations']) + k + 1, 'image_id': j} for k, a in enumerate(g_by[i + 1])]
            d2 += [{**d, 'image_id': j} for d in d_by[i + 1]]
        np.testing.assert_allclose([stats[k][b] for k in COCO_STATS], pycocotools_stats(g2, d2).stats, atol=1e-12)


def test_float32_resamples_are_float64s_to_1e6(synthetic):
    "Weights in float32 (what the intervals use) hold the counts exactly: every value within 1e-6 of float64's (float32 sums), recalls equal."
    *_, m = synthetic
    w = resample_weights(m.n, 50, seed=2)
    (s64, c64), (s32, c32) = coco_resampled(m, w), coco_resampled(m, w.astype(np.float32))
    for k in COCO_STATS: np.testing.assert_allclose(s32[k], s64[k], rtol=0, atol=1e-6, err_msg=k)
    for k in c64: np.testing.assert_allclose(c32[k], c64[k], rtol=0, atol=1e-6, err_msg=k)
    assert all(np.array_equal(s32[k], s64[k]) for k in COCO_STATS if k.startswith('AR'))


def test_intervals_repeat_exactly_for_a_seed(synthetic):
    *_, m = synthetic
    a, pa = coco_intervals(m, n_boot=200, seed=7)
    b, pb = coco_intervals(m, n_boot=200, seed=7)
    c, _ = coco_intervals(m, n_boot=200, seed=8)
    assert a == b and all(np.array_equal(pa[k][0], pb[k][0], equal_nan=True) for k in pa)
    assert a != c
    point, _ = coco_resampled(m, np.ones((1, m.n)))
    for k in COCO_STATS: assert a[k][0] < point[k][0] < a[k][1], k  # this set's intervals are not degenerate


def test_95_percent_intervals_cover_the_population_value():
    "Validation sets of 50 images drawn from a population of known AP: the 95% interval holds the population's value in 90-98% of them."
    cover = interval_coverage(synthetic_matches(2000), size=50, draws=300, n_boot=400, stats=('AP', 'AP50', 'AR100'), seed=1)
    print('coverage:', cover.to_dict())
    assert ((.90 <= cover) & (cover <= .98)).all(), cover


def test_paired_deltas_equal_hotcoco(synthetic):
    "B - A of each statistic and class equals hotcoco.compare's to 1e-9."
    hotcoco = pytest.importorskip('hotcoco')
    gt, dets, m = synthetic
    rng = np.random.default_rng(0)
    dets_b = [dict(d, score=.5 * d['score'] + .5 * float(rng.random())) for d in dets]  # model B: scores half noise
    mb = match_coco(*arrays(gt, dets_b), n=m.n, cat_ids=[c['id'] for c in gt['categories']])
    stats, per = coco_compare(m, mb, n_boot=1000, seed=0)
    def hc(d):
        c = hotcoco.COCO(copy.deepcopy(gt))
        E = hotcoco.COCOeval(c, c.loadRes(copy.deepcopy(d)), 'bbox')
        with contextlib.redirect_stdout(io.StringIO()): E.evaluate(); E.accumulate(); E.summarize()
        return E
    r = hotcoco.compare(hc(dets), hc(dets_b), n_bootstrap=1000, seed=0)
    for _, row in stats.iterrows():
        assert row.delta == pytest.approx(r['deltas'][row.stat], abs=1e-9), row.stat
        assert row.lo <= row.delta <= row.hi, row.stat
    # hotcoco's paired intervals are about 20% narrower than these (its standard error of AP's delta 0.0037 here, ours 0.0047);
    # ours equal pycocotools on each resampled set (test above), so the two differ in how they resample, not by Monte Carlo error.
    ref = {p['cat_id']: p['delta'] for p in r['per_category']}
    for _, row in per.iterrows(): assert row.delta == pytest.approx(ref[row.category_id], abs=1e-9)


def test_voc_weights_one_are_voc_map():
    data = make_data(120, 30, seed=4)
    G = [(gb, gl, np.arange(len(gl)) % 7 == 3) for hw, gb, gl, db, dl, ds in data]
    D = [(db, dl, ds) for hw, gb, gl, db, dl, ds in data]
    for ep in (False, True):
        mp, aps = voc_map(G, D, eleven_point=ep)
        g_img = np.concatenate([np.full(len(g[1]), i) for i, g in enumerate(G)]); d_img = np.concatenate([np.full(len(d[1]), i) for i, d in enumerate(D)])
        cat = lambda xs, j: np.concatenate([np.asarray(x[j]) for x in xs])
        m = match_voc(g_img, cat(G, 0), cat(G, 1), cat(G, 2), d_img, cat(D, 0), cat(D, 1), cat(D, 2), len(data))
        w = resample_weights(len(data), 50, seed=0)
        w[0] = 1
        boot, _ = voc_resampled(m, w, ep)
        assert boot[0] == pytest.approx(mp, abs=1e-12) and boot[1:].std() > 0
