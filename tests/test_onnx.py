"""The ONNX backend: ``biotrove export --format onnx [--quantize int8]`` and ``classify``, ``embed``
and ``eval`` on the bundle through onnxruntime, PIL and numpy (torch never imported), giving what
the PyTorch path gives."""

from __future__ import annotations

import csv
import io
import json
import shutil
import sys

import numpy as np
import pytest

from tests.conftest import DEMO_SPECIES

pytest.importorskip("onnxruntime", reason="onnxruntime is not installed (pip install '.[dev]')")
pytest.importorskip("onnx", reason="onnx is not installed (pip install '.[dev]')")

PROBE = (
    "import sys\n"
    "from biotrove_cli.cli.app import main\n"
    "code = main(sys.argv[1:])\n"
    "heavy = sorted(m for m in ('torch', 'torchvision', 'open_clip') if m in sys.modules)\n"
    "print('HEAVY=' + ','.join(heavy), file=sys.stderr)\n"
    "sys.exit(code)\n"
)


@pytest.fixture(scope="session")
def tiny_pt(tmp_path_factory, tiny_model):
    import torch

    path = tmp_path_factory.mktemp("onnx-src") / "tiny.pt"
    torch.save(tiny_model.model.state_dict(), path)
    return path


@pytest.fixture(scope="session")
def onnx_bundle(tmp_path_factory, tiny_pt):
    """The seeded tiny model as a verified fp32 ONNX bundle with the demo label bank."""
    from biotrove_cli.core.models.export import ExportConfig, export_model

    out = tmp_path_factory.mktemp("onnx") / "bundle"
    result = export_model(
        ExportConfig(source=str(tiny_pt), out=out, format="onnx", labels=DEMO_SPECIES)
    )
    assert result.verification is not None and result.verification.agreement == 1.0
    return out


@pytest.fixture(scope="session")
def photos(tmp_path_factory, demo_bank):
    """A folder of class subfolders (species names), 3 photos each, of 4 demo species."""
    from biotrove_cli.core.data.world import generate_world

    root = tmp_path_factory.mktemp("onnx-photos")
    made = generate_world(demo_bank.taxa[:4], root / "tmp", 3, seed=5, size=(220, 160))
    for p in made:
        folder = root / "folder" / p.taxon.binomial
        folder.mkdir(parents=True, exist_ok=True)
        shutil.move(str(p.path), folder / p.path.name)
    return root / "folder"


def _python(code: str, *args, env: dict | None = None):
    """``python -c CODE ARGS`` in a fresh process."""
    import os
    import subprocess

    return subprocess.run(
        [sys.executable, "-c", code, *map(str, args)],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        timeout=600,
    )


def _rows(text: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(text)))


def _same_predictions(a: list[dict[str, str]], b: list[dict[str, str]]) -> None:
    assert len(a) == len(b) > 0
    for x, y in zip(a, b, strict=True):
        assert (x["path"], x["rank"], x["name"]) == (y["path"], y["rank"], y["name"])
        assert abs(float(x["score"]) - float(y["score"])) < 1e-4


# -- preprocessing and tokenizer equal open_clip's --------------------------------------------
@pytest.mark.parametrize(
    "cfg",
    [
        {"size": 224},  # ViT-B-16's (bicubic, shortest, OpenAI mean/std)
        {"size": 64, "mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5]},
        {"size": 96, "interpolation": "bilinear"},
        {"size": 80, "resize_mode": "squash"},
    ],
)
def test_numpy_preprocessing_equals_open_clip(cfg):
    from open_clip.transform import PreprocessCfg, image_transform_v2
    from PIL import Image

    from biotrove_cli.core.models.onnx.preprocess import NumpyPreprocess

    theirs = image_transform_v2(PreprocessCfg(**cfg), is_train=False)
    ours = NumpyPreprocess(cfg)
    rng = np.random.default_rng(0)
    for w, h in [(500, 375), (375, 500), (224, 224), (61, 97), (1001, 333)]:
        img = Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8))
        expected = theirs(img).numpy()
        got = ours(img)
        assert got.shape == expected.shape and got.dtype == np.float32
        assert np.abs(got - expected).max() <= 1e-5, (cfg, w, h)


def test_unsupported_preprocessing_is_refused():
    from biotrove_cli.core.errors import ModelLoadError
    from biotrove_cli.core.models.onnx.preprocess import NumpyPreprocess

    with pytest.raises(ModelLoadError, match="resize_mode 'longest'"):
        NumpyPreprocess({"size": 224, "resize_mode": "longest"})
    with pytest.raises(ModelLoadError, match="not square"):
        NumpyPreprocess({"size": [224, 192]})


