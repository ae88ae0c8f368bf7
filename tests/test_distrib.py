"Distributed data parallel on the CPU (2 processes, gloo): training keeps the ranks identical, the metrics are exactly one process's."
import os, subprocess, sys, time
import numpy as np
import pytest
import torch
from fastai.callback.core import Callback, CancelValidException

# 9 validation images: the 2 shards need one repeat. Validation one image at a time: a CPU convolution's last bits depend on
# the batch it runs in (3e-8 here), which would change the detections themselves between 1 and 2 processes
SHAPES = dict(n=45, size=64, render_size=96, bs=4, val_bs=1, num_workers=0)

def _dls(**kw):
    from fastdet.data.core import DetDataLoaders
    return DetDataLoaders.from_shapes(**{**SHAPES, **kw})

def _learner(arch:str, **kw):
    from fastdet.learner import ssd_learner, efficientdet_learner
    from fastdet.families import SSD_FAMILY
    from fastdet.losses.ssd import MultiBoxLoss
    torch.manual_seed(0)
    if arch.startswith('ssd'):  # every candidate decoded (no score threshold): an untrained model still finds some objects
        return ssd_learner(_dls(), arch, weights=None, loss_func=MultiBoxLoss(**{**SSD_FAMILY.decode(arch), 'score_thresh': 0.}), **kw)
    return efficientdet_learner(_dls(n=30, size=128, render_size=128), arch, weights=None, **kw)  # 6 validation images

def _flat_state(model)->np.ndarray:
    return torch.cat([v.detach().float().reshape(-1) for v in model.state_dict().values()]).numpy()

class _Seen(Callback):
    "What each process trained and validated on: the model's wrapper and the images of its shard."
    order = 20  # after fastai's `DistributedTrainer` (11) has wrapped model and loaders
    def __init__(self, fname): self.fname = fname
    def before_fit(self): self.model_type, self.train_n, self.valid_n = type(self.learn.model).__name__, 0, 0
    def after_epoch(self):  # as a callback keeping the best model does: the model is DDP-wrapped, the loaders are shards
        from fastdet.modelfile import save_detector
        save_detector(self.learn, self.fname)
    def after_batch(self):
        if self.training: self.train_n += len(self.yb[1])
        else: self.valid_n += len(self.yb[1])

class _NoValidate(Callback):
    def before_validate(self): raise CancelValidException()

def _job(arch:str='ssdlite_mobilenetv2', validate:bool=True):
    "One epoch under fastai's `learn.distrib_ctx()` with the metrics in the loop (or no validation), then `evaluate`: what every rank holds."
    import torch.distributed as dist
    from fastdet.metrics import evaluate, COCOMetric, VOCMetric
    learn = _learner(arch, metrics=[COCOMetric('AP'), COCOMetric('AR100'), VOCMetric()])
    import tempfile
    from fastdet.modelfile import load_detector
    fname = os.path.join(tempfile.mkdtemp(), 'model.pth')
    seen = _Seen(fname)
    before = evaluate(learn, voc=True)  # the seeded untrained model: the same weights in every process and in the test's
    with learn.no_bar(), learn.no_logging(), learn.distrib_ctx(): learn.fit(1, 1e-3, cbs=[seen] + ([] if validate else [_NoValidate()]))
    saved = load_detector(fname).model.state_dict()
    mine = dict(rank=dist.get_rank(), threads=torch.get_num_threads(), before=before, saved=all(torch.equal(v, saved[k]) for k, v in learn.model.state_dict().items()), weights=_flat_state(learn.model), in_loop={k: v for k, v in zip(learn.recorder.metric_names[1:], learn.recorder.values[-1]) if k in ('AP', 'AR100', 'VOC_mAP')} if validate else None,
                stats=evaluate(learn, voc=True), model_type=seen.model_type, train_n=seen.train_n, valid_n=seen.valid_n)
    out = [None] * dist.get_world_size()
    dist.all_gather_object(out, mine)
    return out

@pytest.fixture(scope='module')
def trained():
    from fastdet.distrib import launch
    return launch(_job, 2)

