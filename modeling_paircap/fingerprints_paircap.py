"""Weight fingerprints: what a knowledge base's embeddings (the retrieval CLAP) and clip tokens (the captioning audio
tower) are valid for, and a cheap state that says when a module's weights may have changed since they were checked."""

import hashlib
import json

import torch


def weights_fingerprint(module: torch.nn.Module, settings: dict) -> str:
    """SHA-256 of a module's weights, rounded to bfloat16 (so float32 and bfloat16 loads agree), and some settings:
    what a knowledge base's embeddings or tokens are valid for."""
    digest = hashlib.sha256()
    digest.update(json.dumps(settings, sort_keys=True).encode())
    for name, tensor in sorted(module.state_dict().items()):
        digest.update(name.encode())
        values = tensor.detach().to("cpu")
        values = values.to(torch.bfloat16).view(torch.int16) if values.is_floating_point() else values
        digest.update(values.contiguous().numpy().tobytes())
    return digest.hexdigest()


def weights_state(*modules: torch.nn.Module) -> tuple:
    """Identity and in-place version of every parameter and buffer of the modules: changes whenever they may have."""
    tensors = [tensor for module in modules for tensor in (*module.parameters(), *module.buffers())]
    return tuple((id(tensor), tensor._version) for tensor in tensors)


__all__ = ["weights_fingerprint", "weights_state"]