def test_tokenizer_equals_open_clip(demo_bank):
    from open_clip.tokenizer import SimpleTokenizer, default_bpe

    from biotrove_cli.core.models.loaded import _TOKENIZER_PROBES
    from biotrove_cli.core.models.onnx.tokenizer import ClipTokenizer

    texts = [*_TOKENIZER_PROBES, "&amp;lt;b&amp;gt; São Tomé   weißer  Öl-Käfer 3.5mm"]
    texts += [f"a photo of {t.binomial}, {t.common_name}." for t in demo_bank.taxa]
    expected = SimpleTokenizer()(texts).numpy()
    got = ClipTokenizer(default_bpe())(texts)
    assert got.dtype == np.int64 and (got == expected).all()


def test_shipped_openai_templates_are_open_clips():
    from open_clip.zero_shot_metadata import OPENAI_IMAGENET_TEMPLATES

    from biotrove_cli.core.evaluation.templates import load_templates

    name, templates = load_templates("openai")
    assert name == "openai" and templates == tuple(t("{}") for t in OPENAI_IMAGENET_TEMPLATES)


# -- the bundle ---------------------------------------------------------------------------------
def test_export_writes_a_self_contained_bundle(onnx_bundle):
    cfg = json.loads((onnx_bundle / "onnx_config.json").read_text())
    assert cfg["tokenizer"]["vocab"] == "tokenizer/bpe_simple_vocab_16e6.txt.gz"
    assert (onnx_bundle / cfg["tokenizer"]["vocab"]).is_file()
    assert len(cfg["text_fingerprint"]) == 32 and cfg["quantization"] is None
    meta = json.loads((onnx_bundle / "biotrove.json").read_text())
    assert meta["verification"]["agreement"] == 1.0
    assert meta["verification"]["agreement_images"] == 48


def test_classify_embed_eval_run_without_torch(onnx_bundle, photos, tmp_path):
    """The three commands on the ONNX bundle, each in a fresh Python: torch, torchvision and
    open_clip are never imported, and the answers are the PyTorch path's."""
    env = {"HF_HUB_OFFLINE": "1", "BIOTROVE_HOME": str(tmp_path / "home")}

    def probe(*args):
        proc = _python(PROBE, *args, env=env)
        assert proc.returncode == 0, proc.stderr
        assert "HEAVY=\n" in proc.stderr, proc.stderr
        return proc.stdout

    out = probe("classify", photos, "-r", "-m", onnx_bundle, "-k", "3", "--format", "csv")
    rows = _rows(out)
    assert len(rows) == 12 * 3 and {r["rank"] for r in rows} == {"species"}
    probe("embed", photos, "-r", "-m", onnx_bundle, "-o", tmp_path / "e.parquet")
    out = probe("eval", "-m", onnx_bundle, "--data", photos, "--format", "csv")
    assert "species" in out
    probe("embed", "--text", "-m", onnx_bundle, "--format", "jsonl", "--templates", "openai")

    import pyarrow.parquet as pq

    table = pq.read_table(tmp_path / "e.parquet").to_pylist()
    assert len(table) == 12 and all(len(r["embedding"]) == 64 for r in table)


def test_onnx_answers_as_pytorch(cli, onnx_bundle, tiny_pt, photos, tmp_path, monkeypatch):
    """Same labels, rank roll-up, --min-confidence, new class texts (the bundled tokenizer and
    text encoder) and Python API: the ONNX bundle answers as its PyTorch source."""
    monkeypatch.setenv("BIOTROVE_HOME", str(tmp_path / "home"))
    common = [photos, "-r", "--labels", DEMO_SPECIES, "--format", "csv"]
    for extra in (
        ["--rank", "genus", "-k", "2"],
        ["--min-confidence", "0.2"],
        ["--templates", "openai", "-k", "1", "--no-cache"],
        ["--text-type", "sci", "--within", "Animalia", "-k", "2", "--no-cache"],
    ):
        code, ours, err = cli("classify", *common, "-m", onnx_bundle, *extra)
        assert code == 0, err
        code, theirs, err = cli("classify", *common, "-m", tiny_pt, *extra)
        assert code == 0, err
        _same_predictions(_rows(ours), _rows(theirs))

    from PIL import Image

    from biotrove_cli import Classifier

    images = [Image.open(p) for p in sorted(photos.rglob("*.jpg"))[:3]]
    ours = Classifier(str(onnx_bundle), progress=False).predict(images, k=1)
    theirs = Classifier(str(tiny_pt), DEMO_SPECIES, progress=False).predict(images, k=1)
    assert [r["name"] for r in ours] == [r["name"] for r in theirs]


