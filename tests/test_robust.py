"""Issue 2 point 5, item by item, with real files made in each test: a correct result, or an error naming the file
raised when the DataLoaders are built."""
import json, warnings
from pathlib import Path
import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image
from fastdet.boxes import unpad, bbox_to_pixels
from fastdet.data.records import DetRecord, check_records, open_image, image_hw
from fastdet.data.core import DetDataLoaders

KW = dict(size=32, bs=1, num_workers=0, valid_pct=0.5)

def _rgb(w=40, h=30, colour=(200, 30, 30)): return Image.new('RGB', (w, h), colour)

def _voc_xml(fn, img_name, objects, w=40, h=30):
    "objects: (name, xmin, ymin, xmax, ymax[, difficult])"
    objs = ''.join(f"<object><name>{o[0]}</name><difficult>{o[5] if len(o) > 5 else 0}</difficult><bndbox><xmin>{o[1]}</xmin>"
                   f"<ymin>{o[2]}</ymin><xmax>{o[3]}</xmax><ymax>{o[4]}</ymax></bndbox></object>" for o in objects)
    fn.write_text(f"<annotation><filename>{img_name}</filename><size><width>{w}</width><height>{h}</height><depth>3</depth>"
                  f"</size>{objs}</annotation>")

def _voc(tmp_path, images, objects=None):
    "A VOC folder: `images` name -> PIL image (or bytes); each image gets one 'cat' box unless `objects` says otherwise."
    (tmp_path/'images').mkdir(); (tmp_path/'annotations').mkdir()
    for name, im in images.items():
        if isinstance(im, bytes): (tmp_path/'images'/name).write_bytes(im)
        elif im is not None: im.save(tmp_path/'images'/name, format=getattr(im, '_fmt', None) or ('PNG' if name.endswith('.png') else 'JPEG'))
        objs = (objects or {}).get(name, [('cat', 2, 3, 20, 25)])
        _voc_xml(tmp_path/'annotations'/(name.rsplit('.', 1)[0] + '.xml'), name, objs)
    return tmp_path

def _build_fails(fn, name, **kw):
    with pytest.raises(Exception) as e: fn(**kw)
    assert name in str(e.value), f"{name!r} not named in: {e.value}"
    return str(e.value)

# --- images --------------------------------------------------------------------------------------------------

def test_png_named_jpg(tmp_path):
    im = _rgb(colour=(10, 200, 10)); im._fmt = 'PNG'
    d = _voc(tmp_path, {'lying.jpg': im, 'ok.jpg': _rgb()})
    assert Image.open(d/'images/lying.jpg').format == 'PNG'
    assert np.array(open_image(d/'images/lying.jpg'))[5, 5].tolist() == [10, 200, 10]
    dls = DetDataLoaders.from_voc(d, **KW)
    x, b, l = dls.one_batch()
    assert x.shape == (1, 3, 32, 32)

@pytest.mark.parametrize('mode', ['RGBA', 'LA', 'P', 'L', '1', 'CMYK', 'I;16'])
def test_image_modes_become_rgb(tmp_path, mode):
    fn = tmp_path/f'img_{mode.replace(";", "")}.png' if mode != 'CMYK' else tmp_path/'img_cmyk.jpg'
    if mode == 'RGBA':
        a = np.zeros((30, 40, 4), np.uint8); a[..., 0] = 255; a[..., 3] = 255; a[:, :20, 3] = 0  # left half transparent
        Image.fromarray(a, 'RGBA').save(fn)
        out = np.array(open_image(fn))
        assert out[0, 30].tolist() == [255, 0, 0] and out[0, 5].tolist() == [255, 255, 255]  # composited on white
    elif mode == 'LA':
        Image.new('LA', (40, 30), (100, 255)).save(fn)
        assert np.array(open_image(fn))[0, 0].tolist() == [100, 100, 100]
    elif mode == 'P':
        im = Image.new('P', (40, 30)); im.putpalette([0, 0, 0, 12, 34, 56] + [0] * 762); im.paste(1, (0, 0, 40, 30)); im.save(fn)
        assert Image.open(fn).mode == 'P'
        assert np.array(open_image(fn))[3, 3].tolist() == [12, 34, 56]
    elif mode == 'L':
        Image.new('L', (40, 30), 77).save(fn)
        assert np.array(open_image(fn))[0, 0].tolist() == [77, 77, 77]
    elif mode == '1':
        Image.new('1', (40, 30), 1).save(fn)
        assert np.array(open_image(fn))[0, 0].tolist() == [255, 255, 255]
    elif mode == 'CMYK':
        Image.new('CMYK', (40, 30), (0, 255, 255, 0)).save(fn)
        px = np.array(open_image(fn))[0, 0]
        assert px[0] > 200 and px[1] < 60 and px[2] < 60  # red
    else:  # 16-bit grayscale: values scaled by 255/65535, not clipped at 255
        a = np.zeros((30, 40), np.uint16); a[:, :10] = 65535; a[:, 10:20] = 32768; a[:, 20:30] = 257 * 10
        Image.fromarray(a).save(fn)
        assert Image.open(fn).mode == 'I;16'
        out = np.array(open_image(fn))
        assert out[0, [0, 15, 25, 35], 0].tolist() == [255, 128, 10, 0]
        assert (out[..., 0] == out[..., 2]).all()
    out = open_image(fn)
    assert out.mode == 'RGB' and out.size == (40, 30)
    dls = DetDataLoaders.from_records([DetRecord(fn, [[2, 3, 20, 25]], ['cat']), DetRecord(fn, [[1, 1, 9, 9]], ['dog'])], **KW)
    x, b, l = dls.one_batch()
    assert x.shape == (1, 3, 32, 32)

