"EMACallback: the average equals timm's ModelEmaV3 run by hand; validation, predict, export and save_detector use it; lr_find and fine_tune."
import copy
import pytest
import torch
from fastai.callback.core import Callback
from fastai.callback.schedule import *  # fit_one_cycle, fine_tune, lr_find
from fastai.learner import load_learner
from fastai.torch_core import find_bs, get_model
from timm.utils.model_ema import ModelEmaV3
from fastdet.data.core import DetDataLoaders
from fastdet.learner import ssd_learner, efficientdet_learner, ValidateLastEpoch
from fastdet.modelfile import save_detector, load_detector
from fastdet.ema import EMACallback

class _Steps(Callback):
    "Record, per fit, the starting model and the weights after each optimizer step, at `before_train` and at `after_epoch`."
    order = 10  # after EMACallback (5)
    def __init__(self): self.fits = []
    def before_fit(self):
        if hasattr(self.learn, 'lr_finder'): return
        self.fits.append(dict(start=copy.deepcopy(get_model(self.learn.model)), steps=[], before_train=[], after_epoch=[]))
    def after_step(self): self.fits[-1]['steps'].append(_state(get_model(self.learn.model)))  # (under DDP: inside the wrapper)
    def before_train(self): self.fits[-1]['before_train'].append(_state(get_model(self.learn.model)))
    def after_epoch(self): self.fits[-1]['after_epoch'].append(_state(get_model(self.learn.model)))

def _state(m): return {k: v.detach().clone() for k, v in m.state_dict().items()}

def _replay(start, steps, decay=.9998, warmup_power=3/4, buffers=True)->list:
    "timm's `ModelEmaV3` updated by hand with each recorded state: its state after each update."
    ema, m, out = ModelEmaV3(start, decay=decay, use_warmup=True, warmup_power=warmup_power, exclude_buffers=not buffers), copy.deepcopy(start), []
    for i, sd in enumerate(steps):
        m.load_state_dict(sd); ema.update(m, step=i + 1); out.append(_state(ema.module))
    return out

def _equal(a:dict, b:dict)->bool: return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)

def _dls(n=32, bs=8): return DetDataLoaders.from_shapes(n=n, size=64, bs=bs, seed=5, num_workers=0)

@pytest.fixture(scope='module')
def fitted(tmp_path_factory):
    "Two epochs (3 optimizer steps each) with `ema=True`."
    torch.set_num_threads(1)
    torch.manual_seed(0)
    learn = ssd_learner(_dls(), 'ssdlite_mobilenetv2', weights=None, ema=True, path=tmp_path_factory.mktemp('ema'))
    rec = _Steps()
    learn.fit(2, 1e-3, cbs=rec)
    fit = rec.fits[0]
    return learn, fit, _replay(fit['start'], fit['steps'])

def test_average_is_timms_model_ema_v3(fitted):
    learn, fit, emas = fitted
    assert len(fit['steps']) == 6
    assert _equal(_state(learn.model), emas[-1])  # bit for bit, in the model after fit
    assert not _equal(emas[-1], fit['steps'][-1])  # and not the training weights
    assert isinstance(learn.ema, EMACallback) and learn.ema.model_ema is None and learn.ema.n_updates == 6

def _loss_by_hand(learn, state)->float:
    "The validation loss of a model with `state`, averaged over the validation set as fastai's recorder does (weighted by batch size)."
    m = copy.deepcopy(learn.model); m.load_state_dict(state); m.eval()
    tot, n = 0., 0
    with torch.no_grad():
        for xb, *yb in learn.dls.valid:
            bs = find_bs(yb)
            tot += learn.loss_func(m(xb), *yb).item() * bs; n += bs
    return tot / n

