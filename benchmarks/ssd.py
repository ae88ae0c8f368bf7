"""fastdet SSD vs torchvision SSD, same run, same machine; prints ratios (fastdet / torchvision, higher is better).

- training images/s of `create_ssd(arch)` + `MultiBoxLoss` as `DetLearner` trains it (channels-last on the CPU:
  `ChannelsLastTraining`) vs torchvision's own model and loss, for `ssd300_vgg16` (300x300) and
  `ssdlite320_mobilenet_v3_large` (320x320), same class count; against torchvision as it comes (targets: SSDLite
  >= 1.5x, SSD300 >= 1.3x) and against torchvision put in channels-last by hand (target >= 1.0x);
- inference images/s including decoding and NMS, both with torchvision's decoding settings (target >= 1.0x);
- matching a batch of 32 (8732 default boxes): `match_anchors` vs torchvision's per-image `SSDMatcher` (target >= 5x).

Usage: python benchmarks/ssd.py [--bs 8] [--iters 3] [--threads N] [--arch NAME]
"""
import argparse, copy, os, time
import torch
from torchvision.ops import box_iou
from torchvision.models.detection import ssd300_vgg16, ssdlite320_mobilenet_v3_large
from torchvision.models.detection import _utils as det_utils
from fastai.vision.core import TensorBBox
from fastai.vision.data import bb_pad
from fastdet.boxes import bbox_to_pixels
from fastdet.anchors.ssd import match_anchors
from fastdet.models.ssd import create_ssd, fm_sizes
from fastdet.losses.ssd import MultiBoxLoss
from fastdet.families import SSD_FAMILY
from fastdet.prediction import cpu_channels_last_helps, channels_last_batch

def timeit(f, iters, warmup=1):
    for _ in range(warmup): f()
    t = time.perf_counter()
    for _ in range(iters): f()
    return (time.perf_counter() - t) / iters

def batch(bs, n_classes, size=300, seed=0):
    g = torch.Generator().manual_seed(seed)
    items = []
    for i in range(bs):
        n = int(torch.randint(1, 8, (1,), generator=g))
        c = torch.rand(n, 2, generator=g) * 1.2 - .6
        s = torch.rand(n, 2, generator=g) * .6 + .1
        items.append((torch.cat([c - s / 2, c + s / 2], 1).clamp(-1, 1), torch.randint(1, n_classes + 1, (n,), generator=g)))
    x = torch.randn(bs, 3, size, size, generator=g)
    return x, items

def pad(items):
    "Per-image `(boxes, labels)` as one batch padded by fastai's `bb_pad`."
    padded = bb_pad([(None, TensorBBox(b), l) for b, l in items])
    return torch.stack([p[1] for p in padded]), torch.stack([p[2] for p in padded])

ARCHS = {'ssd300_vgg16': (ssd300_vgg16, 300), 'ssdlite320_mobilenet_v3_large': (ssdlite320_mobilenet_v3_large, 320)}

def train_and_infer(name, bs, iters, n_classes):
    "Training step and inference (decoding and NMS included, with torchvision's own decoding settings) of `name`, both libraries."
    build, size = ARCHS[name]
    x, items = batch(bs, n_classes, size)
    boxes, labels = pad(items)
    tv_targets = [dict(boxes=bbox_to_pixels(b, (size, size)), labels=l) for b, l in items]
    tv_images = list((x - x.min()) / (x.max() - x.min()))  # torchvision normalises inside its transform
    ours = create_ssd(name, num_classes=n_classes)
    tv = build(num_classes=n_classes + 1, weights=None, weights_backbone=None)
    loss_func = MultiBoxLoss(**SSD_FAMILY.decode(name))
    tv_cl = copy.deepcopy(tv).to(memory_format=torch.channels_last)  # what a torchvision user who knows the trick does
    x_train = x
    if cpu_channels_last_helps(ours): ours.to(memory_format=torch.channels_last); x_train = channels_last_batch((x,))[0]  # as `ChannelsLastTraining`
    opt_o, opt_t, opt_c = (torch.optim.SGD(m.parameters(), lr=1e-4) for m in (ours, tv, tv_cl))

    def step_ours():
        ours.train(); opt_o.zero_grad()
        loss = loss_func(ours(x_train), boxes, labels); loss.backward(); opt_o.step()
    def step_tv(m, opt):
        m.train(); opt.zero_grad()
        d = m(tv_images, tv_targets); sum(d.values()).backward(); opt.step()
    t_o, t_t, t_c = timeit(step_ours, iters), timeit(lambda: step_tv(tv, opt_t), iters), timeit(lambda: step_tv(tv_cl, opt_c), iters)
    target = 1.5 if 'lite' in name else 1.3
    print(f"{name} train  bs {bs} {size}x{size}: fastdet {bs / t_o:.2f} img/s, torchvision {bs / t_t:.2f} img/s "
          f"(channels-last by hand {bs / t_c:.2f}), ratio {t_t / t_o:.2f}x (target >= {target}), {t_c / t_o:.2f}x against channels-last (target >= 1.0)")
    ours.to(memory_format=torch.contiguous_format)

    @torch.no_grad()
    def infer_ours(): ours.eval(); loss_func.activation(ours(x))
    @torch.no_grad()
    def infer_tv(): tv.eval(); tv(tv_images)
    t_o, t_t = timeit(infer_ours, iters), timeit(infer_tv, iters)
    print(f"{name} infer  bs {bs} {size}x{size} incl. NMS: fastdet {bs / t_o:.2f} img/s, torchvision {bs / t_t:.2f} img/s, "
          f"ratio {t_t / t_o:.2f}x (target >= 1.0)")
    return ours

def main(bs=8, iters=3, n_classes=20, archs=tuple(ARCHS)):
    for name in archs: ours = train_and_infer(name, bs, iters, n_classes)
    ours = create_ssd('ssd300_vgg16', num_classes=n_classes)
    anchors = ours.default_boxes(fm_sizes(ours, 300), (300, 300))
    assert anchors.shape[0] == 8732
    x32, items32 = batch(32, n_classes, size=8, seed=1)
    b32, l32 = pad(items32)
    anc_px = bbox_to_pixels(anchors, (300, 300))
    px32 = [bbox_to_pixels(b, (300, 300)) for b, _ in items32]
    matcher = det_utils.SSDMatcher(.5)
    def match_ours(): match_anchors(anchors, b32, l32)
    def match_tv(): [matcher(box_iou(b, anc_px)) for b in px32]
    n = max(iters * 10, 20)
    t_o, t_t = timeit(match_ours, n, 3), timeit(match_tv, n, 3)
    print(f"match  bs 32, 8732 default boxes: fastdet {t_o * 1e3:.2f} ms, torchvision per image {t_t * 1e3:.2f} ms, ratio {t_t / t_o:.2f}x (target >= 5)")

if __name__ == '__main__':
    p = argparse.ArgumentParser()
    p.add_argument('--bs', type=int, default=8)
    p.add_argument('--iters', type=int, default=3)
    p.add_argument('--threads', type=int, default=None)
    p.add_argument('--arch', action='append', choices=list(ARCHS), help='only these (default: both)')
    a = p.parse_args()
    torch.set_num_threads(a.threads or os.cpu_count())
    torch.manual_seed(0)
    main(a.bs, a.iters, archs=tuple(a.arch or ARCHS))
