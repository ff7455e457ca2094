"""Checkpoint weights of plain and PEFT (LoRA) models, saved and loaded back.

The reference for every reloaded model is the logits the original model gave at the moment
its checkpoint was saved; the reference for the saved base is the original with its adapter
disabled (peft's own switch)."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from conftest import make_generative_model, make_pairs

from t3vis.errors import CorruptRunError, InvalidInputError, T3VisError
from t3vis.models.loading import load_checkpoint_model
from t3vis.record.model_weights import save_model_weights
from t3vis.store.weights_folder import BASE_REFERENCE, check_weights_folder, load_failure

pytest.importorskip("peft")

AUTO = {"llama": "AutoModelForCausalLM", "gpt2": "AutoModelForCausalLM", "t5": "AutoModelForSeq2SeqLM"}


def _inputs(kind, tokenizer):
    sources, targets = make_pairs(3)
    tokenizer.pad_token = tokenizer.pad_token or tokenizer.eos_token
    inputs = dict(tokenizer(sources, return_tensors="pt", padding=True))
    if kind == "t5":
        labels = tokenizer(targets, return_tensors="pt", padding=True)["input_ids"]
        inputs["decoder_input_ids"] = torch.cat([torch.zeros_like(labels[:, :1]), labels[:, :-1]], dim=1)
    return inputs


def _logits(model, inputs):
    with torch.no_grad():
        return model(**inputs).logits


def _bytes(folder):
    return sum(p.stat().st_size for p in folder.iterdir())


def _perturb_lora(model, seed):
    torch.manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.5)


def _train_steps(model, inputs, steps=3):
    """A few SGD steps on the LoRA weights (the only trainable ones)."""
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.5)
    targets = inputs["input_ids"] if "decoder_input_ids" not in inputs else inputs["decoder_input_ids"]
    for _ in range(steps):
        loss = torch.nn.functional.cross_entropy(model(**inputs).logits.flatten(0, 1), targets.flatten())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()


def _lora_model(kind):
    model, tokenizer = make_generative_model(kind, lora=True)
    return model.double().eval(), tokenizer


def _load_as_reader(folder, auto_model, roots=None):
    """What Checkpoint.load_model does: check, load, trace a failure to its file."""
    check_weights_folder(folder, "weights of checkpoint 5")
    try:
        return load_checkpoint_model(folder, auto_model, roots=roots)
    except T3VisError:
        raise
    except Exception as e:
        raise load_failure(folder, "weights of checkpoint 5", e) from None


@pytest.mark.parametrize("kind", ["llama", "t5"])
def test_lora_checkpoints_hold_the_adapter_and_reload_exactly(kind, tmp_path):
    model, tokenizer = _lora_model(kind)
    inputs = _inputs(kind, tokenizer)
    run = tmp_path / "run"
    base_dir = run / "base_model"
    first, second = run / "checkpoints" / "1" / "weights", run / "checkpoints" / "2" / "weights"

    _perturb_lora(model, seed=1)
    at_first = _logits(model, inputs)
    saved_first = save_model_weights(model, tokenizer, first, base_dir=base_dir)
    base_file = base_dir / "model.safetensors"
    base_stat = base_file.stat()
    _train_steps(model, inputs)
    at_second = _logits(model, inputs)
    saved_second = save_model_weights(model, tokenizer, second, base_dir=base_dir)
    with model.disable_adapter():
        base_logits = _logits(model, inputs)

    # the checkpoints hold the adapter and tokenizer only; the base was written once
    for folder, saved in ((first, saved_first), (second, saved_second)):
        files = {p.name for p in folder.iterdir()}
        assert {"adapter_config.json", "adapter_model.safetensors", BASE_REFERENCE} <= files
        assert not files & {"model.safetensors", "config.json", "pytorch_model.bin"}
        assert (folder / "adapter_model.safetensors").stat().st_size < base_stat.st_size / 10
        assert saved.base_folder == base_dir and not saved.base_referenced
        assert not json.loads((folder / BASE_REFERENCE).read_text())["base"].startswith("/")
    assert saved_first.bytes_written == _bytes(first) + _bytes(base_dir)      # the base counted once ...
    assert saved_second.bytes_written == _bytes(second)                       # ... and not again
    assert base_file.stat().st_mtime_ns == base_stat.st_mtime_ns and base_file.stat().st_ino == base_stat.st_ino

    # the saved base is the base alone: its logits are the original's with the adapter disabled
    import transformers
    base_alone = getattr(transformers, AUTO[kind]).from_pretrained(base_dir, local_files_only=True).eval()
    torch.testing.assert_close(_logits(base_alone, inputs), base_logits, rtol=0, atol=1e-5)

    reloaded_first, _ = _load_as_reader(first, AUTO[kind], roots=[run.resolve()])
    reloaded_second, reloaded_tokenizer = load_checkpoint_model(second, AUTO[kind])
    assert not reloaded_first.training and reloaded_tokenizer.pad_token is not None
    torch.testing.assert_close(_logits(reloaded_first, inputs), at_first, rtol=0, atol=1e-5)
    torch.testing.assert_close(_logits(reloaded_second, inputs), at_second, rtol=0, atol=1e-5)
    assert (at_first - at_second).abs().max() > 1e-2                          # the checkpoints differ
    assert (at_first - base_logits).abs().max() > 1e-2                         # and the adapter matters


def test_a_base_loaded_from_a_local_folder_is_referenced_not_copied(tmp_path):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    plain, tokenizer = make_generative_model("llama")
    local = tmp_path / "models" / "tiny-llama"
    plain.double().save_pretrained(local)
    tokenizer.save_pretrained(local)
    base = AutoModelForCausalLM.from_pretrained(local, attn_implementation="eager", local_files_only=True)
    model = get_peft_model(base, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"])).eval()
    _perturb_lora(model, seed=2)
    inputs = _inputs("llama", tokenizer)
    expected = _logits(model, inputs)

    run = tmp_path / "run"
    weights = run / "checkpoints" / "1" / "weights"
    saved = save_model_weights(model, tokenizer, weights, base_dir=run / "base_model")
    assert not (run / "base_model").exists()
    assert saved.base_referenced and saved.base_folder == local.resolve()
    assert json.loads((weights / BASE_REFERENCE).read_text())["base"] == str(local.resolve())
    assert saved.bytes_written == _bytes(weights)

    with pytest.raises(CorruptRunError, match=f"{BASE_REFERENCE}.*outside"):
        _load_as_reader(weights, "AutoModelForCausalLM", roots=[run.resolve()])
    reloaded, _ = _load_as_reader(weights, "AutoModelForCausalLM", roots=[run.resolve(), local.resolve()])
    torch.testing.assert_close(_logits(reloaded, inputs), expected, rtol=0, atol=1e-5)


def test_a_base_symlinked_out_of_the_run_is_refused(tmp_path):
    model, tokenizer = _lora_model("llama")
    run = tmp_path / "run"
    weights = run / "checkpoints" / "1" / "weights"
    save_model_weights(model, tokenizer, weights, base_dir=run / "base_model")
    shutil.move(run / "base_model", tmp_path / "elsewhere")
    (run / "base_model").symlink_to(tmp_path / "elsewhere", target_is_directory=True)

    load_checkpoint_model(weights, "AutoModelForCausalLM")                    # unconfined: loads
    with pytest.raises(CorruptRunError, match=r"elsewhere.*refusing"):
        load_checkpoint_model(weights, "AutoModelForCausalLM", roots=[run.resolve()])


@pytest.fixture
def adapter_checkpoint(tmp_path):
    model, tokenizer = _lora_model("llama")
    run = tmp_path / "run"
    weights = run / "checkpoints" / "1" / "weights"
    save_model_weights(model, tokenizer, weights, base_dir=run / "base_model")
    return weights


def test_a_truncated_adapter_is_named(adapter_checkpoint):
    adapter = adapter_checkpoint / "adapter_model.safetensors"
    adapter.write_bytes(adapter.read_bytes()[:-40])
    with pytest.raises(CorruptRunError, match=r"adapter_model.safetensors is truncated"):
        _load_as_reader(adapter_checkpoint, "AutoModelForCausalLM")


def test_an_adapter_whose_tensors_do_not_fit_the_model_is_named(adapter_checkpoint):
    from safetensors.torch import load_file, save_file

    adapter = adapter_checkpoint / "adapter_model.safetensors"
    save_file({k: torch.zeros(3, 3) for k in load_file(adapter)}, adapter)    # a well-formed file, wrong shapes
    with pytest.raises(CorruptRunError, match=r"weights of checkpoint 5 do not load.*adapter_model.safetensors"):
        _load_as_reader(adapter_checkpoint, "AutoModelForCausalLM")


def test_a_damaged_adapter_config_is_named(adapter_checkpoint):
    config = adapter_checkpoint / "adapter_config.json"
    config.write_text(json.dumps({**json.loads(config.read_text()), "peft_type": "NO_SUCH_METHOD"}))
    with pytest.raises(CorruptRunError, match=r"adapter config .* does not load.*adapter_config.json"):
        _load_as_reader(adapter_checkpoint, "AutoModelForCausalLM")
    config.write_text("{")
    with pytest.raises(CorruptRunError, match=r"adapter config .* not valid JSON.*adapter_config.json"):
        _load_as_reader(adapter_checkpoint, "AutoModelForCausalLM")


def test_a_missing_base_reference_or_base_is_named(adapter_checkpoint):
    base_weights = adapter_checkpoint.parents[2] / "base_model" / "model.safetensors"
    base_weights.write_bytes(base_weights.read_bytes()[:-40])
    with pytest.raises(CorruptRunError, match=f"base model named in .*{BASE_REFERENCE}.*model.safetensors is trunc"):
        _load_as_reader(adapter_checkpoint, "AutoModelForCausalLM")
    (adapter_checkpoint / BASE_REFERENCE).unlink()
    with pytest.raises(CorruptRunError, match=f"base model reference .* is missing: .*{BASE_REFERENCE}"):
        _load_as_reader(adapter_checkpoint, "AutoModelForCausalLM")


@pytest.mark.parametrize("kind", ["llama", "t5"])
def test_plain_models_round_trip(kind, tmp_path):
    model, tokenizer = make_generative_model(kind)
    model.double().eval()
    inputs = _inputs(kind, tokenizer)
    weights = tmp_path / "weights"
    saved = save_model_weights(torch.nn.DataParallel(model), tokenizer, weights, base_dir=tmp_path / "base_model")
    assert saved.base_folder is None and not (tmp_path / "base_model").exists()
    assert (weights / "model.safetensors").is_file() and not (weights / BASE_REFERENCE).exists()
    reloaded, _ = _load_as_reader(weights, AUTO[kind])
    torch.testing.assert_close(_logits(reloaded, inputs), _logits(model, inputs), rtol=0, atol=1e-5)


def test_a_wrapped_lora_model_saves_its_adapter(tmp_path):
    model, tokenizer = _lora_model("llama")
    save_model_weights(torch.nn.DataParallel(model), tokenizer, tmp_path / "weights", base_dir=tmp_path / "base")
    assert (tmp_path / "weights" / "adapter_model.safetensors").is_file()
    assert (tmp_path / "base" / "model.safetensors").is_file()


def test_unsaveable_models_are_refused(tmp_path):
    model, tokenizer = _lora_model("llama")
    model.merge_adapter()
    with pytest.raises(InvalidInputError, match="unmerge_adapter"):
        save_model_weights(model, tokenizer, tmp_path / "weights", base_dir=tmp_path / "base")
    with pytest.raises(InvalidInputError, match="no save_pretrained"):
        save_model_weights(torch.nn.Linear(2, 2), tokenizer, tmp_path / "weights", base_dir=tmp_path / "base")
