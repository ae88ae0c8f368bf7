"""Single-shot object detection (SSD, EfficientDet) as first-class fastai citizens

Modules:

- `fastdet.models.efficientdet`: effdet's EfficientDet family as a fastai model: configuration by name, a loss that takes fastai's padded `[-1,1]` boxes, batched anchor labelling, decoding to fastdet's detection protocol, and a layer-group splitter."""

__version__ = "0.0.1"
