"Distributed data parallel on the CPU (2 processes, gloo): training keeps the ranks identical, the metrics are exactly one process's."
import os, time
import numpy as np
import pytest
import torch

SHAPES = dict(n=45, size=64, render_size=96, bs=4, num_workers=0)  # 9 validation images: the 2 shards need one repeat

def _dls(**kw):
    from fastdet.data.core import DetDataLoaders
    return DetDataLoaders.from_shapes(**{**SHAPES, **kw})

def _ssd(dls, **kw):
    from fastdet.learner import ssd_learner
    torch.manual_seed(0)
    return ssd_learner(dls, 'ssdlite_mobilenetv2', pretrained=False, **kw)

def _flat_state(model)->np.ndarray:
    return torch.cat([v.detach().float().reshape(-1) for v in model.state_dict().values()]).numpy()

def _train_job(epochs:int=1):
    "One epoch of SSDLite under `learn.distrib_ctx()`, then the whole validation set's stats: what every rank holds."
    import torch.distributed as dist
    from fastdet.metrics import evaluate
    dls = _dls()
    learn = _ssd(dls)
    learn.recorder.train_metrics = False
    t0 = time.perf_counter()
    with learn.no_bar(), learn.no_logging(), learn.distrib_ctx(): learn.fit(epochs, 1e-3)
    secs = time.perf_counter() - t0
    stats = evaluate(learn, voc=True)
    mine = dict(rank=dist.get_rank(), weights=_flat_state(learn.model), stats=stats, secs=secs,
                shard=len(learn.dls.valid) if hasattr(learn.dls.valid, 'n') else None)
    out = [None] * dist.get_world_size()
    dist.all_gather_object(out, mine)
    return out

def _one_process_job():
    dls = _dls()
    learn = _ssd(dls)
    learn.recorder.train_metrics = False
    t0 = time.perf_counter()
    with learn.no_bar(), learn.no_logging(): learn.fit(1, 1e-3)
    return learn, time.perf_counter() - t0

@pytest.fixture(scope='module')
def trained():
    from fastdet.distrib import launch
    return launch(_train_job, 2)

def test_ranks_hold_identical_weights(trained):
    a, b = trained
    assert (a['rank'], b['rank']) == (0, 1)
    np.testing.assert_array_equal(a['weights'], b['weights'])
    assert np.isfinite(a['weights']).all()

def test_stats_exact_across_processes(trained):
    "2 processes, 9 validation images (one padded repeat): the 12 COCO stats and VOC mAPs equal one process's, on every rank."
    from fastdet.metrics import evaluate, COCO_STATS
    a, b = trained
    assert a['stats'] == b['stats']
    learn = _ssd(_dls())
    learn.model.load_state_dict({k: v for k, v in zip(learn.model.state_dict(), _split(a['weights'], learn.model.state_dict()))})
    one = evaluate(learn, voc=True)
    assert len(learn.dls.valid_ds) % 2 == 1
    assert set(one) == {*COCO_STATS, 'VOC07_mAP', 'VOC_mAP'}
    assert one == a['stats'], (one, a['stats'])
    assert one['AR100'] > 0 and one['VOC_mAP'] > 0  # numbers that padding would change

def _split(flat, sd):
    out, i = [], 0
    for v in sd.values():
        out.append(torch.as_tensor(flat[i:i + v.numel()]).reshape(v.shape).to(v.dtype)); i += v.numel()
    return out