def test_validation_uses_the_average(fitted):
    learn, fit, emas = fitted
    valid = [v[1] for v in learn.recorder.values]
    for epoch, last in enumerate((2, 5)):
        assert valid[epoch] == pytest.approx(_loss_by_hand(learn, emas[last]), rel=1e-6)
        assert valid[epoch] != pytest.approx(_loss_by_hand(learn, fit['steps'][last]), rel=1e-3)
        assert _equal(fit['after_epoch'][epoch], emas[last])  # the average in the model until the next training epoch
    # training goes on from the training weights, not from the average
    assert _equal(fit['before_train'][1], fit['steps'][2])
    assert learn.validate()[0] == pytest.approx(valid[-1], rel=1e-6)  # after fit: the model is the average

def test_predict_export_and_save_detector_use_the_average(fitted, tmp_path):
    learn, fit, emas = fitted
    item = learn.dls.valid.items[0].file
    ref = copy.deepcopy(learn); ref.remove_cb(EMACallback); ref.model = copy.deepcopy(learn.model); ref.model.load_state_dict(emas[-1])
    boxes, labels, scores = learn.predict(item)
    b0, l0, s0 = ref.predict(item)
    assert torch.equal(boxes, b0) and labels == l0 and torch.equal(scores, s0)
    [(b1, l1, s1)] = learn.predict_batch([item])
    assert torch.equal(b1, b0) and torch.equal(s1, s0)
    # learn.export pickles the callback (no copy of the model left in it) and loads; same detections
    learn.export(tmp_path/'ema.pkl')
    loaded = load_learner(tmp_path/'ema.pkl')
    assert isinstance(loaded.ema, EMACallback) and loaded.ema.model_ema is None
    assert _equal(_state(loaded.model), emas[-1])
    b2, l2, s2 = loaded.predict(item)
    assert torch.equal(b2, b0) and l2 == l0 and torch.equal(s2, s0)
    # save_detector / load_detector and the ONNX export module: the averaged weights
    save_detector(learn, tmp_path/'ema.pth')
    assert _equal(_state(load_detector(tmp_path/'ema.pth').model), emas[-1])
    assert _equal(_state(learn.export_module().model), emas[-1])

def test_lr_find_is_sat_out(tmp_path):
    torch.set_num_threads(1)
    learn = ssd_learner(_dls(), 'ssdlite_mobilenetv2', weights=None, ema=True, path=tmp_path)
    before = _state(learn.model)
    learn.lr_find(num_it=4, show_plot=False)
    assert learn.ema.n_updates == 0 and learn.ema.model_ema is None
    assert _equal(_state(learn.model), before)  # fastai's lr_find restored the model, the callback left it alone

def test_fine_tune_averages_each_fit(tmp_path):
    "fine_tune: the frozen fit ends with its average; the unfrozen fit trains from it and averages anew (the last epoch validated only)."
    torch.set_num_threads(1)
    torch.manual_seed(0)
    learn = ssd_learner(_dls(), 'ssdlite_mobilenetv2', weights=None, path=tmp_path, cbs=EMACallback(decay=.999, warmup_power=1.))
    learn.freeze()  # as when pretrained (not here: no network)
    rec = _Steps()
    learn.fine_tune(2, 1e-3, freeze_epochs=1, cbs=[rec, ValidateLastEpoch()])
    frozen, unfrozen = rec.fits
    assert (len(frozen['steps']), len(unfrozen['steps'])) == (3, 6)
    ema1 = _replay(frozen['start'], frozen['steps'], decay=.999, warmup_power=1.)[-1]
    assert _equal(_state(unfrozen['start']), ema1)  # the second fit starts from the first one's average
    ema2 = _replay(unfrozen['start'], unfrozen['steps'], decay=.999, warmup_power=1.)
    assert _equal(_state(learn.model), ema2[-1])
    assert _equal(unfrozen['before_train'][1], unfrozen['steps'][2])  # skipped validation: training weights back all the same
    assert learn.recorder.values[-1][1] == pytest.approx(_loss_by_hand(learn, ema2[-1]), rel=1e-6)