def test_16bit_rgb_png_scaled(tmp_path):
    "16-bit RGB PNG: Pillow itself reduces it to 8 bits; check the scaling is by 256, not a clip."
    fn = tmp_path/'rgb16.png'
    import zlib, struct
    h, w = 2, 3
    raw = b''.join(b'\x00' + np.array([[[65535, 32768, 0]] * w], dtype='>u2').tobytes() for _ in range(h))
    def chunk(t, d): return struct.pack('>I', len(d)) + t + d + struct.pack('>I', zlib.crc32(t + d) & 0xffffffff)
    fn.write_bytes(b'\x89PNG\r\n\x1a\n' + chunk(b'IHDR', struct.pack('>IIBBBBB', w, h, 16, 2, 0, 0, 0))
                   + chunk(b'IDAT', zlib.compress(raw)) + chunk(b'IEND', b''))
    assert np.array(open_image(fn))[0, 0].tolist() == [255, 128, 0]

def test_exif_rotated_jpeg(tmp_path):
    "Stored 60 wide x 40 high with EXIF orientation 6 (rotate 90 clockwise): displayed 40 wide x 60 high."
    disp = np.zeros((60, 40, 3), np.uint8); disp[30:50, 5:25] = (255, 0, 0)  # red square where the box is, as displayed
    stored = Image.fromarray(disp).transpose(Image.Transpose.ROTATE_90)  # what the camera wrote
    assert stored.size == (60, 40)
    exif = Image.Exif(); exif[0x0112] = 6
    fn = tmp_path/'rotated.jpg'; stored.save(fn, exif=exif, quality=95)
    assert Image.open(fn).size == (60, 40)
    assert image_hw(fn) == (60, 40)  # (h, w) as displayed
    im = np.array(open_image(fn))
    assert im.shape == (60, 40, 3) and im[40, 15, 0] > 200 and im[40, 15, 1] < 60 and im[10, 30, 0] < 60
    box = [5, 30, 25, 50]  # displayed pixels: partly beyond the stored height 40, so it would be clipped if we got it wrong
    recs, rep = check_records([DetRecord(fn, [box], ['red'])])
    assert recs[0].hw == (60, 40) and rep.clipped == 0 and recs[0].boxes.tolist() == [box]
    dls = DetDataLoaders.from_records([DetRecord(fn, [box], ['red']), DetRecord(fn, [box], ['red'])], size=(60, 40), bs=1,
                                      num_workers=0, valid_pct=0.5, batch_tfms=[])
    x, b, l = dls.train.one_batch()
    px = bbox_to_pixels(b[0], (60, 40))[0]
    assert torch.allclose(px, torch.tensor(box, dtype=torch.float32), atol=1e-4)
    x1, y1, x2, y2 = [int(v) for v in px]
    inside, outside = x[0, :, y1 + 2:y2 - 2, x1 + 2:x2 - 2], x[0, :, :y1 - 2]
    assert inside[0].mean() > .8 and inside[1].mean() < .25 and outside[0].mean() < .2  # the box covers the red square

def test_missing_image(tmp_path):
    d = _voc(tmp_path, {'there.jpg': _rgb(), 'gone.jpg': None})
    msg = _build_fails(lambda: DetDataLoaders.from_voc(d, **KW), 'gone.jpg')
    assert 'not found' in msg