def test_eval_onnx_equals_pytorch(cli, onnx_bundle, tiny_pt, photos):
    code, out, err = cli(
        "eval", "-m", onnx_bundle, "-m", tiny_pt, "--data", photos, "--labels", DEMO_SPECIES,
        "--format", "json",
    )  # fmt: skip
    assert code == 0, err
    rows = json.loads(out)
    by_model: dict[str, dict[str, float]] = {}
    for r in rows:
        by_model.setdefault(r["model"], {})[r["rank"]] = r["top1"]
    assert len(by_model) == 2
    a, b = by_model.values()
    assert a == b and len(a) == 7
    # per-rank prompts, without the species rollup
    code, out, err = cli(
        "eval", "-m", onnx_bundle, "-m", tiny_pt, "--data", photos, "--labels", DEMO_SPECIES,
        "--mode", "prompt", "--ranks", "genus,family", "--format", "json",
    )  # fmt: skip
    assert code == 0, err
    rows = json.loads(out)
    assert len(rows) == 4
    for rank in ("genus", "family"):
        ours, theirs = (r["top1"] for r in rows if r["rank"] == rank)
        assert ours == theirs


def test_resume_appends_only_what_is_missing(cli, onnx_bundle, photos, tmp_path):
    out = tmp_path / "pred.csv"
    code, _, err = cli("classify", photos, "-r", "-m", onnx_bundle, "-k", "1", "-o", out)
    assert code == 0, err
    full = out.read_text().splitlines()
    out.write_text("\n".join(full[:5]) + "\n")  # as if killed after 4 photos
    code, _, err = cli(
        "classify", photos, "-r", "-m", onnx_bundle, "-k", "1", "-o", out, "--resume"
    )
    assert code == 0, err
    resumed = out.read_text().splitlines()
    assert sorted(resumed) == sorted(full) and len(set(resumed)) == len(resumed)


# -- bad input ------------------------------------------------------------------------------------
def test_bad_flags_and_broken_bundles_fail_clearly(cli, onnx_bundle, photos, tmp_path):
    code, _, err = cli("classify", photos, "-r", "-m", onnx_bundle, "--device", "cuda")
    assert code == 2 and "an ONNX bundle runs on the CPU" in err and "Traceback" not in err
    code, _, err = cli("classify", photos, "-r", "-m", onnx_bundle, "--precision", "bf16")
    assert code == 2 and "runs in the precision it was exported in (fp32)" in err
    code, _, err = cli("eval", "-m", onnx_bundle, "--data", photos, "--nproc-per-node", "2")
    assert code == 2 and "evaluated in one process" in err

    broken = tmp_path / "broken"
    shutil.copytree(onnx_bundle, broken)
    (broken / "image_encoder.onnx").write_bytes(b"not a graph")
    code, _, err = cli("classify", photos, "-r", "-m", broken)
    assert code == 1 and "onnxruntime cannot load it" in err and "export the model" in err
    assert "Traceback" not in err

    (broken / "image_encoder.onnx").unlink()
    code, _, err = cli("classify", photos, "-r", "-m", broken)
    assert code == 1 and "has no image encoder" in err

    shutil.rmtree(broken)
    shutil.copytree(onnx_bundle, broken)
    (broken / "onnx_config.json").write_text("{not json")
    code, _, err = cli("classify", photos, "-r", "-m", broken)
    assert code == 1 and "onnx_config.json: unreadable" in err

    # a bundle without its tokenizer: its own labels work, new class texts are refused
    shutil.rmtree(broken)
    shutil.copytree(onnx_bundle, broken)
    shutil.rmtree(broken / "tokenizer")
    code, _, err = cli("classify", photos, "-r", "-m", broken, "-k", "1")
    assert code == 0, err
    code, _, err = cli("classify", photos, "-r", "-m", broken, "--templates", "openai")
    assert code == 1 and "has no tokenizer" in err and "bundled labels" in err


def test_export_flags_are_checked_before_loading(cli, tiny_pt, tmp_path):
    code, _, err = cli("export", tiny_pt, "--out", tmp_path / "a", "--quantize", "int8")
    assert code == 2 and "--quantize is for --format onnx" in err
    empty = tmp_path / "empty"
    empty.mkdir()
    code, _, err = cli(
        "export", tiny_pt, "--out", tmp_path / "b", "--format", "onnx", "--calibration", empty
    )
    assert code == 1 and "--calibration" in err and "no images in this folder" in err
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


