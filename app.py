"""The PairCap web demo as a Hugging Face Space, as it is: `python app.py`.

Settings come from the environment:
    PAIRCAP_MODEL        release: hub id, folder, or `mini` (the default: the offline toy release in a git checkout)
    PAIRCAP_KB           knowledge base: hub id or folder (default: the release's own)
    PAIRCAP_AUDIO_ROOTS  where the KB's clips live, `NAME=DIR` entries joined by `os.pathsep`, so that neighbours play
Gradio's own variables choose the address (`GRADIO_SERVER_NAME`, `GRADIO_SERVER_PORT`; a Space sets them).
"""

import os

from datasets_scripts.kb_recipes import parse_roots
from paircap.demo import build_demo, launch_demo
from paircap.hub_access import go_offline_if_unreachable
from paircap.releases import resolve_model

MODEL = resolve_model(os.environ.get("PAIRCAP_MODEL", "mini"))
KNOWLEDGE_BASE = os.environ.get("PAIRCAP_KB") or None
AUDIO_ROOTS = parse_roots(
    [entry for entry in os.environ.get("PAIRCAP_AUDIO_ROOTS", "").split(os.pathsep) if entry], "PAIRCAP_AUDIO_ROOTS"
)

go_offline_if_unreachable([MODEL, KNOWLEDGE_BASE])
demo = build_demo(MODEL, KNOWLEDGE_BASE, AUDIO_ROOTS)

if __name__ == "__main__":
    launch_demo(demo)