def test_truncated_jpeg(tmp_path):
    a = (np.random.default_rng(0).random((120, 160, 3)) * 255).astype(np.uint8)
    import io
    buf = io.BytesIO(); Image.fromarray(a).save(buf, 'JPEG'); data = buf.getvalue()
    d = _voc(tmp_path, {'ok.jpg': _rgb(160, 120), 'cut.jpg': data[:len(data) // 2]})
    assert image_hw(d/'images/cut.jpg') == (120, 160)  # the header is fine: only decoding finds it
    msg = _build_fails(lambda: DetDataLoaders.from_voc(d, **KW), 'cut.jpg')
    assert 'truncated' in msg

def test_not_an_image(tmp_path):
    d = _voc(tmp_path, {'ok.jpg': _rgb(), 'text.jpg': b'this is not an image'})
    msg = _build_fails(lambda: DetDataLoaders.from_voc(d, **KW), 'text.jpg')
    assert 'cannot read image' in msg

# --- annotations -------------------------------------------------------------------------------------------------

@pytest.mark.parametrize('w,h', [(0, 0), (400, 300)])
def test_voc_size_zero_or_wrong(tmp_path, w, h):
    "The xml's <size> is ignored: the image decides; a box valid in the real image is kept as is."
    d = tmp_path
    (d/'images').mkdir(); (d/'annotations').mkdir()
    _rgb(40, 30).save(d/'images/a.jpg'); _rgb(40, 30).save(d/'images/b.jpg')
    _voc_xml(d/'annotations/a.xml', 'a.jpg', [('cat', 2, 3, 38, 28)], w=w, h=h)
    _voc_xml(d/'annotations/b.xml', 'b.jpg', [('cat', 1, 1, 10, 10)])
    dls = DetDataLoaders.from_voc(d, **KW)
    r = [r for r in [*dls.train.items, *dls.valid.items] if r.file.name == 'a.jpg'][0]
    assert r.hw == (30, 40) and r.boxes.tolist() == [[2, 3, 38, 28]]
    assert dls.report.clipped == 0 and not dls.report.dropped

def test_boxes_partly_outside_are_clipped_and_counted(tmp_path):
    d = _voc(tmp_path, {'a.jpg': _rgb(), 'b.jpg': _rgb()},
             objects={'a.jpg': [('cat', -5, 3, 20, 25), ('cat', 10, 10, 55, 45)], 'b.jpg': [('cat', 1, 1, 9, 9)]})
    dls = DetDataLoaders.from_voc(d, **KW)
    assert dls.report.clipped == 2 and dls.report.boxes == 3 and not dls.report.dropped
    r = [r for r in [*dls.train.items, *dls.valid.items] if r.file.name == 'a.jpg'][0]
    assert r.boxes.tolist() == [[0, 3, 20, 25], [10, 10, 40, 30]]
    assert 'clipped' in str(dls.report)

def test_degenerate_boxes_dropped_counted_warned(tmp_path):
    d = _voc(tmp_path, {'a.jpg': _rgb(), 'b.jpg': _rgb()},
             objects={'a.jpg': [('cat', 5, 5, 5, 20), ('cat', 10, 10, 4, 20), ('cat', 50, 5, 60, 20), ('dog', 1, 1, 30, 20)],
                      'b.jpg': [('cat', 1, 1, 9, 9)]})
    with pytest.warns(UserWarning, match='3 boxes dropped'):
        dls = DetDataLoaders.from_voc(d, **KW)
    assert sum(dls.report.dropped.values()) == 3 and dls.report.boxes == 2
    assert 'a.jpg' in str(dls.report)
    r = [r for r in [*dls.train.items, *dls.valid.items] if r.file.name == 'a.jpg'][0]
    assert r.labels == ['dog'] and len(r.difficult) == 1

def test_image_left_without_boxes_is_a_negative(tmp_path):
    d = _voc(tmp_path, {'a.jpg': _rgb(), 'b.jpg': _rgb()}, objects={'a.jpg': [('cat', 5, 5, 5, 20)], 'b.jpg': [('cat', 1, 1, 9, 9)]})
    with pytest.warns(UserWarning):
        dls = DetDataLoaders.from_voc(d, **KW)
    assert dls.report.negatives == 1 and dls.report.images == 2

def test_negatives_kept_through_batching(tmp_path):
    "Images with no objects from every reader: kept, batched with all-padding rows, unpadded to nothing."
    d = _voc(tmp_path, {f'{i}.jpg': _rgb() for i in range(5)},
             objects={'0.jpg': [], '1.jpg': [('cat', 2, 3, 20, 25)], '2.jpg': [], '3.jpg': [('cat', 1, 1, 9, 9), ('dog', 3, 3, 30, 20)]})
    dls = DetDataLoaders.from_voc(d, valid_idx=[0, 1, 2, 3], size=32, bs=4, num_workers=0)
    assert dls.report.negatives == 2 and len(dls.valid_ds) == 4 and len(dls.train_ds) == 1
    x, b, l = dls.valid.one_batch()
    assert b.shape == (4, 2, 4) and l[0].tolist() == [0, 0] and l[2].tolist() == [0, 0]
    assert [len(bb) for bb, ll in unpad(b, l)] == [0, 1, 0, 2]
    # a split with no training image is a clear error, not fastai's IndexError
    with pytest.raises(ValueError, match='no training images'): DetDataLoaders.from_voc(d, valid_idx=[0, 1, 2, 3, 4], **KW)
    # a batch of negatives only (G = 0)
    dls = DetDataLoaders.from_voc(d, valid_idx=[0, 2], vocab=['cat', 'dog'], size=32, bs=2, num_workers=0)
    x, b, l = dls.valid.one_batch()
    assert b.shape == (2, 0, 4) and l.shape == (2, 0) and l.dtype == torch.int64
    # YOLO: image without label file; COCO: image without annotation; CSV: row with empty box
    (tmp_path/'y/images').mkdir(parents=True); (tmp_path/'y/labels').mkdir()
    for i in range(4): _rgb().save(tmp_path/f'y/images/{i}.jpg')
    (tmp_path/'y/labels/0.txt').write_text('0 0.5 0.5 0.5 0.5\n'); (tmp_path/'y/labels/1.txt').write_text('')
    (tmp_path/'y/labels/3.txt').write_text('0 0.5 0.5 0.5 0.5\n')
    (tmp_path/'y/data.yaml').write_text('path: .\ntrain: images\nnames: [cat]\n')
    dls = DetDataLoaders.from_yolo(tmp_path/'y/data.yaml', valid_idx=[0, 1, 2], size=32, bs=3, num_workers=0)
    assert dls.report.negatives == 2 and [len(bb) for bb, ll in unpad(*dls.valid.one_batch()[1:])] == [1, 0, 0]
    coco = dict(images=[dict(id=i, file_name=f'{i}.jpg', height=30, width=40) for i in range(4)],
                categories=[dict(id=1, name='cat')], annotations=[dict(id=1, image_id=1, category_id=1, bbox=[1, 2, 10, 10]),
                                                                  dict(id=2, image_id=3, category_id=1, bbox=[1, 2, 10, 10])])
    (tmp_path/'y/coco.json').write_text(json.dumps(coco))
    dls = DetDataLoaders.from_coco(tmp_path/'y/coco.json', tmp_path/'y/images', valid_idx=[0, 1, 2], size=32, bs=3, num_workers=0)
    assert dls.report.negatives == 2 and [len(bb) for bb, ll in unpad(*dls.valid.one_batch()[1:])] == [0, 1, 0]
    (tmp_path/'y/boxes.csv').write_text('filename,class,xmin,ymin,xmax,ymax\n0.jpg,,,,,\n1.jpg,cat,1,2,11,12\n2.jpg,,,,,\n3.jpg,cat,1,1,5,5\n')
    dls = DetDataLoaders.from_csv(tmp_path/'y/boxes.csv', tmp_path/'y/images', valid_idx=[0, 1, 2], size=32, bs=3, num_workers=0)
    assert dls.report.negatives == 2 and [len(bb) for bb, ll in unpad(*dls.valid.one_batch()[1:])] == [0, 1, 0]

def test_class_not_in_vocab(tmp_path):
    d = _voc(tmp_path, {'a.jpg': _rgb(), 'zebra.jpg': _rgb()}, objects={'zebra.jpg': [('zebra', 1, 1, 9, 9)]})
    msg = _build_fails(lambda: DetDataLoaders.from_voc(d, vocab=['cat', 'dog'], **KW), 'zebra.jpg')
    assert "'zebra'" in msg and 'vocab' in msg

def test_malformed_xml(tmp_path):
    d = _voc(tmp_path, {'a.jpg': _rgb(), 'b.jpg': _rgb()})
    (d/'annotations/b.xml').write_text('<annotation><object><name>cat</name>')
    assert 'malformed xml' in _build_fails(lambda: DetDataLoaders.from_voc(d, **KW), 'b.xml')
    _voc_xml(d/'annotations/b.xml', 'b.jpg', [('cat', 1, 'oops', 9, 9)])
    assert '<ymin>' in _build_fails(lambda: DetDataLoaders.from_voc(d, **KW), 'b.xml')
    (d/'annotations/b.xml').write_text('<annotation><filename>b.jpg</filename><object><name>cat</name></object></annotation>')
    assert 'bndbox' in _build_fails(lambda: DetDataLoaders.from_voc(d, **KW), 'b.xml')

def _coco_dir(tmp_path):
    (tmp_path/'images').mkdir()
    for n in ('a.jpg', 'b.jpg'): _rgb().save(tmp_path/'images'/n)
    return dict(images=[dict(id=1, file_name='a.jpg', height=30, width=40), dict(id=2, file_name='b.jpg', height=30, width=40)],
                categories=[dict(id=1, name='cat'), dict(id=2, name='dog')],
                annotations=[dict(id=1, image_id=1, category_id=1, bbox=[1, 2, 10, 10], iscrowd=0)])

def test_malformed_json(tmp_path):
    c = _coco_dir(tmp_path)
    fn = tmp_path/'bad.json'
    fn.write_text(json.dumps(c)[:-20])
    assert 'malformed json' in _build_fails(lambda: DetDataLoaders.from_coco(fn, **KW), 'bad.json')
    for broken, what in [(dict(c, annotations=[dict(id=7, image_id=1, category_id=1, bbox=[1, 2, 'x', 4])]), 'annotation 7'),
                         (dict(c, annotations=[dict(id=8, image_id=99, category_id=1, bbox=[1, 2, 3, 4])]), 'image_id 99'),
                         (dict(c, annotations=[dict(id=9, image_id=1, category_id=5, bbox=[1, 2, 3, 4])]), 'category_id 5'),
                         (dict(c, categories=[*c['categories'], dict(id=3, name='cat')]), "duplicate category names ['cat']"),
                         ({k: v for k, v in c.items() if k != 'images'}, "'images'"),
                         (dict(c, images=[], annotations=[]), 'no images'), ([1, 2], "'images'")]:
        fn.write_text(json.dumps(broken))
        assert what in _build_fails(lambda: DetDataLoaders.from_coco(fn, **KW), 'bad.json')

def test_coco_crowd_and_degenerate(tmp_path):
    c = _coco_dir(tmp_path)
    c['annotations'] += [dict(id=2, image_id=1, category_id=2, bbox=[0, 0, 40, 30], iscrowd=1),
                         dict(id=3, image_id=2, category_id=2, bbox=[5, 5, 0, 10], iscrowd=0)]
    (tmp_path/'ann.json').write_text(json.dumps(c))
    with pytest.warns(UserWarning, match='1 boxes dropped'):
        dls = DetDataLoaders.from_coco(tmp_path/'ann.json', **KW)
    recs = sorted([*dls.train.items, *dls.valid.items], key=lambda r: r.image_id)
    assert recs[0].labels == ['cat'] and recs[0].crowd.tolist() == [[0, 0, 40, 30]] and recs[1].is_negative

def test_malformed_csv(tmp_path):
    (tmp_path/'images').mkdir()
    for n in ('a.jpg', 'b.jpg'): _rgb().save(tmp_path/'images'/n)
    fn = tmp_path/'bad.csv'
    fn.write_text('filename,class,xmin,ymin,xmax,ymax\na.jpg,cat,1,2,10,12\nb.jpg,cat,1,2,"10,12\n')
    assert 'malformed csv' in _build_fails(lambda: DetDataLoaders.from_csv(fn, **KW), 'bad.csv')
    fn.write_text('filename,class,xmin,ymin,xmax,ymax\na.jpg,cat,1,2,10,12\nb.jpg,cat,1,two,10,12\n')
    assert 'bad.csv:3' in _build_fails(lambda: DetDataLoaders.from_csv(fn, **KW), 'bad.csv')
    fn.write_text('file,label,x1,y1,x2,y2\na.jpg,cat,1,2,10,12\n')
    assert 'missing columns' in _build_fails(lambda: DetDataLoaders.from_csv(fn, tmp_path/'images', **KW), 'bad.csv')
    fn.write_bytes(b'\xff\xfe\x00\x81\x00garbage')
    _build_fails(lambda: DetDataLoaders.from_csv(fn, tmp_path/'images', **KW), 'bad.csv')
    fn.write_text('filename,class,xmin,ymin,xmax,ymax\n')
    assert 'no rows' in _build_fails(lambda: DetDataLoaders.from_csv(fn, tmp_path/'images', **KW), 'bad.csv')
    fn.write_text('')
    assert 'malformed csv' in _build_fails(lambda: DetDataLoaders.from_csv(fn, tmp_path/'images', **KW), 'bad.csv')
    fn.write_text('image_id,bbox\na,"[1, 2, 3]"\n')
    assert 'bad.csv:2' in _build_fails(lambda: DetDataLoaders.from_csv(fn, tmp_path/'images', file_col='image_id', label='x', **KW), 'bad.csv')

def test_malformed_yolo(tmp_path):
    (tmp_path/'images').mkdir(); (tmp_path/'labels').mkdir()
    for n in ('a', 'b'): _rgb().save(tmp_path/f'images/{n}.jpg')
    (tmp_path/'data.yaml').write_text('path: .\ntrain: images\nnames: {0: cat, 1: dog}\n')
    (tmp_path/'labels/a.txt').write_text('0 0.5 0.5 0.2 0.2\n1 0.5 0.5 0.2\n')
    assert 'a.txt:2' in _build_fails(lambda: DetDataLoaders.from_yolo(tmp_path, **KW), 'a.txt')
    (tmp_path/'labels/a.txt').write_text('7 0.5 0.5 0.2 0.2\n')
    assert 'class 7' in _build_fails(lambda: DetDataLoaders.from_yolo(tmp_path, **KW), 'a.txt:1')
    (tmp_path/'labels/a.txt').write_text('0 0.5 0.5 0.2 0.2\n')
    (tmp_path/'data.yaml').write_text('path: .\ntrain: [images\nnames: {0: cat\n')
    assert 'malformed yaml' in _build_fails(lambda: DetDataLoaders.from_yolo(tmp_path, **KW), 'data.yaml')
    (tmp_path/'data.yaml').write_text('path: .\ntrain: images\nnames: [cat, dog]\n')
    dls = DetDataLoaders.from_yolo(tmp_path, **KW)
    assert dls.vocab == ['#na#', 'cat', 'dog'] and dls.report.boxes == 1 and dls.report.negatives == 1
    (tmp_path/'labels/gone.txt').write_text('0 0.5 0.5 0.2 0.2\n')  # a label file whose image is missing: reported
    with pytest.warns(UserWarning, match='1 label files have no image'): DetDataLoaders.from_yolo(tmp_path, **KW)

def test_voc_difficult_kept_as_target_and_flagged(tmp_path):
    d = _voc(tmp_path, {'a.jpg': _rgb(), 'b.jpg': _rgb()},
             objects={'a.jpg': [('cat', 2, 3, 20, 25, 1), ('dog', 1, 1, 30, 20, 0)], 'b.jpg': [('cat', 1, 1, 9, 9)]})
    dls = DetDataLoaders.from_voc(d, valid_idx=[0], size=32, bs=1, num_workers=0)
    r = dls.valid.items[0]
    assert r.file.name == 'a.jpg' and r.difficult.tolist() == [True, False] and r.labels == ['cat', 'dog']
    x, b, l = dls.valid.one_batch()
    assert l[0].tolist() == [dls.vocab.o2i['cat'], dls.vocab.o2i['dog']]  # the difficult box is a training target

def test_yolo_polygon_line_is_its_bounding_box(tmp_path):
    (tmp_path/'images').mkdir(); (tmp_path/'labels').mkdir()
    _rgb(100, 50).save(tmp_path/'images/a.jpg')
    (tmp_path/'labels/a.txt').write_text('0 0.1 0.2 0.5 0.1 0.3 0.6\n')  # a triangle, as ultralytics' segment labels
    (tmp_path/'classes.txt').write_text('cat\n')
    from fastdet.data.readers import read_yolo
    r = read_yolo(tmp_path)[0]
    assert r.labels == ['cat'] and torch.allclose(r.boxes, torch.tensor([[10., 5., 50., 30.]]))

# --- issue 13: defects found by trying bad input as a new user would ------------------------------------------
def _coco(tmp_path, images, anns, cats=({'id': 1, 'name': 'cat'},)):
    (tmp_path/'images').mkdir(exist_ok=True)
    for name, (im, declared) in images.items(): im.save(tmp_path/'images'/name)
    js = dict(images=[dict(id=i + 1, file_name=n, width=d[0], height=d[1]) for i, (n, (_, d)) in enumerate(images.items())],
              categories=list(cats), annotations=anns)
    (tmp_path/'ann.json').write_text(json.dumps(js))
    return tmp_path/'ann.json'

def test_declared_size_rescaled_when_a_scale_reported_otherwise(tmp_path):
    "13.3: a COCO json declaring 256x192 for a 128x96 image: boxes rescaled, each file named; a size that is no scale: named."
    from fastdet.data.readers import read_coco
    fn = _coco(tmp_path, {'a.png': (_rgb(128, 96), (256, 192)), 'b.png': (_rgb(128, 96), (200, 100)), 'c.png': (_rgb(128, 96), (128, 96))},
               [dict(id=1, image_id=1, category_id=1, bbox=[20, 40, 100, 80]), dict(id=2, image_id=2, category_id=1, bbox=[10, 10, 30, 30]),
                dict(id=3, image_id=3, category_id=1, bbox=[10, 10, 30, 30])])
    with pytest.warns(UserWarning) as w: recs, rep = check_records(read_coco(fn))
    msg = str(w[-1].message)
    assert 'a.png: declared 192x256, image 96x128' in msg and 'b.png: declared 100x200 (h x w), image 96x128' in msg and 'c.png' not in msg
    assert torch.equal(recs[0].boxes, torch.tensor([[10., 20., 60., 60.]])) and torch.equal(recs[1].boxes, torch.tensor([[10., 10., 40., 40.]]))
    assert len(rep.rescaled) == 1 and len(rep.mismatched) == 1

def test_csv_class_without_coordinates_is_an_error(tmp_path):
    "13.4: a class with empty coordinates names file:line; an empty class and empty coordinates is a negative image."
    from fastdet.data.readers import read_csv
    (tmp_path/'images').mkdir(); _rgb().save(tmp_path/'images'/'a.jpg'); _rgb().save(tmp_path/'images'/'b.jpg')
    (tmp_path/'boxes.csv').write_text('filename,class,xmin,ymin,xmax,ymax\na.jpg,cat,1,2,10,12\nb.jpg,dog,,,,\n')
    with pytest.raises(ValueError, match=r"boxes\.csv:3: class 'dog' without a box"): read_csv(tmp_path/'boxes.csv', tmp_path/'images')
    (tmp_path/'boxes.csv').write_text('filename,class,xmin,ymin,xmax,ymax\na.jpg,cat,1,2,10,12\nb.jpg,,,,,\n')
    recs = read_csv(tmp_path/'boxes.csv', tmp_path/'images')
    assert [len(r.labels) for r in recs] == [1, 0]

def test_yolo_images_under_a_symlinked_folder(tmp_path):
    "13.5: images in a linked folder are read; a label file whose image is missing is reported by name."
    from fastdet.data.readers import read_yolo
    real = tmp_path/'elsewhere'; real.mkdir()
    _rgb(64, 48).save(real/'x.jpg')
    (tmp_path/'ds'/'images').mkdir(parents=True); (tmp_path/'ds'/'labels'/'linked').mkdir(parents=True)
    (tmp_path/'ds'/'images'/'linked').symlink_to(real, target_is_directory=True)
    (tmp_path/'ds'/'images'/'linked'/'loop').symlink_to(tmp_path/'ds'/'images', target_is_directory=True)  # a cycle
    (tmp_path/'ds'/'labels'/'linked'/'x.txt').write_text('0 .5 .5 .2 .2\n')
    (tmp_path/'ds'/'labels'/'linked'/'gone.txt').write_text('0 .5 .5 .2 .2\n')
    (tmp_path/'ds'/'data.yaml').write_text('path: .\ntrain: images\nnames: [cat]\n')
    with pytest.warns(UserWarning, match=r'1 label files have no image.*gone\.txt'): recs = read_yolo(tmp_path/'ds'/'data.yaml')
    assert [r.file.name for r in recs] == ['x.jpg'] and recs[0].labels == ['cat']

def test_predict_accepts_every_documented_input(tmp_path):
    "13.7: str, Path, PIL, uint8/float arrays, uint8/float tensors give the same detections; anything else a named error."
    from fastdet.learner import ssd_learner
    from fastdet.data.records import DetImage
    dls = DetDataLoaders.from_shapes(n=16, size=64, render_size=64, bs=4, seed=2, num_workers=0)
    learn = ssd_learner(dls, weights=None, path=tmp_path)
    f = dls.valid.items[0].file
    a = np.asarray(open_image(f))
    ref = learn.predict(f)
    for item in (str(f), open_image(f), a, a.astype(np.float32) / 255, torch.from_numpy(a).permute(2, 0, 1),
                 torch.from_numpy(a).permute(2, 0, 1).float() / 255):
        b, l, s = learn.predict(item)
        assert torch.equal(b, ref[0]) and l == ref[1] and torch.equal(s, ref[2]), type(item)
    with pytest.raises(TypeError, match="can't make an image of a dict"): learn.predict({'x': 1})
    with pytest.raises(ValueError, match=r'must hold pixels in \[0, 1\]'): learn.predict(a.astype(np.float32))

def test_batch_size_one_fails_at_creation_with_the_fix(tmp_path):
    "13.8: bs 1 with BatchNorm on 1x1 maps: an error at learner creation saying what to change; a size that avoids them trains."
    from fastdet.learner import ssd_learner
    dls = DetDataLoaders.from_shapes(n=8, size=64, render_size=64, bs=1, seed=2, num_workers=0)
    with pytest.raises(ValueError, match='cannot train with batch size 1 at 64x64.*Use bs >= 2'): ssd_learner(dls, weights=None)
    ok = ssd_learner(DetDataLoaders.from_shapes(n=8, size=64, render_size=64, bs=1, seed=2, num_workers=0), 'ssd300_vgg16', weights=None)
    ok.fit(1, 1e-5)  # no BatchNorm: batch size 1 trains

def test_huge_image_is_named_and_skipped(tmp_path, monkeypatch):
    "13.9: an image over PIL's decompression-bomb limit is an ImageError naming it (the limit lowered here, not a 200 MP file)."
    monkeypatch.setattr(Image, 'MAX_IMAGE_PIXELS', 1000)
    _rgb(80, 60).save(tmp_path/'big.png'); _rgb(20, 20).save(tmp_path/'ok.png')
    from fastdet.data.records import ImageError
    with pytest.raises(ImageError, match=r'big\.png: too large to open safely.*MAX_IMAGE_PIXELS'): open_image(tmp_path/'big.png')
    with pytest.raises(ValueError, match=r'big\.png: too large'):
        check_records([DetRecord(tmp_path/'big.png', [], []), DetRecord(tmp_path/'ok.png', [], [])])

def test_header_reads_close_their_files(tmp_path):
    "13.12: `image_hw` (check_only) leaves no file open."
    import gc
    _rgb().save(tmp_path/'a.png')
    with warnings.catch_warnings():
        warnings.simplefilter('error', ResourceWarning)
        for _ in range(3): image_hw(tmp_path/'a.png')
        gc.collect()

def test_the_report_names_each_repair(tmp_path):
    "14.3: a PNG named .jpg, an xml of size 0, an xml of a wrong size, a clipped box, a degenerate box, a negative: each counted and named."
    png = _rgb(); png._fmt = 'PNG'
    d = _voc(tmp_path, {'lied.jpg': png, 'zero.jpg': _rgb(), 'wrong.jpg': _rgb(), 'clip.jpg': _rgb(), 'flat.jpg': _rgb(), 'none.jpg': _rgb()},
             objects={'clip.jpg': [('cat', 2, 3, 55, 25)], 'flat.jpg': [('cat', 2, 3, 20, 25), ('cat', 5, 5, 5, 9)], 'none.jpg': []})
    _voc_xml(d/'annotations'/'zero.xml', 'zero.jpg', [('cat', 2, 3, 20, 25)], w=0, h=0)
    _voc_xml(d/'annotations'/'wrong.xml', 'wrong.jpg', [('cat', 2, 3, 20, 25)], w=33, h=44)
    with pytest.warns(UserWarning):
        dls = DetDataLoaders.from_voc(d, **KW)
    rep = dls.report
    assert (rep.images, rep.boxes, rep.negatives) == (6, 5, 1)
    assert [f.split(':')[0].rsplit('/', 1)[-1] for f in rep.ext_lied] == ['lied.jpg'] and rep.ext_lied[0].endswith('PNG')
    assert [Path(f).name for f in rep.no_size] == ['zero.jpg'] and len(rep.mismatched) == 1 and 'wrong.jpg' in rep.mismatched[0]
    assert rep.clipped == 1 and [Path(f).name for f in rep.clipped_files] == ['clip.jpg']
    assert sum(rep.dropped.values()) == 1
    short, full = rep.summary(), rep.summary(verbose=True)
    assert short.splitlines()[0] == '6 images, 5 boxes; 1 images without objects kept as negatives'
    for what in ('1 images whose extension names another format', '1 images without a size (or size 0)',
                 '1 images whose annotation declared another size', '1 boxes clipped to their image (1 images)', '1 boxes dropped'):
        assert sum(what in l for l in short.splitlines()) == 1, (what, short)
    assert len(short.splitlines()) == 6 and str(d/'images'/'flat.jpg') in full
