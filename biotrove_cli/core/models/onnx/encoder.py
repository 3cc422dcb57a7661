"""The ONNX backend's image encoder: preprocessed numpy batches -> unit-norm float32 features
(numpy), through the bundle's ``image_encoder.onnx`` on onnxruntime's CPU provider."""

from __future__ import annotations

from typing import Any

from biotrove_cli.core.errors import NonFiniteError, UsageError


class OnnxImageEncoder:
    """What :class:`~biotrove_cli.core.evaluation.zeroshot.ImageEncoder` is for PyTorch."""

    backend = "onnx"
    cuda = False

    def __init__(self, loaded: Any, precision: str = "auto"):
        from biotrove_cli.core.models.onnx.model import session

        value = (precision or "auto").strip().lower()
        own = loaded.quantization
        if value not in ("auto", own):
            raise UsageError(
                f"--precision {value}: the ONNX bundle runs in the precision it was exported in "
                f"({own})",
                hint="leave --precision out (auto), or export an ONNX bundle with "
                "--quantize int8 for a faster one",
            )
        self.loaded = loaded
        self.device = "cpu"
        self.precision = own
        path = loaded.image_encoder_path
        # weights' bytes / bytes per weight: what sizes the decoding threads
        self.params = path.stat().st_size // (1 if own == "int8" else 4)
        self.session = session(path)
        self._pool: Any = None

    def __call__(self, images: Any) -> Any:
        import numpy as np

        x = np.ascontiguousarray(images, dtype=np.float32)
        feats = self._run({"pixel_values": x})
        bad = int((~np.isfinite(feats).all(axis=-1)).sum())
        if bad:
            raise NonFiniteError(
                f"{self.loaded.spec}: the image encoder gives non-finite embeddings (NaN or "
                f"infinity) for {bad} of {len(feats)} images",
                hint="the bundle's weights are broken; export it again",
            )
        return feats.astype(np.float32, copy=False)

    def _run(self, feeds: dict[str, Any]) -> Any:
        """``session.run`` in a helper thread, so that Ctrl-C (or SIGTERM) stops a batch at
        once: this thread keeps taking signals while onnxruntime works, and a stop tells the
        run to terminate instead of waiting seconds for a ViT batch to finish."""
        import onnxruntime as ort

        options = ort.RunOptions()
        try:  # a stop that lands inside submit() (the pool's first thread starting) too
            future = self._runner.submit(self.session.run, None, feeds, options)
            while True:
                try:
                    return future.result(timeout=0.1)[0]
                except TimeoutError:
                    continue
        except BaseException:
            options.terminate = True
            raise

    @property
    def _runner(self) -> Any:
        if self._pool is None:
            from concurrent.futures import ThreadPoolExecutor

            self._pool = ThreadPoolExecutor(1, thread_name_prefix="biotrove-onnx")
        return self._pool
