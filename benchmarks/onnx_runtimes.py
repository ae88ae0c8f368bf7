"""An exported detector on the CPU: onnxruntime against OpenVINO, the float file and the INT8 one (`fastdet export --int8`);
milliseconds per image and the COCO statistics on the same validation images, each against onnxruntime's float run
with the paired bootstrap interval of the difference (1000 resamples of the images).

OpenVINO runs in float32 (`precision='f32'`) and in its own default precision (bf16 on CPUs that have it, which is
what `fastdet predict MODEL.onnx --runtime openvino` uses). onnxruntime and OpenVINO run in turn, best of `--repeat`.

    python benchmarks/onnx_runtimes.py      # the main job's detector (trained once and cached), its 240 validation images

A benchmark, not a test: it prints, it asserts nothing.
"""
import argparse, contextlib, io, tempfile, time, warnings
from pathlib import Path
import numpy as np
from fastai.torch_core import to_cpu
from fastdet.commands import shapes_detector_file, load_model, run_data
from fastdet.deploy import load_onnx
from fastdet.prediction import images_dl
from fastdet.metrics import DetResults, compare


def ms_per_image(det, x, repeat):
    "The best of `repeat` timed runs of batch `x`, per image, after a warm-up."
    det(x)
    times = []
    for _ in range(repeat):
        t = time.perf_counter(); det(x); times.append(time.perf_counter() - t)
    return 1000 * min(times) / len(x)


def results(det, recs):
    with contextlib.redirect_stdout(io.StringIO()): preds = det.predict_batch(recs, bs=16, num_workers=0, score_thresh=0.)
    return DetResults.from_records(recs, preds, det.vocab)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--repeat', type=int, default=7)
    ap.add_argument('--bs', type=int, default=16, help='images per timed batch')
    a = ap.parse_args()
    warnings.filterwarnings('ignore')
    model = shapes_detector_file()
    learn, dls = load_model(model, 'cpu'), run_data(model)
    valid = list(dls.valid_ds.items)
    with tempfile.TemporaryDirectory() as d:
        files = dict(float=learn.export_onnx(Path(d)/'float.onnx'),
                     int8=learn.export_onnx(Path(d)/'int8.onnx', int8=list(dls.train_ds.items)[:100]))
        runs = [('onnxruntime', 'float', {}), ('openvino f32', 'float', dict(runtime='openvino', precision='f32')),
                ('openvino default', 'float', dict(runtime='openvino')), ('onnxruntime', 'int8', {}),
                ('openvino default', 'int8', dict(runtime='openvino'))]
        x = None
        base = None
        print(f"{learn.recipe.get('arch') if learn.recipe else 'detector'} at {learn.input_spec.hw}, {len(valid)} validation images; batches of {a.bs}")
        print(f"{'runtime':<18} {'file':<6} {'ms/image':>8} {'x ort float':>11} {'AP':>6} {'AP - ort float':>15} {'95% interval':>18}")
        for name, kind, kw in runs:
            try: det = load_onnx(files[kind], **kw)
            except ValueError as e: print(f"{name:<18} {kind:<6} can't run it: {e}"); continue
            if x is None: x = to_cpu(next(iter(images_dl(det.dls, valid[:a.bs], a.bs, 0)))[0]).numpy()
            ms = ms_per_image(det, x, a.repeat)
            res = results(det, valid)
            if base is None: base, ms0 = res, ms
            st = compare(base, res)[0].set_index('stat').loc['AP']
            print(f"{name:<18} {kind:<6} {ms:8.2f} {ms0 / ms:10.2f}x {st.B:6.3f} {st.delta:+15.3f}   [{st.lo:+.3f}, {st.hi:+.3f}]")


if __name__ == '__main__': main()
