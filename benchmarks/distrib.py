"""One epoch of SSDLite on the built-in dataset in 1 process vs N processes (fastai DDP, `fastdet.distrib.launch`), same run,
same machine; prints the times, their ratio and whether the COCO stats of both runs' evaluations are exact (each run
evaluates its own weights in 1 and in N processes).

On a CPU the N processes share the cores (gloo): the ratio shows the overhead of DDP, not a speed-up. On GPUs (one process
per GPU, nccl) it shows the speed-up.

Usage: python benchmarks/distrib.py [--procs 2] [--n 400] [--size 128] [--bs 16]
"""
import argparse, os, time
import torch
from fastai.callback.core import Callback, CancelValidException
from fastdet.distrib import launch

class _NoValidate(Callback):
    def before_validate(self): raise CancelValidException()

def _learner(n, size, bs):
    from fastdet.data.core import DetDataLoaders
    from fastdet.learner import ssd_learner
    torch.manual_seed(0)
    dls = DetDataLoaders.from_shapes(n=n, size=size, bs=bs, val_bs=1, num_workers=0)
    return ssd_learner(dls, 'ssdlite_mobilenetv2', weights=None)

def epoch(n:int, size:int, bs:int, ddp:bool):
    "Seconds of one training epoch (no validation), then the stats of the whole validation set and the weights."
    from fastdet.metrics import evaluate
    learn = _learner(n, size, bs)
    with learn.no_bar(), learn.no_logging():
        if ddp:
            with learn.distrib_ctx():
                torch.distributed.barrier()
                t = time.perf_counter(); learn.fit(1, 1e-3, cbs=_NoValidate()); secs = time.perf_counter() - t
        else:
            t = time.perf_counter(); learn.fit(1, 1e-3, cbs=_NoValidate()); secs = time.perf_counter() - t
    t = time.perf_counter(); stats = evaluate(learn); eval_secs = time.perf_counter() - t
    return dict(secs=secs, eval_secs=eval_secs, stats=stats, threads=torch.get_num_threads(),
                state={k: v.clone() for k, v in learn.model.state_dict().items()})

if __name__ == '__main__':
    p = argparse.ArgumentParser()
    p.add_argument('--procs', type=int, default=2); p.add_argument('--n', type=int, default=400)
    p.add_argument('--size', type=int, default=128); p.add_argument('--bs', type=int, default=16)
    p.add_argument('--threads', type=int, default=os.cpu_count(), help='threads of the 1-process run (each of N CPU processes: cores // N)')
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    one = epoch(a.n, a.size, a.bs, False)
    many = launch(epoch, a.procs, a.n, a.size, a.bs, True)
    # the N-process weights evaluated in one process: the metric gathered across processes must give the same numbers
    from fastdet.metrics import evaluate
    learn = _learner(a.n, a.size, a.bs); learn.model.load_state_dict(many['state'])
    torch.set_num_threads(many['threads'])  # a CPU convolution's last bits depend on the thread count (and the batch): same as theirs
    check = evaluate(learn)
    dev = f"{a.procs} GPUs (nccl)" if torch.cuda.is_available() else f"{a.procs} CPU processes (gloo, {many['threads']} thread(s) each)"
    print(f"one epoch, {int(a.n * .8)} training images of {a.size} px, bs {a.bs} per process, {os.cpu_count()} cores:")
    print(f"  1 process ({one['threads']} threads): {one['secs']:.1f} s   {dev}: {many['secs']:.1f} s   time ratio N/1: {many['secs'] / one['secs']:.2f}")
    print(f"  evaluate ({a.n - int(a.n * .8)} images): 1 process {one['eval_secs']:.1f} s, {a.procs} processes {many['eval_secs']:.1f} s")
    print(f"  stats of the {a.procs}-process model, evaluated in {a.procs} processes == in 1 process: {many['stats'] == check}  (AP50 {check['AP50']:.4f})")
