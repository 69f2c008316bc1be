"""What a call application's media steps draw on, as the edge provides it: audio for `play` and
`say` (`AppMediaSources`, over the prompt library and the speech engines), and a home for the
WAV of each `record` step (`SpoolRecordings`: written locally, handed to the durable spool,
reported to the application as a URL of the control API).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import quote

from control.contracts.blob_keys import safe_call_id, step_recording_key
from edge.media.audio import level_gain


class PromptSource(Protocol):
    async def load(self, source: str) -> Any: ...


class SpeechSource(Protocol):
    async def synthesize(self, text: str, *, language: str | None,
                         voice: str | None) -> Any: ...


class Spool(Protocol):
    async def write_file(self, key: str, path: str | os.PathLike[str],
                         content_type: str = ...) -> None: ...


class AppMediaSources:
    """`edge.pbx.application.MediaSources` over the edge's prompt library and TTS."""

    def __init__(self, prompts: PromptSource, speech: SpeechSource) -> None:
        self._prompts = prompts
        self._speech = speech

    async def prompt(self, source: str) -> Any:
        return await self._prompts.load(source)

    async def speech(self, text: str, *, language: str | None, voice: str | None) -> Any:
        return await self._speech.synthesize(text, language=language, voice=voice)

    def gain(self, level: float) -> float:
        return level_gain(level)


class SpoolRecordings:
    """`edge.pbx.application.Recordings`: the engine writes `path_for`'s file; `publish` hands
    it to the spool (uploaded to the blob store with retries, never lost) under
    `recordings/calls/{call_id}/{n}.wav` and answers the API URL that serves it
    (`GET /api/v1/call-records/{call_id}/recordings/{n}`, scope `read`)."""

    def __init__(self, spool: Spool, directory: Path, base_url: Callable[[], str]) -> None:
        """`base_url()`: where the control API is reached (known once the HTTP server runs)."""
        self._spool = spool
        self._directory = directory
        self._base_url = base_url

    def path_for(self, call_id: str, index: int) -> str:
        self._directory.mkdir(parents=True, exist_ok=True)
        return str(self._directory / f"{safe_call_id(call_id)}-step{index}.wav")

    async def publish(self, path: str, call_id: str, index: int) -> str:
        await self._spool.write_file(step_recording_key(call_id, index), path, "audio/wav")
        base = self._base_url().rstrip("/")
        return f"{base}/api/v1/call-records/{quote(call_id, safe='')}/recordings/{index}"


__all__ = ["AppMediaSources", "SpoolRecordings"]