# -- int8 -----------------------------------------------------------------------------------------
def test_int8_export_reports_agreement_and_refuses_below_threshold(cli, tiny_pt, photos, tmp_path):
    """Dynamic int8 (generated photos) and static int8 (--calibration): the agreement with the
    fp32 PyTorch model is measured and recorded; below --min-agreement nothing is written."""
    out = tmp_path / "int8"
    code, stdout, err = cli(
        "export", tiny_pt, "--out", out, "--format", "onnx", "--quantize", "int8",
        "--labels", DEMO_SPECIES, "--min-agreement", "0", "--report", "csv",
    )  # fmt: skip
    assert code == 0, err
    assert "export,quantize,int8 (dynamic)" in stdout and "verify,top1_agreement," in stdout
    cfg = json.loads((out / "onnx_config.json").read_text())
    assert cfg["quantization"]["dtype"] == "int8" and cfg["quantization"]["method"] == "dynamic"
    meta = json.loads((out / "biotrove.json").read_text())
    agreement = meta["verification"]["agreement"]
    assert 0.0 < agreement <= 1.0 and meta["quantization"]["method"] == "dynamic"
    import onnx

    ops = {n.op_type for n in onnx.load(str(out / "image_encoder.onnx")).graph.node}
    assert (
        "DynamicQuantizeLinear" in ops or "MatMulInteger" in ops or "DynamicQuantizeMatMul" in ops
    )

    code, stdout, err = cli("classify", photos, "-r", "-m", out, "-k", "1", "--format", "csv")
    assert code == 0, err
    assert len(_rows(stdout)) == 12
    code, stdout, err = cli("info", out, "--format", "csv")
    assert code == 0, err
    assert "onnx,image encoder,int8 (dynamic)" in stdout and "onnx,tokenizer,bundled" in stdout
    assert f"onnx,top-1 agreement with fp32,{agreement:.4f}" in stdout

    if agreement < 1.0:
        refused = tmp_path / "refused"
        code, _, err = cli(
            "export", tiny_pt, "--out", refused, "--format", "onnx", "--quantize", "int8",
            "--labels", DEMO_SPECIES, "--min-agreement", "1",
        )  # fmt: skip
        assert code == 1 and "below --min-agreement 1" in err and "--calibration" in err
        assert not refused.exists()

    static = tmp_path / "static"
    code, stdout, err = cli(
        "export", tiny_pt, "--out", static, "--format", "onnx", "--quantize", "int8",
        "--calibration", photos, "--labels", DEMO_SPECIES, "--min-agreement", "0",
        "--report", "csv",
    )  # fmt: skip
    assert code == 0, err
    assert "export,quantize,int8 (static)" in stdout and "(12 photos)" in stdout
    cfg = json.loads((static / "onnx_config.json").read_text())
    assert cfg["quantization"]["method"] == "static"
    assert cfg["quantization"]["calibration_photos"] == 12


@pytest.mark.parametrize("batch_first", [True, False])
def test_export_attention_equals_multihead_attention(batch_first):
    """The export's self-attention gives nn.MultiheadAttention's results (no mask, a float
    causal mask, a bool mask), hands cross-attention to it, and is swapped out afterwards."""
    import torch

    from biotrove_cli.core.models.export.attention import export_attention

    torch.manual_seed(0)
    holder = torch.nn.Module()
    holder.attn = torch.nn.MultiheadAttention(32, 4, batch_first=batch_first).eval()
    mha = holder.attn
    x = torch.randn(3, 7, 32) if batch_first else torch.randn(7, 3, 32)
    other = torch.randn_like(x)
    causal = torch.full((7, 7), float("-inf")).triu(1)
    banned = torch.zeros(7, 7, dtype=torch.bool)
    banned[:, 5] = True
    with torch.no_grad():
        want = [mha(x, x, x, need_weights=False, attn_mask=m)[0] for m in (None, causal, banned)]
        want_cross = mha(x, other, other, need_weights=False)[0]
        with export_attention(holder) as swapped:
            assert swapped == 1 and type(holder.attn).__name__ == "ExportAttention"
            got = [
                holder.attn(x, x, x, need_weights=False, attn_mask=m)[0]
                for m in (None, causal, banned)
            ]
            got_cross = holder.attn(x, other, other, need_weights=False)[0]
    assert holder.attn is mha
    for a, b in zip(want, got, strict=True):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(want_cross, got_cross)


