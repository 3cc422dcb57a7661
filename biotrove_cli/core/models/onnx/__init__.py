"""The ONNX backend: an exported ONNX bundle run by onnxruntime, with PIL and numpy only.

Nothing in this package imports torch, torchvision or open_clip at import time or on the
inference path (``classify``, ``embed`` and the Python API with an ONNX bundle): preprocessing
(:mod:`.preprocess`), the CLIP tokenizer (:mod:`.tokenizer`) and the model (:mod:`.model`) are
numpy. Quantisation (:mod:`.quantize`) runs at export time, beside PyTorch.
"""
