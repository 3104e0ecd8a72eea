"""The end-of-training export gathers the full state dict on every process and the main process saves it: a model
whose own parameters are only local shards (FSDP, DeepSpeed ZeRO-3) still exports complete weights, IA3 merged.

accelerate does not run FSDP on CPU processes, so these tests stand a recording accelerator in for a sharded run: it
hands out the full state dict, while the model it unwraps holds empty shards."""

import copy
from types import SimpleNamespace

import torch
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM, AutoTokenizer

from modeling_paircap.modeling_paircap import PairCapForConditionalGeneration
from paircap.training.config import TrainConfig
from paircap.training.loop import export_release
from paircap.training.stage_setups import folder_export, release_export
from paircap.training.trainable_parameters import configure_stage2


class ShardedRun:
    """An accelerator for one process of a sharded run: `get_state_dict` gathers `full` (a collective: every process
    must call it), `unwrap_model` gives the local module."""

    def __init__(self, full: dict[str, torch.Tensor], process_index: int):
        self.full, self.process_index, self.gathered = full, process_index, 0

    @property
    def is_main_process(self) -> bool:
        return self.process_index == 0

    def get_state_dict(self, model: torch.nn.Module) -> dict[str, torch.Tensor]:
        self.gathered += 1
        return self.full

    def unwrap_model(self, model: torch.nn.Module) -> torch.nn.Module:
        return model

    def wait_for_everyone(self) -> None:
        pass


def shard(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Leave `model` only empty local shards, as a non-owning FSDP rank holds; returns the full state dict before."""
    full = {name: tensor.detach().clone() for name, tensor in model.state_dict().items()}
    for parameter in model.parameters():
        parameter.data = torch.empty(0, dtype=parameter.dtype)
    return full


def export_on_two_processes(cfg: TrainConfig, export, model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Export `model`, left with empty shards, as process 1 and then process 0 do; returns its full state dict."""
    full = shard(model)
    for process_index in (1, 0):
        accelerator = ShardedRun(full, process_index)
        assert export_release(cfg, SimpleNamespace(export=export), accelerator, model, step=3) == cfg.export_dir
        assert accelerator.gathered == 1  # every process joins the gathering, not only the one that saves
        assert cfg.export_dir.is_dir() == accelerator.is_main_process
    return full


def test_a_sharded_release_exports_complete_with_ia3_merged(tiny_release, sine_wave, tmp_path):
    folder, model, processor = tiny_release
    trained = copy.deepcopy(model)
    configure_stage2(trained)
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():  # trained-looking IA3 vectors and projector, so the export has something to carry
        for name, parameter in trained.named_parameters():
            if "ia3_l" in name or name.startswith("multi_modal_projector."):
                parameter.add_(0.3 * torch.randn(parameter.shape, generator=generator))
    inputs = processor(audio=[sine_wave(2)], sampling_rate=48000)
    with torch.no_grad():
        expected = trained.eval()(**inputs).logits
    cfg = TrainConfig(stage="raft", model_name_or_path=str(folder), output_dir=str(tmp_path), train_pairs=["unused"])
    export_on_two_processes(cfg, release_export(cfg, processor, ["clotho"]), trained)
    release = PairCapForConditionalGeneration.from_pretrained(cfg.export_dir).eval()
    assert not any("ia3_l" in name or "base_layer" in name for name in load_file(cfg.export_dir / "model.safetensors"))
    with torch.no_grad():
        torch.testing.assert_close(release(**inputs).logits, expected)
    assert "trained: stage `raft` for 3 steps" in (cfg.export_dir / "README.md").read_text()


def test_a_sharded_folder_exports_complete(tiny_checkpoints, tmp_path):
    _, llama = tiny_checkpoints
    trained, tokenizer = AutoModelForCausalLM.from_pretrained(llama), AutoTokenizer.from_pretrained(llama)
    with torch.no_grad():
        for parameter in trained.parameters():
            parameter.add_(0.1)
    cfg = TrainConfig(stage="lm_text", model_name_or_path=str(llama), output_dir=str(tmp_path), train_pairs=["unused"])
    full = export_on_two_processes(cfg, folder_export(cfg, tokenizer), trained)
    exported = AutoModelForCausalLM.from_pretrained(cfg.export_dir).state_dict()
    assert exported.keys() == full.keys()
    assert all(torch.equal(exported[name], full[name]) for name in full)
    assert (cfg.export_dir / "tokenizer.json").is_file()
