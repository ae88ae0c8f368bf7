"""fastdet on a CUDA GPU: SSDLite and EfficientDet-D0 trained for a few hundred steps with `to_fp16()` on the built-in
dataset; prints training images/s and the 12 COCO stats of the validation set, then checks that the metric's value on
CUDA equals the CPU value for the same model and data (to 1e-4, TF32 off for the comparison).

Exits with code 0 and a message where there is no CUDA device; exit code 1 when a check fails.

Usage: python benchmarks/cuda_check.py [--steps 300] [--arch ssdlite_mobilenetv2 tf_efficientdet_d0] [--workers 8]
"""
import argparse, math, sys, time
import torch

def _sync():
    if torch.cuda.is_available(): torch.cuda.synchronize()

class _Throughput:
    "Training images and seconds (CUDA synchronised), validation excluded."
    def __init__(self): self.n, self.secs = 0, 0.
def _throughput_cb(tp):
    from fastai.callback.core import Callback
    class ThroughputCB(Callback):
        order = 99
        def before_train(self): _sync(); self.t0 = time.perf_counter()
        def after_batch(self):
            if self.training: tp.n += len(self.xb[0])
        def after_train(self): _sync(); tp.secs += time.perf_counter() - self.t0
    return ThroughputCB()

def _learner(arch:str, workers:int):
    from fastdet.data.core import DetDataLoaders
    from fastdet.learner import make_learner
    from fastdet.metrics import COCOMetric
    size, bs = (320, 64) if arch.startswith('ssd') else (512, 32)
    torch.manual_seed(0)
    dls = DetDataLoaders.from_shapes(n=2500, size=size, render_size=512, bs=bs, num_workers=workers)
    return make_learner(dls, arch, weights=None, metrics=[COCOMetric('AP'), COCOMetric('AP50')]), size, bs

def check(arch:str, steps:int, workers:int, tol:float=1e-4, n_compare:int=128)->bool:
    from fastdet.metrics import evaluate, coco_table
    from fastdet.learner import ValidateLastEpoch
    learn, size, bs = _learner(arch, workers)
    learn.to_fp16()
    epochs = max(1, math.ceil(steps / len(learn.dls.train)))
    tp = _Throughput()
    t = time.perf_counter()
    with learn.no_bar(): learn.fit_one_cycle(epochs, 1e-2 if arch.startswith('ssd') else 2e-3, cbs=[_throughput_cb(tp), ValidateLastEpoch()])
    print(f"\n{arch}: {epochs * len(learn.dls.train)} steps of bs {bs} at {size} px with to_fp16() on {torch.cuda.get_device_name()}: "
          f"{tp.n / tp.secs:.0f} training images/s ({time.perf_counter() - t:.0f} s in all)")
    print(coco_table(learn.metrics[0].stats))  # the validation set's, in fastai's loop (fp16)
    learn.to_fp32()
    torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = False, False
    items = list(learn.dls.valid.items)[:n_compare]
    gpu = evaluate(learn, learn.dls.test_dl(items, with_labels=True))
    learn.dls.to('cpu'); learn.model.cpu()
    dl = learn.dls.test_dl(items, with_labels=True, num_workers=0, device='cpu')
    t = time.perf_counter(); cpu = evaluate(learn, dl); cpu_secs = time.perf_counter() - t
    diff = max(abs(gpu[k] - cpu[k]) for k in gpu)
    ok = diff <= tol
    print(f"{arch}: COCO stats on CUDA vs CPU (same weights, same {len(dl.dataset)} images, fp32): max |diff| {diff:.2e} "
          f"({'OK' if ok else 'FAIL'}, tolerance {tol:g}; CPU evaluation {cpu_secs:.0f} s)")
    if not ok: print({k: (gpu[k], cpu[k]) for k in gpu if abs(gpu[k] - cpu[k]) > tol})
    return ok

if __name__ == '__main__':
    p = argparse.ArgumentParser()
    p.add_argument('--steps', type=int, default=300)
    p.add_argument('--arch', nargs='+', default=['ssdlite_mobilenetv2', 'tf_efficientdet_d0'])
    p.add_argument('--workers', type=int, default=8)
    a = p.parse_args()
    if not torch.cuda.is_available():
        print("cuda_check: no CUDA device on this machine; nothing checked (run it where `torch.cuda.is_available()`).")
        sys.exit(0)
    import fastdet.all  # noqa: F401 (after the CUDA check: the message comes fast)
    print(f"torch {torch.__version__}, CUDA {torch.version.cuda}, {torch.cuda.get_device_name()}")
    results = [check(arch, a.steps, a.workers) for arch in a.arch]
    sys.exit(0 if all(results) else 1)
