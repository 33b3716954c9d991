"""The dslm-zoo command line, torch.hub entry points and the demo."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import dslm_zoo
from dslm_zoo.cli import main

ROOT = Path(__file__).resolve().parents[1]


def test_list_filters(capsys):
    assert main(["list", "dslm_vit*"]) == 0
    out = capsys.readouterr().out.split()
    assert out == dslm_zoo.list_models("dslm_vit*") and out


def test_list_nothing_matches_is_an_error(capsys):
    assert main(["list", "resnet*"]) == 1
    assert "no models match" in capsys.readouterr().err


def test_list_pretrained_reports_honestly(capsys):
    rc = main(["list", "--pretrained"])
    names = capsys.readouterr().out.split()
    assert names == dslm_zoo.list_pretrained()
    assert rc == (0 if names else 1)


def test_info_json(capsys):
    assert main(["info", "dslm_bert_1000L", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["depth"] == 1000 and info["config"]["embed_dim"] == 128
    assert info["num_params"] == sum(p.numel() for p in dslm_zoo.create_model("dslm_bert_1000L", device="meta").parameters())
    assert info["pretrained_cfg"]["paper_ids"] == ["arXiv:2403.09635"]


def test_info_text(capsys):
    assert main(["info", "dslm_vit_tiny"]) == 0
    out = capsys.readouterr().out
    assert "dslm_vit_tiny" in out and "input_size" in out and "no released weights" in out


def test_info_unknown_model_suggests_close_names(capsys):
    assert main(["info", "dslm_bert_1000"]) == 2
    assert "dslm_bert_1000L" in capsys.readouterr().err


def test_console_script_is_installed():
    exe = Path(sys.executable).with_name("dslm-zoo")
    out = subprocess.run([str(exe), "list", "dslm_gpt*"], capture_output=True, text=True, check=True).stdout
    assert "dslm_gpt_1000L" in out


def test_hubconf_exposes_every_model_and_loads_locally():
    m = torch.hub.load(str(ROOT), "dslm_vit_tiny", source="local", pretrained=False, num_classes=3)
    assert isinstance(m, torch.nn.Module) and m(torch.randn(1, 3, 32, 32)).shape == (1, 3)
    import importlib.util

    spec = importlib.util.spec_from_file_location("hubconf_under_test", ROOT / "hubconf.py")
    hub = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(hub)
    assert all(callable(getattr(hub, n)) for n in dslm_zoo.list_models())
    assert {"torch", "timm", "safetensors"} <= set(hub.dependencies)


def test_demo_runs(capsys, tmp_path, monkeypatch):
    from dslm_zoo.demo import run_demo

    monkeypatch.chdir(tmp_path)  # the demo's training run writes out/demo_tiny_mlm under the working directory
    run_demo()
    out = capsys.readouterr().out
    assert "dslm_bert_tiny" in out and "dslm_vit_1000L" in out and "finite=True" in out
    assert "finite=False" not in out
    assert "masked-LM loss" in out and "validation" in out
