"""The PairCap web demo as a Hugging Face Space, as it is: `python app.py`.

Settings come from the environment:
    PAIRCAP_MODEL        release: hub id, folder, or `mini` (the default: the offline toy release in a git checkout)
    PAIRCAP_KB           knowledge base: hub id or folder (default: the release's own)
    PAIRCAP_AUDIO_ROOTS  where the KB's clips live, `NAME=DIR` entries joined by `os.pathsep`, so that neighbours play;
                         a clip plays only from inside its root's DIR (`absolute=DIR` allows the KB's absolute paths
                         under DIR)
    PAIRCAP_HOST         the address to listen on off a Space (default 127.0.0.1: this machine only)
On a Space (`SYSTEM=spaces`), the Space's own `GRADIO_SERVER_NAME` (0.0.0.0) is the address; elsewhere it is ignored,
so that a variable meant for another app never opens this one to the network. `GRADIO_SERVER_PORT` sets the port.
"""

import os

from datasets_scripts.kb_recipes import root_entry
from paircap.demo import build_demo, launch_demo, space_host
from paircap.hub_access import go_offline_if_unreachable
from paircap.release_names import resolve_model

MODEL = resolve_model(os.environ.get("PAIRCAP_MODEL", "mini"))
KNOWLEDGE_BASE = os.environ.get("PAIRCAP_KB") or None
AUDIO_ROOTS = dict(root_entry(entry) for entry in os.environ.get("PAIRCAP_AUDIO_ROOTS", "").split(os.pathsep) if entry)

go_offline_if_unreachable([MODEL, KNOWLEDGE_BASE])
demo = build_demo(MODEL, knowledge_base=KNOWLEDGE_BASE, audio_roots=AUDIO_ROOTS)

if __name__ == "__main__":
    launch_demo(demo, space_host(os.environ))
