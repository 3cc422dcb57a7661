"""The config system: precedence, all problems at once, presets, --print-config."""

from __future__ import annotations

import pytest
import yaml

from biotrove_cli.core import config
from biotrove_cli.core.errors import ConfigError, UsageError
from biotrove_cli.core.training.config import TrainConfig


def test_precedence_defaults_preset_file_flags_overrides(tmp_path):
    base = config.resolve(TrainConfig)
    assert base.optim.lr == 5e-4 and base.model.arch == "biotrove-tiny"
    preset = config.resolve(TrainConfig, preset="clip-o")
    assert preset.optim.lr == 5e-4 and preset.model.arch == "ViT-B-16-quickgelu"
    f = tmp_path / "c.yaml"
    f.write_text("optim:\n  lr: 1.0e-4\n  wd: 0.3\nepochs: 3\n")
    from_file = config.resolve(TrainConfig, preset="clip-o", config_file=f)
    assert (from_file.optim.lr, from_file.optim.wd, from_file.epochs) == (1e-4, 0.3, 3)
    assert from_file.optim.beta1 == 0.98  # untouched preset value survives
    flags = config.resolve(TrainConfig, preset="clip-o", config_file=f, flags={"epochs": 7})
    assert flags.epochs == 7 and flags.optim.lr == 1e-4
    over = config.resolve(
        TrainConfig,
        preset="clip-o",
        config_file=f,
        flags={"epochs": 7},
        overrides=["epochs=9", "optim.lr=2e-5", "data.text_type=sci"],
    )
    assert (over.epochs, over.optim.lr, over.data.text_type) == (9, 2e-5, "sci")


def test_every_problem_is_reported_at_once():
    with pytest.raises(ConfigError) as err:
        config.resolve(
            TrainConfig,
            overrides=[
                "optim.lrr=1",
                "epochs=many",
                "data.text_type=x",
                "precision=fp8",
                "data.batch_size=0",
                "oops",
            ],
        )
    problems = err.value.problems
    text = "\n".join(problems)
    assert "unknown key 'optim.lrr' (did you mean 'optim.lr'?)" in text
    assert "epochs: expected an integer, got 'many'" in text
    assert "data.text_type" in text and "precision" in text and "data.batch_size" in text
    assert "not key=value" in text
    assert len(problems) == 6
    assert err.value.exit_code == 2


def test_bad_yaml_and_missing_file(tmp_path):
    from biotrove_cli.core.errors import InputError

    bad = tmp_path / "bad.yaml"
    bad.write_text("optim: [1, 2\n")
    with pytest.raises(UsageError):
        config.resolve(TrainConfig, config_file=bad)
    with pytest.raises(InputError):
        config.resolve(TrainConfig, config_file=tmp_path / "none.yaml")
    with pytest.raises(UsageError) as err:
        config.resolve(TrainConfig, preset="clip-x")
    assert "clip-o" in err.value.hint


@pytest.mark.parametrize("name", config.list_presets())
def test_every_shipped_preset_is_valid_and_documented(name):
    cfg = config.resolve(TrainConfig, preset=name)
    assert cfg.validate() == []
    head = config.preset_header(name)
    assert head["command"].startswith(f"biotrove train --preset {name} ")
    assert head["description"]


MODEL_CARD = {  # BioTrove-CLIP model card / README training block
    "data": {"resampled": True, "text_type": "random", "batch_size": 4096, "workers": 8},
    "optim": {
        "lr": 5e-4,
        "wd": 4e-4,
        "beta1": 0.98,
        "beta2": 0.99,
        "eps": 1e-6,
        "warmup": 5000,
        "accum": 1,
    },
    "precision": "bf16",
    "local_loss": True,
    "gather_with_grad": True,
    "ddp_static_graph": True,
}


@pytest.mark.parametrize(
    "name,arch,init,epochs",
    [
        ("clip-o", "ViT-B-16-quickgelu", "ViT-B-16-quickgelu:openai", 40),
        ("clip-b", "ViT-B-16", "hf-hub:imageomics/bioclip", 8),
        ("clip-m", "ViT-L-14-quickgelu", "ViT-L-14-quickgelu:metaclip_fullcc", 12),
    ],
)
def test_print_config_shows_the_model_card(cli, name, arch, init, epochs):
    code, out, err = cli("train", "--preset", name, "--print-config")
    assert code == 0, err
    cfg = yaml.safe_load(out)
    assert cfg["model"]["arch"] == arch and cfg["model"]["init"] == init
    assert cfg["epochs"] == epochs and cfg["model"]["grad_checkpointing"] is True
    for group in ("data", "optim"):
        for key, value in MODEL_CARD[group].items():
            assert cfg[group][key] == value, (group, key)
    for key in ("precision", "local_loss", "gather_with_grad", "ddp_static_graph"):
        assert cfg[key] == MODEL_CARD[key]
    assert out.startswith("# biotrove train config")


def test_presets_command_lists_them(cli):
    code, out, _ = cli("presets", "--format", "json")
    import json

    rows = {r["preset"]: r for r in json.loads(out)}
    assert set(rows) == {"clip-o", "clip-b", "clip-m", "tiny"}
    assert rows["clip-m"]["arch"] == "ViT-L-14-quickgelu" and rows["tiny"]["precision"] == "fp32"
