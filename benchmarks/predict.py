"""Batched prediction vs the per-image loop vs torchvision, and onnxruntime vs PyTorch, on COCO128's images.

    FASTDET_TEST_DATA=/path/to/shared/data python benchmarks/predict.py [--n 128] [--bs 32] [--workers 2]

Measures, in one run on the same images (at each model's size):
- images/s of `predict_files` (one DataLoader, batches, worker processes) vs the per-image `learn.predict` loop it
  replaces (on the first `--loop-n` images), for fastdet's `ssdlite320_mobilenet_v3_large` (random weights: speed does not depend on them);
- torchvision's own `ssdlite320_mobilenet_v3_large(weights=None, weights_backbone=None)` in eval mode with its own
  transform, fed the same decoded images in batches of the same size;
- onnxruntime (CPU) vs PyTorch eager on the exported SSDLite (the same `[B, 3, 320, 320]` batches, decoding and NMS
  included in both);
- the network alone (channels-last on the CPU, as `predict` runs it) on the same batches and one image a pass: the most
  batching can give on this machine (on a 2-core CPU the network's own cost dominates the per-image loop);
- peak RSS of the batched run (`predict_files`, bs 32) in a child process.
Random weights give every anchor a score near 1/81 (1/91 for torchvision's), above the torchvision layouts' score
threshold of 0.001: every model would then spend its time in NMS over 24,000 candidates per image, which no trained
detector does. Both fastdet and torchvision therefore decode here with a score threshold of `--score-thresh` (0.02),
which no random score passes: the numbers are the network, the pre- and the post-processing.
Timing is wall clock; on a shared machine the numbers are contended: compare the ratios of the same run.
"""
import argparse, json, os, resource, subprocess, sys, tempfile, time
from pathlib import Path
import numpy as np
import torch

def _data()->Path:
    d = Path(os.environ.get('FASTDET_TEST_DATA', '')) / 'coco128'
    if not d.is_dir(): sys.exit("set FASTDET_TEST_DATA to the folder holding coco128/")
    return d

def _learner(size=320, score_thresh=.02):
    from fastdet.data.core import DetDataLoaders
    from fastdet.learner import ssd_learner
    c = _data()
    dls = DetDataLoaders.from_coco(c/'annotations'/'instances_train2017.json', c/'images'/'train2017', size=size, bs=16,
                                   num_workers=0, check_images=False)
    learn = ssd_learner(dls, 'ssdlite320_mobilenet_v3_large', weights=None)
    learn.loss_func.score_thresh = score_thresh
    return learn

def _files(n): return sorted((_data()/'images'/'train2017').glob('*.jpg'))[:n]

def _rate(n, f, repeat=1):
    "Images per second of `f()` (best of `repeat`)."
    best = float('inf')
    for _ in range(repeat):
        t = time.perf_counter(); f(); best = min(best, time.perf_counter() - t)
    return n / best

def child_peak_rss(n, bs, workers, score_thresh):
    "Run only the batched `predict_files` in this process, print peak RSS (MiB; workers included)."
    from fastdet.deploy import predict_files
    learn = _learner(score_thresh=score_thresh)
    with tempfile.TemporaryDirectory() as d, learn.no_bar():
        predict_files(learn, _files(n), d, bs=bs, num_workers=workers)
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    kids = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    print(json.dumps(dict(self_mib=own, largest_worker_mib=kids)))

