"""Stage 2 as a peft adapter: the IA3 vectors plus the fully trained parts (projector, LM head, separate audio tower)
as `modules_to_save`, saved in peft's layout so that `PeftModel.from_pretrained` puts them on the stage's input release.

The adapter is written from the trained model's state dict (the one the merged export is made from), with peft's key
names: `base_model.model.<module>.ia3_l` for IA3 vectors and `base_model.model.<module>.<parameter>` for a module to
save (peft's `get_peft_model_state_dict` without the adapter name).
"""

from pathlib import Path

import torch
from peft import IA3Config, PeftConfig, PeftModel
from safetensors.torch import save_file

from modeling_paircap.modeling_paircap import PairCapForConditionalGeneration
from paircap.training.trainable_parameters import IA3_FEEDFORWARD_MODULES, IA3_TARGET_MODULES

ADAPTER_CONFIG_NAME = "adapter_config.json"
ADAPTER_WEIGHTS_NAME = "adapter_model.safetensors"
# the parts stage 2 trains whole, in the order they are listed in `modules_to_save`
TRAINED_MODULES = ("multi_modal_projector", "language_model.lm_head", "audio_tower")
PEFT_PREFIX = "base_model.model."
IA3_SUFFIX = ".ia3_l.default"


def language_model_pattern(names: tuple[str, ...]) -> str:
    """A peft `target_modules` regex (full match) for the language model's modules of these names, not the CLAP's."""
    return rf"language_model\..*\.({'|'.join(names)})"


def adapter_config(modules_to_save: list[str], base_model_name_or_path: str) -> IA3Config:
    """The stage-2 IA3 adapter on a whole PairCap model (the training injects the same vectors into its LM)."""
    return IA3Config(
        target_modules=language_model_pattern(IA3_TARGET_MODULES),
        feedforward_modules=language_model_pattern(IA3_FEEDFORWARD_MODULES),
        modules_to_save=modules_to_save,
        base_model_name_or_path=base_model_name_or_path,
        inference_mode=True,
        task_type=None,
    )


def trained_modules(model: torch.nn.Module) -> list[str]:
    """The parts of `TRAINED_MODULES` that `model` has and trains."""
    modules = dict(model.named_modules())
    return [
        name
        for name in TRAINED_MODULES
        if name in modules and any(parameter.requires_grad for parameter in modules[name].parameters())
    ]


def adapter_state_dict(
    model: torch.nn.Module, state_dict: dict[str, torch.Tensor], modules_to_save: list[str]
) -> dict[str, torch.Tensor]:
    """
    The adapter's tensors in peft's saved layout, taken from `state_dict` (the trained model's full one).

    Raises:
        ValueError: the model trains a parameter that is neither an IA3 vector nor in `modules_to_save` (e.g. the LM
            decoder under `train_language_model`), which an adapter would silently lose.
    """
    prefixes = tuple(f"{module}." for module in modules_to_save)
    stray = [
        name
        for name, parameter in model.named_parameters()
        if parameter.requires_grad and not (name.endswith(IA3_SUFFIX) or name.startswith(prefixes))
    ]
    if stray:
        raise ValueError(f"the adapter cannot hold trained weights outside IA3 and {modules_to_save}: {stray[:3]}")
    adapter = {}
    for name, tensor in state_dict.items():
        if name.endswith(IA3_SUFFIX):
            adapter[PEFT_PREFIX + name.removesuffix(".default")] = tensor
        elif name.startswith(prefixes):
            adapter[PEFT_PREFIX + name] = tensor
    return {name: tensor.detach().contiguous() for name, tensor in adapter.items()}


def save_adapter(
    model: torch.nn.Module, state_dict: dict[str, torch.Tensor], folder: Path, base_model_name_or_path: str
) -> Path:
    """Write `adapter_config.json`, `adapter_model.safetensors` and a short README into `folder`."""
    modules = trained_modules(model)
    tensors = adapter_state_dict(model, state_dict, modules)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    adapter_config(modules, base_model_name_or_path).save_pretrained(str(folder))
    save_file(tensors, str(folder / ADAPTER_WEIGHTS_NAME), metadata={"format": "pt"})
    (folder / "README.md").write_text(adapter_readme(base_model_name_or_path, modules), encoding="utf-8")
    return folder


def adapter_readme(base: str, modules: list[str]) -> str:
    tower_note = (
        "\nThe adapter holds a trained separate audio tower: on a release without one (`separate_audio_tower: false`),"
        " call `model.separate_audio_tower()` before `PeftModel.from_pretrained` (`load_adapter` does it).\n"
        if "audio_tower" in modules
        else ""
    )
    return (
        "---\nlibrary_name: peft\n"
        f"base_model: {base}\n---\n\n"
        f"# PairCap stage-2 adapter\n\nIA3 on the language model, with {', '.join(modules)} as `modules_to_save`.\n"
        f"{tower_note}\n"
        "```python\nfrom paircap.training.adapters import load_adapter\n"
        "from modeling_paircap.modeling_paircap import PairCapForConditionalGeneration\n\n"
        f'model = load_adapter(PairCapForConditionalGeneration.from_pretrained("{base}"), "<this folder>")\n```\n'
    )


def load_adapter(model: PairCapForConditionalGeneration, folder: str | Path) -> PeftModel:
    """
    `PeftModel.from_pretrained(model, folder)`, after giving `model` the separate audio tower the adapter trained when
    the release has none yet (the tower to save must exist to be replaced).
    """
    config = PeftConfig.from_pretrained(str(folder))
    if "audio_tower" in (config.modules_to_save or []):
        model.separate_audio_tower()
    return PeftModel.from_pretrained(model, str(folder))
