"""The knowledge-base tools load a release's encoders alone (`PairCapEncoders`: CLAP and captioning audio tower): a
`paircap kb build` and `kb tokens` never build the language model nor the full model, and give the embeddings and
tokens the full model gives."""

import numpy as np
import pytest
import torch
from transformers import LlamaForCausalLM

from datasets_scripts.build_kb import build_knowledge_base, read_pairs
from datasets_scripts.kb_recipes import CorpusSpec
from modeling_paircap.encoders_paircap import PairCapEncoders
from modeling_paircap.knowledge_base_paircap import PairCapKnowledgeBase
from modeling_paircap.modeling_paircap import PairCapForConditionalGeneration
from paircap.cli import main
from paircap.releases import load_encoders


@pytest.fixture(autouse=True)
def verified_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("PAIRCAP_VERIFIED_CACHE", str(tmp_path / "verified-cache"))


def no_language_model(monkeypatch) -> None:
    """Building the LM, or the full model, fails from here on."""

    def refuse(self, *args, **kwargs):
        raise AssertionError(f"{type(self).__name__} was built: the KB tools must load the encoders alone")

    monkeypatch.setattr(LlamaForCausalLM, "__init__", refuse)
    monkeypatch.setattr(PairCapForConditionalGeneration, "__init__", refuse)


def kb_contents(folder) -> tuple[dict, dict, list]:
    """Per pair id its (audio, text) embeddings, the metadata's fingerprints, and every clip's tokens by audio id."""
    kb = PairCapKnowledgeBase.from_pretrained(folder)
    rows = kb.rows
    vectors = {
        pair: (np.asarray(audio), np.asarray(text))
        for pair, audio, text in zip(rows["pair_id"], rows["audio_embedding"], rows["text_embedding"], strict=True)
    }
    fingerprints = {"retrieval": kb.metadata.retrieval_fingerprint, "token": kb.metadata.token_fingerprint}
    audio_ids = kb.clips.column("audio_id").to_pylist()
    tokens = dict(zip(audio_ids, kb.tokens.get(list(range(len(audio_ids)))), strict=True))
    return vectors, fingerprints, tokens


def test_kb_build_and_tokens_load_only_the_encoders_and_match_the_full_model(
    tiny_release, corpora, shared_data, tmp_path, monkeypatch
):
    folder, model, processor = tiny_release
    built, reference = tmp_path / "kb", tmp_path / "reference"
    roots = {"clotho": corpora["clotho"]}
    pairs = read_pairs([CorpusSpec.parse("clotho:evaluation")], roots)
    recipe = {"name": "custom", "corpora": ["clotho:evaluation"]}
    build_knowledge_base(pairs, model, processor, reference, recipe, roots=roots, shard_size=4, num_workers=0)

    no_language_model(monkeypatch)
    common = ["--model", str(folder), "--root", f"clotho={corpora['clotho']}", "--num-workers", "0"]
    argv = ["kb", "build", "--corpus", "clotho:evaluation", "--output", str(built), "--shard-size", "4", *common]
    assert main([*argv, "--dtype", "float32"]) == 0
    vectors, fingerprints, tokens = kb_contents(built)
    expected_vectors, expected_fingerprints, expected_tokens = kb_contents(reference)
    assert fingerprints == expected_fingerprints and vectors.keys() == expected_vectors.keys()
    for pair, (audio, text) in expected_vectors.items():
        np.testing.assert_allclose(vectors[pair][0], audio, rtol=0, atol=1e-6, err_msg=pair)
        np.testing.assert_allclose(vectors[pair][1], text, rtol=0, atol=1e-6, err_msg=pair)
    assert tokens.keys() == expected_tokens.keys()
    for audio_id, expected in expected_tokens.items():
        torch.testing.assert_close(tokens[audio_id], expected, rtol=0, atol=1e-3, msg=audio_id)

    # the clips are links into the shared data, so their locations are recorded as absolute paths
    tokens_argv = ["kb", "tokens", "--kb", str(built), "--root", f"absolute={shared_data}", *common]
    assert main(tokens_argv) == 0  # auto dtype: float32 on CPU
    _, _, refreshed = kb_contents(built)
    for audio_id, expected in expected_tokens.items():
        torch.testing.assert_close(refreshed[audio_id], expected, rtol=0, atol=1e-3, msg=audio_id)


def test_the_encoders_load_alone_in_bfloat16_and_as_the_releases_own_code(tiny_release, monkeypatch, sine_wave):
    folder, model, processor = tiny_release
    no_language_model(monkeypatch)
    encoders, loaded_processor = load_encoders(str(folder), dtype=torch.bfloat16)
    assert type(encoders) is PairCapEncoders and not hasattr(encoders, "language_model")
    assert encoders.clap.audio_projection.linear1.weight.dtype == torch.bfloat16
    assert loaded_processor.prompt_template == processor.prompt_template
    # the fingerprints round the weights to bfloat16: a KB embedded in bfloat16 serves the float32 model
    assert encoders.retrieval_fingerprint() == model.retrieval_fingerprint()
    assert encoders.token_fingerprint() == model.token_fingerprint()
    inputs = processor(audio=[sine_wave(3.0)], sampling_rate=48000)
    with torch.no_grad():
        half = encoders.encode_audio(inputs["input_features"], inputs["audio_window_counts"])
        full = model.encode_audio(inputs["input_features"], inputs["audio_window_counts"])
    torch.testing.assert_close(half.audio_embeds.float(), full.audio_embeds, rtol=0, atol=0.05)

    remote, _ = load_encoders(str(folder), trust_remote_code=True)
    assert type(remote).__module__.startswith("transformers_modules.")
    assert type(remote).__module__.endswith("encoders_paircap") and type(remote).__name__ == "PairCapEncoders"
    assert remote.retrieval_fingerprint() == model.retrieval_fingerprint()
