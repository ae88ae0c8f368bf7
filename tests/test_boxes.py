"Round trips of every box conversion, against torchvision's own `box_convert`."
import torch
from hypothesis import given, settings, strategies as st
from torchvision.ops import box_convert
from fastai.vision.core import TensorBBox
from fastdet.boxes import convert_boxes, bbox_to_pixels, pixels_to_bbox, unpad, PIXEL_FORMATS
from conftest import pad_items

def _boxes(seed, n, lead=()):
    g = torch.Generator().manual_seed(seed)
    a, b = torch.rand(*lead, n, 2, generator=g) * 2 - 1, torch.rand(*lead, n, 2, generator=g) * 2 - 1
    return TensorBBox(torch.cat([torch.minimum(a, b), torch.maximum(a, b)], -1))

@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 10_000), n=st.integers(0, 20), h=st.integers(1, 4000), w=st.integers(1, 4000),
       fmt=st.sampled_from(PIXEL_FORMATS))
def test_round_trip_one_image(seed, n, h, w, fmt):
    bb = _boxes(seed, n)
    px = bbox_to_pixels(bb, (h, w), fmt)
    assert torch.allclose(pixels_to_bbox(px, (h, w), fmt), bb, atol=1e-5)

@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 10_000), fmt=st.sampled_from(PIXEL_FORMATS))
def test_round_trip_batch(seed, fmt):
    bb = _boxes(seed, 7, lead=(5,))
    hw = torch.randint(1, 2000, (5, 2), generator=torch.Generator().manual_seed(seed))
    px = bbox_to_pixels(bb, hw, fmt)
    for i in range(5): assert torch.allclose(px[i], bbox_to_pixels(bb[i], hw[i].tolist(), fmt), atol=1e-3)
    assert torch.allclose(pixels_to_bbox(px, hw, fmt), bb, atol=1e-5)

def test_pixel_formats_match_torchvision():
    px = bbox_to_pixels(_boxes(0, 50), (480, 640))
    for fmt in ('xywh', 'cxcywh'): assert torch.allclose(convert_boxes(px, 'xyxy', fmt), box_convert(px, 'xyxy', fmt))
    assert torch.equal(convert_boxes(px, 'xyxy', 'yxyx'), px[:, [1, 0, 3, 2]])
    for a in PIXEL_FORMATS:
        for b in PIXEL_FORMATS:
            assert torch.allclose(convert_boxes(convert_boxes(px, 'xyxy', a), a, b), convert_boxes(px, 'xyxy', b), atol=1e-4)

def test_pixel_map_is_fastais():
    "(-1,-1,1,1) is the whole image; a pixel box maps as fastai's PointScaler maps it."
    assert torch.allclose(bbox_to_pixels(torch.tensor([-1., -1, 1, 1]), (100, 200)), torch.tensor([0., 0, 200, 100]))

def test_unpad_pad_identity():
    items = [(_boxes(1, 3), torch.tensor([1, 2, 3])), (_boxes(2, 0), torch.zeros(0, dtype=torch.long)),
             (TensorBBox(torch.tensor([[-1., -1, 0, 0]])), torch.tensor([4]))]
    b, l = pad_items(items)
    assert b.shape == (3, 3, 4)
    back = unpad(b, l)
    for (b0, l0), (b1, l1) in zip(items, back): assert torch.equal(b0, b1) and torch.equal(l0, l1)

def test_unknown_format_is_an_error():
    import pytest
    with pytest.raises(ValueError, match='xywhz'): convert_boxes(torch.zeros(1, 4), 'xyxy', 'xywhz')
