"""`biotrove export`: training checkpoints -> safe, portable, verified bundles."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from biotrove_cli.core.taxonomy.captions import DEFAULT_CAPTION

DEMO_SPECIES = (
    Path(__file__).resolve().parent.parent / "biotrove_cli" / "resources" / "demo_species.csv"
)


# -- fixtures ------------------------------------------------------------------------------------
def _trained_tiny():
    """A tiny model after one AdamW step (so the optimizer has state), seeded."""
    import torch

    from biotrove_cli.core.models.load import load_model

    torch.manual_seed(123)
    loaded = load_model("biotrove-tiny:random")
    model = loaded.model
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    loss = model.encode_image(torch.randn(2, 3, 64, 64)).sum()
    loss = loss + model.encode_text(loaded.tokenizer(["a photo of a bird.", "a fern"])).sum()
    loss.backward()
    opt.step()
    model.eval()
    return loaded, opt


@pytest.fixture(scope="module")
def ddp_checkpoint(tmp_path_factory):
    """A tiny open_clip training checkpoint saved as open_clip saves it under DDP."""
    import torch

    loaded, opt = _trained_tiny()
    path = tmp_path_factory.mktemp("ckpt") / "epoch_3.pt"
    sd = {"module." + k: v for k, v in loaded.model.state_dict().items()}
    torch.save(
        {"epoch": 3, "name": "tiny-ddp", "state_dict": sd, "optimizer": opt.state_dict()}, path
    )
    return path


@pytest.fixture(scope="module")
def source(ddp_checkpoint):
    """The checkpoint as biotrove loads it (fp32): the reference for every comparison."""
    from biotrove_cli.core.models.load import load_model

    return load_model(ddp_checkpoint)


@pytest.fixture(scope="module")
def fp16_bundle(tmp_path_factory, ddp_checkpoint):
    """A verified fp16 export with the demo label bank (core call)."""
    from biotrove_cli.core.models.export import Dtype, ExportConfig, export_model

    out = tmp_path_factory.mktemp("bundles") / "tiny-fp16"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HF_HUB_OFFLINE", "1")
        mp.setenv("BIOTROVE_HOME", str(tmp_path_factory.mktemp("home")))
        result = export_model(
            ExportConfig(source=str(ddp_checkpoint), out=out, dtype=Dtype.fp16, labels=DEMO_SPECIES)
        )
    return out, result


def _embed(model, tokenizer, pixels, texts):
    import torch

    with torch.no_grad():
        return (
            model.encode_image(pixels, normalize=True).float(),
            model.encode_text(tokenizer(texts), normalize=True).float(),
        )


def _leftovers(folder: Path) -> list[str]:
    """Hidden temp folders an export may have left beside --out."""
    return [p.name for p in folder.iterdir() if p.name.startswith(".")]


TEXTS = ["a photo of Sturnus vulgaris.", "a photo of a yellowjacket.", "Quercus alba"]


# -- the round trip ------------------------------------------------------------------------------
@pytest.mark.slow
def test_ddp_checkpoint_bundle_loads_in_stock_open_clip(cli, ddp_checkpoint, source, tmp_path):
    """module. prefixes and optimizer state in, a pickle-free bundle out; a Python that cannot
    import biotrove loads it with open_clip's local-dir: and gets the source's embeddings."""
    import torch
    from safetensors.torch import load_file, save_file

    out = tmp_path / "bundle"
    code, stdout, stderr = cli(
        "export", ddp_checkpoint, "--out", out, "--no-verify", "--report", "json",
        "--summary", tmp_path / "summary.json",
    )  # fmt: skip
    assert code == 0, stderr
    rows = json.loads(stdout)  # stdout is the report and nothing else: a plain array
    assert {"section": "model", "key": "arch", "value": "biotrove-tiny"} in rows
    report = json.loads((tmp_path / "summary.json").read_text())
    assert report["arch"] == "biotrove-tiny" and report["quick_gelu"] is False
    assert report["checkpoint"] == {"epoch": 3, "name": "tiny-ddp"}
    assert "architecture biotrove-tiny (QuickGELU off); why:" in stderr
    assert "inferred from the weights' shapes" in stderr

    names = sorted(p.name for p in out.iterdir())
    assert names == ["biotrove.json", "open_clip_config.json", "open_clip_model.safetensors"]
    weights = load_file(str(out / "open_clip_model.safetensors"))
    assert set(weights) == set(source.model.state_dict())  # no module., no optimizer
    meta = json.loads((out / "biotrove.json").read_text())
    from biotrove_cli.core.io import sha256_file

    assert meta["source_sha256"] == sha256_file(ddp_checkpoint)
    assert meta["dtype"] == "fp32" and meta["format"] == "open_clip"
    assert meta["created"].endswith("+00:00")

    torch.manual_seed(5)
    pixels = torch.randn(3, 3, 64, 64)
    save_file({"pixels": pixels}, str(tmp_path / "in.safetensors"))
    script = (
        "import sys, json\n"
        "sys.modules['biotrove_cli'] = None\n"
        "import torch, open_clip\n"
        "from safetensors.torch import load_file, save_file\n"
        "d, inp, out, texts = sys.argv[1], sys.argv[2], sys.argv[3], json.loads(sys.argv[4])\n"
        "model, _, _ = open_clip.create_model_and_transforms('local-dir:' + d)\n"
        "tok = open_clip.get_tokenizer('local-dir:' + d)\n"
        "model.eval()\n"
        "with torch.no_grad():\n"
        "    i = model.encode_image(load_file(inp)['pixels'], normalize=True)\n"
        "    t = model.encode_text(tok(texts), normalize=True)\n"
        "save_file({'image': i.contiguous(), 'text': t.contiguous()}, out)\n"
        "assert not any(m.startswith('biotrove') for m in sys.modules if sys.modules[m])\n"
    )
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run(
        [
            sys.executable,
            "-I",
            "-c",
            script,
            str(out),
            str(tmp_path / "in.safetensors"),
            str(tmp_path / "out.safetensors"),
            json.dumps(TEXTS),
        ],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr
    got = load_file(str(tmp_path / "out.safetensors"))
    ref_image, ref_text = _embed(source.model, source.tokenizer, pixels, TEXTS)
    assert torch.allclose(got["image"], ref_image, atol=1e-5)
    assert torch.allclose(got["text"], ref_text, atol=1e-5)


@pytest.mark.slow
def test_fp16_export_verifies_within_tolerance(fp16_bundle):
    from safetensors import safe_open

    from biotrove_cli.core.models.export import TOLERANCE, Dtype

    out, result = fp16_bundle
    v = result.verification
    assert v is not None and v.passed
    assert "without biotrove" in v.method
    # fp16 rounding is visible but small; preprocessing and tokens are identical
    assert 0 < v.image_max_abs_diff <= TOLERANCE[Dtype.fp16]
    assert 0 < v.text_max_abs_diff <= TOLERANCE[Dtype.fp16]
    assert v.pixel_max_abs_diff == 0
    with safe_open(str(out / "open_clip_model.safetensors"), framework="pt") as f:
        assert f.get_tensor("visual.conv1.weight").dtype.is_floating_point
        assert str(f.get_tensor("visual.conv1.weight").dtype) == "torch.float16"
    meta = json.loads((out / "biotrove.json").read_text())
    assert meta["dtype"] == "fp16"
    assert meta["verification"]["passed"] is True
    assert meta["labels"]["classes"] == 33
    rows = {(r["section"], r["key"]): r["value"] for r in result.records()}
    assert rows[("verify", "passed")] == "true"
    assert rows[("labels", "classes")] == "33"


@pytest.mark.slow
def test_bundle_with_labels_classifies_with_no_other_files(fp16_bundle, source, monkeypatch):
    """load_model(DIR) alone: its label bank, and its precomputed class embeddings found by key
    (no text encoding), classify a generated photo."""
    import torch

    from biotrove_cli.core.data.world import render
    from biotrove_cli.core.evaluation import text
    from biotrove_cli.core.evaluation.templates import SIMPLE
    from biotrove_cli.core.models.load import load_model
    from biotrove_cli.core.taxonomy.rank import Rank

    out, _ = fp16_bundle
    loaded = load_model(out)
    assert loaded.labels is not None and len(loaded.labels) == 33
    prompts = text.class_prompts(loaded.labels, Rank.SPECIES, DEFAULT_CAPTION, SIMPLE)
    # fp16 rounding changes the text tower: a key computed from the fp32 source would miss
    assert loaded.text_fingerprint() != source.text_fingerprint()

    def no_encoding(*args, **kwargs):
        raise AssertionError("the bundle's embeddings should have been used")

    monkeypatch.setattr(text, "encode_prompts", no_encoding)
    emb, cached = text.class_embeddings(loaded, prompts, use_cache=False)
    assert cached is True and emb.shape == (33, 64)
    monkeypatch.undo()
    # the bundled embeddings are the fp32 source's encoding of exactly these prompts
    assert torch.allclose(emb, text.encode_prompts(source, prompts), atol=1e-6)

    taxon = loaded.labels.taxa[5]
    pixels = loaded.preprocess(render(taxon, index=0, seed=3, size=(120, 90))).unsqueeze(0)
    with torch.no_grad():
        image = loaded.model.encode_image(pixels, normalize=True).float()
        probs = (loaded.model.logit_scale.exp().float() * image @ emb.T).softmax(dim=-1)
    assert probs.shape == (1, 33)
    assert abs(float(probs.sum()) - 1) < 1e-5
    assert 0 <= int(probs.argmax()) < 33


def test_numpy_scalars_checkpoint_exports(cli, source, tmp_path):
    """Like the published BioTrove files: numpy scalars and dtypes in the pickle."""
    import numpy as np
    import torch

    from biotrove_cli.core.models.load import load_model

    ckpt = tmp_path / "numpy.pt"
    torch.save(
        {
            "epoch": np.int64(8),
            "best": np.float64(0.5),
            "dtype": np.dtype("float32"),
            "state_dict": {"module." + k: v for k, v in source.model.state_dict().items()},
        },
        ckpt,
    )
    out = tmp_path / "bundle"
    code, _, stderr = cli("export", ckpt, "--out", out, "--no-verify")
    assert code == 0, stderr
    meta = json.loads((out / "biotrove.json").read_text())
    assert meta["checkpoint"] == {"epoch": 8}  # a JSON number, not "8"
    reloaded = load_model(out)
    pixels = torch.randn(2, 3, 64, 64)
    a = _embed(reloaded.model, reloaded.tokenizer, pixels, TEXTS)
    b = _embed(source.model, source.tokenizer, pixels, TEXTS)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])


# -- bad input -----------------------------------------------------------------------------------
def test_malicious_pickle_is_refused_and_never_runs(cli, tmp_path):
    import torch

    marker = tmp_path / "PWNED"

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    evil = tmp_path / "evil.pt"
    torch.save({"epoch": 1, "state_dict": {"w": Payload()}}, evil)
    out = tmp_path / "out"
    code, stdout, stderr = cli("export", evil, "--out", out)
    assert code == 1
    assert "refused" in stderr and "system" in stderr and "Hint:" in stderr
    assert "Traceback" not in stderr and stdout == ""
    assert not marker.exists()
    assert not out.exists() and _leftovers(tmp_path) == []
    # the payload is live: an unsafe load runs it (so the test above could fail)
    torch.load(evil, weights_only=False)
    assert marker.exists()


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("truncated", "truncated or corrupt"),
        ("text", "not a PyTorch checkpoint"),
        ("empty", "empty"),
    ],
)
def test_broken_files_fail_cleanly(cli, ddp_checkpoint, tmp_path, content, message):
    bad = tmp_path / "bad.pt"
    if content == "truncated":
        bad.write_bytes(ddp_checkpoint.read_bytes()[: ddp_checkpoint.stat().st_size // 2])
    elif content == "text":
        bad.write_text("these are not weights\n")
    else:
        bad.write_bytes(b"")
    out = tmp_path / "out"
    code, _, stderr = cli("export", bad, "--out", out)
    assert code == 1
    assert message in stderr and "Traceback" not in stderr
    assert not out.exists() and _leftovers(tmp_path) == []


@pytest.mark.parametrize("kind", ["not-clip", "no-such-shapes"])
def test_unknown_architecture(cli, source, tmp_path, kind):
    import torch

    if kind == "not-clip":
        sd = {"conv.weight": torch.zeros(8, 3, 3, 3), "fc.weight": torch.zeros(10, 8)}
        expected = "unknown architecture: the weights lack 'visual.conv1.weight'"
    else:  # a ViT CLIP with a third vision block: no open_clip config has these shapes
        sd = dict(source.model.state_dict())
        for k, v in list(sd.items()):
            if k.startswith("visual.transformer.resblocks.1."):
                sd[k.replace(".1.", ".2.", 1)] = v.clone()
        expected = "unknown architecture: no open_clip model has these shapes"
    ckpt = tmp_path / "other.pt"
    torch.save({"state_dict": sd}, ckpt)
    code, _, stderr = cli("export", ckpt, "--out", tmp_path / "out")
    assert code == 1
    assert expected in stderr and "--arch" in stderr
    assert not (tmp_path / "out").exists() and _leftovers(tmp_path) == []


def test_nonempty_out_needs_force_and_force_replaces_only_exports(cli, ddp_checkpoint, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    code, _, stderr = cli("export", ddp_checkpoint, "--out", out, "--no-verify")
    assert code == 1 and "not empty" in stderr and "--force" in stderr
    # --force never deletes a folder that is not an export (a mistyped --out .)
    code, _, stderr = cli("export", ddp_checkpoint, "--out", out, "--no-verify", "--force")
    assert code == 1 and "not a biotrove export" in stderr
    assert (out / "notes.txt").read_text() == "keep me"
    assert _leftovers(tmp_path) == []

    # an empty folder is fine; an earlier export is replaced with --force
    empty = tmp_path / "empty"
    empty.mkdir()
    assert cli("export", ddp_checkpoint, "--out", empty, "--no-verify")[0] == 0
    (empty / "stale.txt").write_text("from the old export")
    code, _, stderr = cli(
        "export", ddp_checkpoint, "--out", empty, "--no-verify", "--force", "--dtype", "bf16"
    )
    assert code == 0, stderr
    assert not (empty / "stale.txt").exists()
    assert json.loads((empty / "biotrove.json").read_text())["dtype"] == "bf16"
    assert _leftovers(tmp_path) == []


def test_failed_force_export_keeps_the_old_one(cli, ddp_checkpoint, tmp_path, monkeypatch):
    """A new export that fails verification (or is interrupted) leaves the old one as it was."""
    from biotrove_cli.core.io import sha256_file
    from biotrove_cli.core.models.export import job as export

    out = tmp_path / "out"
    assert cli("export", ddp_checkpoint, "--out", out, "--no-verify")[0] == 0
    before = {p.name: sha256_file(p) for p in out.iterdir()}

    def mismatch(folder, source, dtype, taxa):
        assert (folder / "open_clip_model.safetensors").is_file()  # written, not yet published
        return export.Verification("stub", 4, 5, 0.2, 0.01, 5e-3, passed=False)

    monkeypatch.setattr(export, "verify_open_clip", mismatch)
    code, _, stderr = cli("export", ddp_checkpoint, "--out", out, "--force", "--dtype", "fp16")
    assert code == 1
    assert "verification failed" in stderr and "2.00e-01" in stderr
    assert {p.name: sha256_file(p) for p in out.iterdir()} == before
    assert _leftovers(tmp_path) == []

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(export, "verify_open_clip", interrupted)
    code, _, stderr = cli("export", ddp_checkpoint, "--out", out, "--force")
    assert code == 130
    assert {p.name: sha256_file(p) for p in out.iterdir()} == before
    assert _leftovers(tmp_path) == []


# -- architecture and QuickGELU ------------------------------------------------------------------
def test_quickgelu_from_arch_flag_travels_in_the_bundle(cli, ddp_checkpoint, source, tmp_path):
    import torch

    from biotrove_cli.core.models.load import load_model

    out = tmp_path / "q"
    code, _, stderr = cli(
        "export", ddp_checkpoint, "--out", out, "--no-verify", "--arch", "biotrove-tiny-quickgelu"
    )
    assert code == 0, stderr
    assert "QuickGELU on" in stderr and "from --arch" in stderr
    config = json.loads((out / "open_clip_config.json").read_text())
    assert config["model_cfg"]["quick_gelu"] is True
    assert json.loads((out / "biotrove.json").read_text())["quick_gelu"] is True

    reloaded = load_model(out)  # open_clip's own local-dir: loader underneath
    quick = load_model(ddp_checkpoint, arch="biotrove-tiny-quickgelu")
    pixels = torch.randn(2, 3, 64, 64)
    got = _embed(reloaded.model, reloaded.tokenizer, pixels, TEXTS)
    want = _embed(quick.model, quick.tokenizer, pixels, TEXTS)
    plain = _embed(source.model, source.tokenizer, pixels, TEXTS)
    assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1])
    # and the activation matters: the same weights with plain GELU give other embeddings
    assert float((got[0] - plain[0]).abs().max()) > 1e-4


@pytest.mark.parametrize(
    ("filename", "train_cfg", "arch", "want_arch", "want_q", "why"),
    [
        (
            "biotroveclip-vit-b-16-from-openai-epoch-40.pt",
            None,
            None,
            "ViT-B-16-quickgelu",
            True,
            "BioTrove-CLIP-O file name",
        ),
        (
            "BioTroveCLIP-ViT-L-14-from-MetaCLIP-epoch-12.pt",
            None,
            None,
            "ViT-L-14-quickgelu",
            True,
            "BioTrove-CLIP-M",
        ),
        (
            "biotroveclip-vit-b-16-from-bioclip-epoch-8.pt",
            None,
            None,
            "ViT-B-16",
            False,
            "BioTrove-CLIP-B",
        ),
        # an explicit --arch wins over the file name
        (
            "biotroveclip-vit-b-16-from-openai-epoch-40.pt",
            None,
            "ViT-B-16",
            "ViT-B-16",
            False,
            "from --arch",
        ),
        # the stored training config wins over the file name
        (
            "biotroveclip-vit-b-16-from-openai-epoch-40.pt",
            {"model": {"arch": "biotrove-tiny", "quick_gelu": False}},
            None,
            "biotrove-tiny",
            False,
            "stored training config",
        ),
        (
            "step-00000100.pt",
            {"model": {"arch": "ViT-B-16-quickgelu"}},
            None,
            "ViT-B-16-quickgelu",
            True,
            "stored training config",
        ),
        # nothing says: infer from shapes, QuickGELU off, and say how to turn it on
        ("epoch_3.pt", None, None, None, False, "pass --arch ARCH-quickgelu"),
    ],
)
def test_arch_decision(filename, train_cfg, arch, want_arch, want_q, why):
    from biotrove_cli.core.models.arch import decide_arch

    got_arch, got_q, reason = decide_arch(filename, train_cfg, arch=arch)
    assert (got_arch, got_q) == (want_arch, want_q)
    assert why in reason


def test_biotrove_file_name_with_other_weights_fails_clearly(cli, ddp_checkpoint, tmp_path):
    """A tiny checkpoint under the CLIP-O file name is loaded as ViT-B-16-quickgelu: no fit."""
    renamed = tmp_path / "biotroveclip-vit-b-16-from-openai-epoch-40.pt"
    renamed.write_bytes(ddp_checkpoint.read_bytes())
    code, _, stderr = cli("export", renamed, "--out", tmp_path / "out")
    assert code == 1
    assert "do not fit the architecture" in stderr and "--arch" in stderr
    code, _, stderr = cli(
        "export", renamed, "--out", tmp_path / "out", "--no-verify", "--arch", "biotrove-tiny"
    )
    assert code == 0, stderr


# -- labels --------------------------------------------------------------------------------------
def test_reexport_bundle_keeps_labels_and_custom_labels_work(
    cli, fp16_bundle, source, tmp_path, monkeypatch
):
    from biotrove_cli.core.evaluation import text
    from biotrove_cli.core.evaluation.templates import SIMPLE
    from biotrove_cli.core.models.load import load_model
    from biotrove_cli.core.taxonomy.rank import Rank

    src, _ = fp16_bundle
    out = tmp_path / "bf16"
    code, _, stderr = cli("export", src, "--out", out, "--no-verify", "--dtype", "bf16")
    assert code == 0, stderr
    assert "bundling the source's label bank (33 classes)" in stderr
    meta = json.loads((out / "biotrove.json").read_text())
    assert meta["source_kind"] == "bundle" and meta["dtype"] == "bf16"

    names = tmp_path / "names.txt"
    names.write_text("a fern\na beetle\n# comment\na heron\n")
    custom = tmp_path / "custom"
    code, _, stderr = cli(
        "export", src, "--out", custom, "--no-verify", "--labels", names, "--templates", "openai"
    )
    assert code == 0, stderr

    def no_encoding(*args, **kwargs):
        raise AssertionError("precomputed embeddings expected")

    for folder, want in ((out, None), (custom, ["a fern", "a beetle", "a heron"])):
        loaded = load_model(folder)
        if want is None:
            prompts = text.class_prompts(loaded.labels, Rank.SPECIES, DEFAULT_CAPTION, SIMPLE)
        else:
            assert loaded.labels.custom_labels == want
            from biotrove_cli.core.evaluation.templates import openai_templates

            prompts = text.class_prompts(loaded.labels, Rank.SPECIES, "taxon", openai_templates())
        with monkeypatch.context() as mp:
            mp.setattr(text, "encode_prompts", no_encoding)
            emb, cached = text.class_embeddings(loaded, prompts, use_cache=False)
        assert cached is True and emb.shape[0] == len(prompts)


# -- ONNX ----------------------------------------------------------------------------------------
@pytest.mark.slow
def test_onnx_export_dynamic_batch_matches_source(cli, ddp_checkpoint, source, tmp_path):
    ort = pytest.importorskip(
        "onnxruntime", reason="onnxruntime is not installed (pip install 'biotrove[onnx]')"
    )
    pytest.importorskip("onnx", reason="onnx is not installed (pip install 'biotrove[onnx]')")
    import numpy as np
    import torch

    out = tmp_path / "onnx"
    code, stdout, stderr = cli("export", ddp_checkpoint, "--out", out, "--format", "onnx")
    assert code == 0, stderr
    assert "verify,method,onnxruntime (CPU) in a fresh Python without torch" in stdout
    assert "verify,passed,true" in stdout
    assert {p.name for p in out.iterdir()} == {
        "image_encoder.onnx",
        "text_encoder.onnx",
        "onnx_config.json",
        "biotrove.json",
        "tokenizer",  # the CLIP BPE merges, for biotrove's torch-free tokenizer
    }
    cfg = json.loads((out / "onnx_config.json").read_text())
    assert cfg["inputs"]["pixel_values"]["shape"] == ["batch", 3, 64, 64]

    image = ort.InferenceSession(
        str(out / "image_encoder.onnx"), providers=["CPUExecutionProvider"]
    )
    texts = ort.InferenceSession(str(out / "text_encoder.onnx"), providers=["CPUExecutionProvider"])
    pixels = torch.randn(3, 3, 64, 64)  # batch 3: the export traced batch 2
    tokens = source.tokenizer(TEXTS + ["a fourth prompt"])
    got_i = image.run(None, {"pixel_values": pixels.numpy()})[0]
    got_t = texts.run(None, {"input_ids": tokens.numpy()})[0]
    ref_i, ref_t = _embed(source.model, source.tokenizer, pixels, TEXTS + ["a fourth prompt"])
    assert got_i.shape == (3, 64) and got_t.shape == (4, 64)
    assert np.abs(got_i - ref_i.numpy()).max() < 1e-4
    assert np.abs(got_t - ref_t.numpy()).max() < 1e-4


def test_onnx_refuses_half_precision(cli, ddp_checkpoint, tmp_path):
    code, _, stderr = cli(
        "export", ddp_checkpoint, "--out", tmp_path / "o", "--format", "onnx", "--dtype", "fp16"
    )
    assert code == 2 and "fp32 only" in stderr
    assert not (tmp_path / "o").exists()


def test_bad_choices_are_usage_errors(cli, ddp_checkpoint, tmp_path):
    assert cli("export", ddp_checkpoint, "--out", tmp_path / "o", "--dtype", "fp8")[0] == 2
    assert cli("export", ddp_checkpoint, "--out", tmp_path / "o", "--format", "tflite")[0] == 2
    code, _, stderr = cli("export", ddp_checkpoint, "--out", tmp_path / "o", "--templates", "nope")
    assert code == 1 and "not a template set or file" in stderr
    assert not (tmp_path / "o").exists()


@pytest.mark.slow
def test_classify_cli_uses_the_bundle_alone(cli, fp16_bundle, tmp_path, monkeypatch):
    """The contract with `biotrove classify`: its default prompts are the bundled ones, so a
    bundle classifies with no label file and no text encoding."""
    import csv
    import io

    from biotrove_cli.core.data.world import render
    from biotrove_cli.core.evaluation import text
    from biotrove_cli.core.taxonomy.labelbank import LabelBank

    out, _ = fp16_bundle
    bank = LabelBank.load(out / "labels.parquet")
    photo = tmp_path / "photo.jpg"
    render(bank.taxa[2], index=0, seed=1, size=(120, 90)).save(photo)

    def no_encoding(*args, **kwargs):
        raise AssertionError("classify encoded prompts instead of using the bundle's")

    monkeypatch.setattr(text, "encode_prompts", no_encoding)
    code, stdout, stderr = cli("classify", photo, "--model", out, "-k", "3", "--format", "csv")
    assert code == 0, stderr
    rows = list(csv.DictReader(io.StringIO(stdout)))
    assert [int(r["prediction"]) for r in rows] == [1, 2, 3]
    assert {r["name"] for r in rows} <= {t.binomial for t in bank.taxa}


@pytest.mark.slow
def test_verification_catches_a_wrong_activation(cli, ddp_checkpoint, tmp_path, monkeypatch):
    """Weights trained with QuickGELU but a bundle config without it (the silent BioTrove-CLIP-O
    mistake) fail verification for real, and nothing is written."""
    from biotrove_cli.core.models.export import job as export

    original = export._write_open_clip

    def forget_quickgelu(tmp, source, dtype):
        original(tmp, source, dtype)
        path = tmp / "open_clip_config.json"
        config = json.loads(path.read_text())
        config["model_cfg"]["quick_gelu"] = False
        path.write_text(json.dumps(config))

    monkeypatch.setattr(export, "_write_open_clip", forget_quickgelu)
    out = tmp_path / "out"
    code, stdout, stderr = cli(
        "export", ddp_checkpoint, "--out", out, "--arch", "biotrove-tiny-quickgelu"
    )
    assert code == 1 and stdout == ""
    assert "verification failed: the reloaded export differs from the source" in stderr
    assert not out.exists() and _leftovers(tmp_path) == []


def test_leftovers_of_a_killed_export_are_removed(tmp_path):
    import os
    import subprocess
    import sys

    from biotrove_cli.core.models.export.publish import _remove_stale_temps

    out = tmp_path / "model"
    # a temp folder of a process that no longer exists, and one of a live process
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    ).stdout.strip()
    stale = tmp_path / f".model.{dead}.abc123.export-tmp"
    live = tmp_path / f".model.{os.getpid()}.def456.export-tmp"
    stale.mkdir()
    live.mkdir()
    (stale / "open_clip_model.safetensors").write_bytes(b"half")
    _remove_stale_temps(out)
    assert not stale.exists() and live.exists()