def test_exported_image_tower_is_compact(onnx_bundle, tiny_model):
    """The bundle's image encoder uses the compact attention: at most 3 Transpose nodes per
    block (nn.MultiheadAttention as traced gives 8)."""
    import onnx

    blocks = len(tiny_model.model.visual.transformer.resblocks)
    graph = onnx.load(str(onnx_bundle / "image_encoder.onnx")).graph
    transposes = sum(n.op_type == "Transpose" for n in graph.node)
    assert blocks > 0 and transposes <= 3 * blocks + 1


def test_int8_products_do_not_saturate(tmp_path):
    """A ViT-sized product (768 -> 3072, trained-like weights, LayerNorm-like activations)
    quantised as the export quantises: on CPUs without VNNI, full-range int8 weights saturate
    onnxruntime's int16 pair sums (error about 0.11 of the output range); 7-bit weights stay
    near the quantisation error (about 0.02)."""
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    from biotrove_cli.core.models.export.quantize import quantize_image_encoder

    rng = np.random.default_rng(0)
    weight = (rng.standard_normal((768, 3072)) * 0.02).astype(np.float32)
    x = rng.standard_normal((197 * 2, 768)).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["pixel_values", "w"], ["image_embeddings"])],
        "product",
        [helper.make_tensor_value_info("pixel_values", TensorProto.FLOAT, [None, 768])],
        [helper.make_tensor_value_info("image_embeddings", TensorProto.FLOAT, [None, 3072])],
        [numpy_helper.from_array(weight, "w")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 9
    onnx.save(model, str(tmp_path / "image_encoder.onnx"))
    info = quantize_image_encoder(tmp_path, None, {"size": 224})
    assert info["method"] == "dynamic" and "7-bit" in info["weights"]
    session = ort.InferenceSession(str(tmp_path / "image_encoder.onnx"))
    assert "MatMul" not in {
        n.op_type for n in onnx.load(str(tmp_path / "image_encoder.onnx")).graph.node
    }
    out = session.run(None, {"pixel_values": x})[0]
    ref = x @ weight
    assert np.abs(out - ref).max() / np.abs(ref).max() < 0.05


def test_thread_loader_keeps_order_and_stops_cleanly():
    import threading

    from biotrove_cli.core.evaluation.threaded import thread_batches

    data = list(range(103))
    got = [b for batch in thread_batches(data, 10, 3, list) for b in batch]
    assert got == data
    gen = thread_batches(data, 10, 3, list)
    next(gen)
    gen.close()  # a consumer that stops early: no decoding thread is left behind
    assert not [t for t in threading.enumerate() if t.name.startswith("biotrove-decode")]


def test_spec_parsing_stays_light():
    proc = _python(
        "import sys\n"
        "from biotrove_cli.core.models.spec import backend_of\n"
        "assert backend_of('clip-o') == 'torch'\n"
        "print('torch' in sys.modules)\n",
    )
    assert proc.stdout.strip() == "False", proc.stderr


def test_ctrl_c_terminates_a_running_onnx_batch(onnx_bundle):
    """Ctrl-C during a batch reaches Python at once and tells onnxruntime to stop the run."""
    import _thread
    import signal
    import threading

    from biotrove_cli.core.models.onnx.encoder import OnnxImageEncoder
    from biotrove_cli.core.models.onnx.model import load_onnx

    encoder = OnnxImageEncoder(load_onnx(onnx_bundle, str(onnx_bundle)))
    seen = {}
    started, done = threading.Event(), threading.Event()

    class SlowSession:  # a batch that runs until it is told to terminate
        def run(self, outputs, feeds, options):
            started.set()
            try:
                for _ in range(6000):
                    if options.terminate:
                        seen["terminated"] = True
                        raise RuntimeError("terminated")
                    threading.Event().wait(0.01)
                seen["terminated"] = False
                return [np.zeros((1, 64), np.float32)]
            finally:
                done.set()

    encoder.session = SlowSession()
    # Ctrl-C as Python's default handler turns it into KeyboardInterrupt, whatever an earlier
    # test of this process left installed
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        threading.Thread(target=lambda: started.wait() and _thread.interrupt_main()).start()
        with pytest.raises(KeyboardInterrupt):
            encoder(np.zeros((1, 3, 64, 64), np.float32))
    finally:
        signal.signal(signal.SIGINT, previous)
    # the run stops within its next check (the interrupt can land while the pool's thread
    # is still starting, before the pool would join it on shutdown: wait for the run itself)
    assert done.wait(5)
    encoder._runner.shutdown(wait=True)
    assert seen == {"terminated": True}
