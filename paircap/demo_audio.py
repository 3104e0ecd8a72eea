"""How the demo serves a retrieved neighbour's audio: the one route through which it reads KB clips for a browser.

Each neighbour table shown to a session gets fresh opaque tokens, each mapped to a clip whose recorded location passed
the containment rule (`modeling_paircap/audio_locations_paircap.py`: inside the folder given for its root, after links
are resolved, and audio by its first bytes). `GET gradio_api/paircap_neighbour/<token>` serves that clip's file, checked
again, until the session's next table or its end; an unknown token, or a file that no longer passes, is a 404. Nothing
is added to Gradio's own file route, so no other file on disk becomes reachable.
"""

from __future__ import annotations

import secrets
import threading
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path

from fastapi import Response
from fastapi.responses import FileResponse
from fastapi.routing import APIRoute

from modeling_paircap.audio_locations_paircap import (
    MEDIA_TYPES,
    AudioLocationError,
    audio_file_format,
    clip_audio_location,
)

# under Gradio's API prefix, relative to the page (a Space's or a reverse proxy's root path is kept; Gradio's Node
# front end forwards /gradio_api/* to Python)
NEIGHBOUR_ROUTE = "gradio_api/paircap_neighbour/"
MAX_SESSIONS = 10_000  # sessions whose tokens are kept (the oldest are dropped first), as Gradio's state capacity


class NeighbourAudio:
    """Per-session tokens for the KB clips a session was shown, and the route that serves them."""

    def __init__(self, kb, max_sessions: int = MAX_SESSIONS):
        self.kb = kb
        self.max_sessions = max_sessions
        self._sessions: OrderedDict[str, list[str]] = OrderedDict()
        self._clips: dict[str, int] = {}
        self._lock = threading.Lock()

    def issue(self, session: str, clips: Sequence[int]) -> list[str]:
        """Fresh tokens for the clips of the table now shown to `session`; the session's earlier tokens end."""
        tokens = [secrets.token_urlsafe(24) for _ in clips]
        with self._lock:
            self._drop(session)
            self._sessions[session] = tokens
            self._clips.update(zip(tokens, clips, strict=True))
            while len(self._sessions) > self.max_sessions:
                self._drop(next(iter(self._sessions)))
        return tokens

    def forget(self, session: str) -> None:
        """End a session's tokens (its page was closed)."""
        with self._lock:
            self._drop(session)

    def _drop(self, session: str) -> None:
        for token in self._sessions.pop(session, []):
            self._clips.pop(token, None)

    def file(self, token: str) -> tuple[Path, str] | None:
        """The file a token serves and its media type, checked again now; None for an unknown token or refused file."""
        with self._lock:
            clip = self._clips.get(token)
        if clip is None:
            return None
        try:
            location = clip_audio_location(*self.kb.recorded_location(clip), self.kb.audio_roots)
            if location is None or not Path(location).is_absolute():
                return None
            return Path(location), MEDIA_TYPES[audio_file_format(Path(location))]
        except AudioLocationError:
            return None

    def serve(self, token: str) -> Response:
        """The route's handler: the clip's bytes (ranges too, for seeking), or 404."""
        found = self.file(token)
        if found is None:
            return Response(status_code=404)
        path, media_type = found
        headers = {"X-Content-Type-Options": "nosniff", "Cache-Control": "private, max-age=3600"}
        return FileResponse(path, media_type=media_type, headers=headers, content_disposition_type="inline")

    def route(self) -> APIRoute:
        """The route to give the demo's FastAPI app (before Gradio's own)."""
        return APIRoute("/" + NEIGHBOUR_ROUTE + "{token}", self.serve, methods=["GET", "HEAD"], include_in_schema=False)