class _Interrupt(Callback):
    order = 20
    def after_step(self):
        if self.learn.ema.n_updates == 2: raise KeyboardInterrupt()

def test_keep_average_after_an_interrupted_fit(tmp_path):
    torch.set_num_threads(1)
    learn = ssd_learner(_dls(), 'ssdlite_mobilenetv2', weights=None, path=tmp_path, ema=True)
    rec = _Steps()
    with pytest.raises(KeyboardInterrupt): learn.fit(1, 1e-3, cbs=[rec, _Interrupt()])
    fit = rec.fits[0]
    assert _equal(_state(learn.model), fit['steps'][-1])  # after_fit did not run: the training weights
    learn.ema.keep_average()
    assert _equal(_state(learn.model), _replay(fit['start'], fit['steps'])[-1]) and learn.ema.model_ema is None

def test_buffers_false_copies_batchnorm_statistics(tmp_path):
    torch.set_num_threads(1)
    learn = ssd_learner(_dls(), 'ssdlite_mobilenetv2', weights=None, path=tmp_path, cbs=EMACallback(buffers=False))
    rec = _Steps()
    learn.fit(1, 1e-3, cbs=rec)
    fit, got = rec.fits[0], _state(learn.model)
    assert _equal(got, _replay(fit['start'], fit['steps'], buffers=False)[-1])
    k = 'backbone.body.0.1.running_mean'
    assert torch.equal(got[k], fit['steps'][-1][k])  # the latest statistics, not averaged
    assert not torch.equal(got['backbone.body.0.1.weight'], fit['steps'][-1]['backbone.body.0.1.weight'])  # the weights are

def test_learner_factories_attach_it():
    dls = _dls()
    assert not hasattr(ssd_learner(dls, weights=None), 'ema')
    assert ssd_learner(dls, weights=None, ema=.9999).ema.decay == .9999
    assert ssd_learner(dls, weights=None, ema=True).ema.decay == .9998
    d = efficientdet_learner(dls, 'tf_efficientdet_d0', weights=None, config=dict(min_level=3, max_level=5, num_levels=3, fpn_cell_repeats=1), ema=True)
    assert isinstance(d.ema, EMACallback)

def _ddp_job():
    "One epoch of 2 processes under `learn.distrib_ctx()` with `ema=True`: what each rank holds."
    import torch.distributed as dist
    torch.manual_seed(0)
    learn = ssd_learner(_dls(n=64, bs=4), 'ssdlite_mobilenetv2', weights=None, ema=True)
    rec = _Steps()
    with learn.no_bar(), learn.no_logging(), learn.distrib_ctx(): learn.fit(1, 1e-3, cbs=rec)
    fit, got = rec.fits[0], _state(learn.model)
    mine = _replay(fit['start'], fit['steps'])[-1]
    params = {n for n, _ in learn.model.named_parameters()}
    out = [None] * dist.get_world_size()
    dist.all_gather_object(out, dict(rank=dist.get_rank(), steps=len(fit['steps']), state=got, mine_all=_equal(got, mine),
                                     mine_params=all(torch.equal(got[k], mine[k]) for k in params), valid=learn.recorder.values[-1][1]))
    return out

@pytest.mark.slow  # two processes started: ~40 s here
def test_ddp_ranks_average_alike():
    "2 processes (gloo, CPU): each rank's average is ModelEmaV3 of its own weights; afterwards all hold rank 0's (BatchNorm buffers broadcast)."
    from fastdet.distrib import launch
    a, b = launch(_ddp_job, 2)
    assert (a['rank'], b['rank'], a['steps'], b['steps']) == (0, 1, 6, 6)
    assert a['mine_all'] and a['mine_params'] and b['mine_params']  # rank 1's buffers: rank 0's, broadcast after fit
    assert _equal(a['state'], b['state'])
    assert a['valid'] == b['valid']