def _check_ranks(a, b, n_train:int, bs:int, n_valid:int):
    assert (a['rank'], b['rank']) == (0, 1)
    assert a['model_type'] == 'DistributedDataParallel'
    for r in (a, b):  # each process its half of the images: training in full batches, validation padded by one repeat when odd
        assert (r['train_n'], r['valid_n']) == ((n_train // 2) // bs * bs, -(-n_valid // 2)), (r['train_n'], r['valid_n'], n_train, n_valid)
    assert a['before'] == b['before']
    assert a['saved']  # `save_detector` inside `distrib_ctx` wrote the unwrapped model (rank 0: the process that writes)
    np.testing.assert_array_equal(a['weights'], b['weights'])
    assert np.isfinite(a['weights']).all()
    assert a['stats'] == b['stats'] and a['in_loop'] == b['in_loop']

def _one_process(arch, r, weights:bool=True):
    "The stats of one process on the weights the 2-process run ended with (or the seeded initial ones), with the threads each of them had."
    from fastdet.metrics import evaluate
    learn = _learner(arch)
    sd = learn.model.state_dict()
    if weights: learn.model.load_state_dict(dict(zip(sd, _split(r['weights'], sd))))
    n = torch.get_num_threads()
    torch.set_num_threads(r['threads'])  # a CPU convolution's last bits depend on the thread count too
    try: return learn, evaluate(learn, voc=True)
    finally: torch.set_num_threads(n)

def test_ranks_hold_identical_weights(trained):
    "One epoch of SSDLite in 2 processes: DDP-wrapped, each rank half of the data, identical weights afterwards."
    learn = _learner('ssdlite_mobilenetv2')
    _check_ranks(*trained, len(learn.dls.train_ds), learn.dls.train.bs, len(learn.dls.valid_ds))

def test_stats_exact_across_processes(trained):
    "2 processes, 9 validation images (one padded repeat): the 12 COCO stats and VOC mAPs equal one process's, on every rank."
    from fastdet.metrics import COCO_STATS, evaluate
    a, b = trained
    learn, one = _one_process('ssdlite_mobilenetv2', a)
    assert len(learn.dls.valid_ds) % 2 == 1
    assert set(one) == {*COCO_STATS, 'VOC07_mAP', 'VOC_mAP'}
    assert one == a['stats'], (one, a['stats'])
    _, before = _one_process('ssdlite_mobilenetv2', a, weights=False)
    assert before == a['before'] == b['before'], (before, a['before'])
    assert before['AR100'] > 0 and before['VOC_mAP'] > 0  # numbers that a counted repeat changes
    # the metrics in fastai's loop (validation after the epoch, through `DistributedTrainer`): the same numbers
    assert a['in_loop'] == dict(AP=max(one['AP'], 0.), AR100=max(one['AR100'], 0.), VOC_mAP=one['VOC_mAP']), (a['in_loop'], one)

def test_outside_ddp_unchanged():
    "No process group: the metrics read their batches by position as before and equal the plain functions (no gather)."
    import torch.distributed as dist
    from conftest import pad_items
    from fastdet.metrics import COCOMetric, VOCMetric, coco_stats, voc_map
    from fastdet.boxes import bbox_to_pixels
    assert not dist.is_initialized()
    g = torch.Generator().manual_seed(0)
    gts, dets = [], []
    for i in range(7):
        n = int(torch.randint(1, 5, (1,), generator=g))
        xy = torch.rand(n, 2, generator=g) * 1.2 - 1
        b = torch.cat([xy, (xy + torch.rand(n, 2, generator=g) * .6 + .2).clamp(max=1)], 1)
        l = torch.randint(1, 4, (n,), generator=g)
        gts.append((b, l)); dets.append((b + torch.randn(n, 4, generator=g) * .03, l, torch.rand(n, generator=g)))
    px = lambda b: bbox_to_pixels(b, (100, 120))
    coco, voc = COCOMetric('AP'), VOCMetric()
    for m in (coco, voc):
        m.input_hw = (100, 120)
        m.accum_values(pad_items(dets[:4]), pad_items(gts[:4])); m.accum_values(pad_items(dets[4:]), pad_items(gts[4:]))
        assert m._acc.idx == list(range(7)) and m._acc.world == 1
    ref = coco_stats([(px(b), l) for b, l in gts], [(px(b), l, s) for b, l, s in dets])
    assert coco.stats == ref and ref['AP'] > 0
    assert voc.value == voc_map([(px(b), l) for b, l in gts], [(px(b), l, s) for b, l, s in dets])[0] > 0

@pytest.mark.slow
def test_efficientdet_ddp():
    "EfficientDet-D0 (size 128, random weights), one epoch in 2 processes without validation (no DDP forward after the last step): identical weights and BatchNorm statistics, exact stats."
    from fastdet.distrib import launch
    a, b = launch(_job, 2, 'tf_efficientdet_d0', validate=False)
    learn, one = _one_process('tf_efficientdet_d0', a)
    _check_ranks(a, b, len(learn.dls.train_ds), learn.dls.train.bs, 0)
    assert one == a['stats'], (one, a['stats'])

def _split(flat, sd):
    out, i = [], 0
    for v in sd.values():
        out.append(torch.as_tensor(flat[i:i + v.numel()]).reshape(v.shape).to(v.dtype)); i += v.numel()
    return out

def test_importing_fastdet_patches_nothing_in_fastai():
    "fastai's DDP functions are replaced by an explicit `patch_fastai_ddp()` (made by `launch` and `DetLearner.distrib_ctx`), not by an import."
    code = ("import fastai.distributed as fd, fastdet.all, fastdet.commands; from fastai.distributed import DistributedDL, DistributedTrainer; "
            "before = (fd.setup_distrib.__module__, DistributedDL._broadcast.__module__, DistributedTrainer.__init__.__module__); "
            "from fastdet.distrib import patch_fastai_ddp; patch_fastai_ddp(); print(before, fd.setup_distrib.__module__)")
    r = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, timeout=300)
    assert r.stdout.strip() == "('fastai.distributed', 'fastai.distributed', 'fastai.distributed') fastdet.distrib", r.stdout + r.stderr[-2000:]