def main():
    p = argparse.ArgumentParser()
    p.add_argument('--n', type=int, default=128, help='images of COCO128')
    p.add_argument('--bs', type=int, default=32)
    p.add_argument('--loop-n', type=int, default=32, help='images of the (slow) per-image loop, a rate per image like the others')
    p.add_argument('--workers', type=int, default=2)
    p.add_argument('--threads', type=int, default=0, help='torch threads (0: leave as is)')
    p.add_argument('--score-thresh', type=float, default=.02, help='decoding score threshold of both models')
    p.add_argument('--peak-rss-child', action='store_true', help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.threads: torch.set_num_threads(a.threads)
    if a.peak_rss_child: return child_peak_rss(a.n, a.bs, a.workers, a.score_thresh)
    import warnings; warnings.filterwarnings('ignore')
    from fastdet.data.records import open_image
    from fastdet.deploy import predict_files, load_onnx
    import torchvision
    from torchvision.transforms.functional import pil_to_tensor
    files = _files(a.n)
    print(f"{len(files)} COCO128 images, bs {a.bs}, {a.workers} workers, torch {torch.__version__} ({torch.get_num_threads()} threads), "
          f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores (a shared machine: numbers are contended)")
    learn = _learner(score_thresh=a.score_thresh)
    res = {}
    with tempfile.TemporaryDirectory() as d, learn.no_bar():
        d = Path(d)
        predict_files(learn, files[:a.bs], d/'warm', bs=a.bs, num_workers=0)  # warm-up
        res['predict_files (batched)'] = _rate(len(files), lambda: predict_files(learn, files, d/'b', bs=a.bs, num_workers=a.workers))
        loop = files[:a.loop_n]
        res['learn.predict loop'] = _rate(len(loop), lambda: [learn.predict(f) for f in loop])
    # torchvision's SSDLite, its own transform (resize to 320, normalise) and post-processing, the same batches
    tv = torchvision.models.detection.ssdlite320_mobilenet_v3_large(weights=None, weights_backbone=None).eval()
    tv.score_thresh = a.score_thresh
    def tv_run():
        for i in range(0, len(files), a.bs):
            imgs = [pil_to_tensor(open_image(f)).float() / 255 for f in files[i:i + a.bs]]
            with torch.no_grad(): tv(imgs)
    res['torchvision ssdlite (batched)'] = _rate(len(files), tv_run)
    # onnxruntime vs PyTorch eager, the exported module on the same [B, 3, 320, 320] batches in [0, 1]
    x = torch.stack([pil_to_tensor(open_image(f).resize((320, 320))) for f in files]).float() / 255
    batches = [x[i:i + a.bs] for i in range(0, len(x), a.bs)]
    # the most batching can give on this machine: the network alone (as predict runs it: channels-last on the CPU), a batch
    # of --bs a pass vs one image a pass; no reading, resizing or decoding
    from fastai.data.transforms import Normalize
    nrm = [t for t in learn.dls.after_batch.fs if isinstance(t, Normalize)][0]
    fmt = dict(memory_format=torch.channels_last) if x.device.type == 'cpu' else {}
    xn = [((b - nrm.mean) / nrm.std).contiguous(**fmt) for b in batches]
    net = learn.model.eval().to(**fmt)
    with torch.no_grad():
        net(xn[0])
        res['network alone, batched'] = _rate(len(x), lambda: [net(b) for b in xn])
        res['network alone, 1 image a pass'] = _rate(a.loop_n, lambda: [net(b[None]) for b in torch.cat(xn)[:a.loop_n]])
    net.to(memory_format=torch.contiguous_format)
    m = learn.export_module()
    with tempfile.TemporaryDirectory() as d:
        det = load_onnx(learn.export_onnx(Path(d)/'ssdlite.onnx'))
        det(batches[0].numpy())
        def eager():
            with torch.no_grad(): [m(b) for b in batches]
        eager()
        res['PyTorch eager (exported module)'] = _rate(len(x), eager)
        res['onnxruntime CPU'] = _rate(len(x), lambda: [det(b.numpy()) for b in batches], 2)
    for k, v in res.items(): print(f"{k:34s} {v:8.1f} images/s")
    r = lambda a_, b_: res[a_] / res[b_]
    print(f"batched / per-image loop:      {r('predict_files (batched)', 'learn.predict loop'):.2f}x   (target >= 3)")
    print(f"  the network alone, batched / per-image loop: {r('network alone, batched', 'learn.predict loop'):.2f}x (the most batching "
          f"could give here); batched / 1 image a pass: {r('network alone, batched', 'network alone, 1 image a pass'):.2f}x")
    print(f"batched / torchvision batched: {r('predict_files (batched)', 'torchvision ssdlite (batched)'):.2f}x   (target >= 1.0)")
    print(f"onnxruntime / PyTorch eager:   {r('onnxruntime CPU', 'PyTorch eager (exported module)'):.2f}x   (target >= 1.5)")
    out = subprocess.run([sys.executable, __file__, '--peak-rss-child', '--n', str(a.n), '--bs', '32', '--workers', str(a.workers), '--score-thresh', str(a.score_thresh)],
                         capture_output=True, text=True, env=os.environ)
    try:
        rss = json.loads(out.stdout.strip().splitlines()[-1])
        print(f"peak RSS of predict_files at bs 32: {rss['self_mib']:.0f} MiB (main process), largest worker {rss['largest_worker_mib']:.0f} MiB"
              f"   (target < 4096 MiB)")
    except Exception: print("peak RSS run failed:", out.stderr[-2000:])

if __name__ == '__main__': main()
