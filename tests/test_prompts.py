"""edge.io.prompts against a real HTTP origin (Starlette on uvicorn, 127.0.0.1, port 0) that
honours ETag / Last-Modified validators and counts what it is asked: URL and file sources,
WAV at 16 kHz and MP3 (encoded here with libmp3lame through ctypes), revalidation (304 and
changed content), the disk and blob store tiers, in-flight dedupe, and the sources refused."""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import email.utils
import hashlib
import logging
import os
import re
import shutil
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import httpx
import numpy as np
import numpy.typing as npt
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from control.store.local_blobs import LocalBlobStore
from edge.config import Config, ConfigError, media_cache_dir, parse_config
from edge.io.control_client import RequestSigner, build_client
from edge.io.http import HttpServer
from edge.io.prompts import (
    BadPromptSource,
    CachedAudio,
    PcmLru,
    PromptError,
    PromptLibrary,
    PromptMeta,
    PromptNotFound,
    PromptUnavailable,
    UnsupportedAudio,
    decode_audio,
    sniff_format,
)
from edge.media.audio import decode_wav, encode_wav
from tests.audio_checks import dominant_frequency

T = TypeVar("T")
Samples = npt.NDArray[np.int16]


def run(scenario: Callable[[], Awaitable[T]]) -> T:
    async def main() -> T:
        return await scenario()
    return asyncio.run(main())


def tone(freq: float, seconds: float, rate: int) -> Samples:
    t = np.arange(round(seconds * rate)) / rate
    return np.round(8000 * np.sin(2 * np.pi * freq * t)).astype(np.int16)


def freq_of(pcm: Samples) -> float:
    return dominant_frequency(pcm.astype(np.float64) / 32768.0, 8000)


def require_tool(name: str, package: str) -> None:
    """Skip without `name` here; in CI (where scripts/test.sh installs it) fail instead."""
    if shutil.which(name) is None:
        message = f"{name} is not installed (Debian package {package})"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)


# --- the origin ---------------------------------------------------------------------------------


@dataclass
class Resource:
    body: bytes
    etag: str | None = None
    last_modified: str | None = None
    status: int = 200
    content_type: str = "application/octet-stream"
    delay_s: float = 0.0


@dataclass
class Seen:
    path: str
    if_none_match: str | None
    if_modified_since: str | None
    signed: bool


@dataclass
class Origin:
    url: str = ""
    resources: dict[str, Resource] = field(default_factory=dict)
    seen: list[Seen] = field(default_factory=list)

    def count(self, path: str) -> int:
        return sum(1 for item in self.seen if item.path == path)


@asynccontextmanager
async def origin() -> AsyncIterator[Origin]:
    state = Origin()

    async def serve(request: Request) -> Response:
        path = "/" + request.path_params["name"]
        state.seen.append(Seen(path, request.headers.get("if-none-match"),
                               request.headers.get("if-modified-since"),
                               "x-sdpbx-signature" in request.headers))
        resource = state.resources.get(path)
        if resource is None:
            return Response(b"not here", status_code=404)
        if resource.delay_s:
            await asyncio.sleep(resource.delay_s)
        headers = {}
        if resource.etag:
            headers["ETag"] = resource.etag
        if resource.last_modified:
            headers["Last-Modified"] = resource.last_modified
        if resource.status == 200 and (
            (resource.etag and request.headers.get("if-none-match") == resource.etag)
            or (resource.last_modified and not resource.etag
                and request.headers.get("if-modified-since") == resource.last_modified)
        ):
            return Response(status_code=304, headers=headers)
        return Response(resource.body, status_code=resource.status, headers=headers,
                        media_type=resource.content_type)

    server = await HttpServer.start(
        Starlette(routes=[Route("/{name:path}", serve)]), "127.0.0.1", 0)
    state.url = f"http://127.0.0.1:{server.address[1]}"
    try:
        yield state
    finally:
        await server.close()


class Clock:
    def __init__(self, now: float = 1_700_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def library(tmp_path: Path, client: httpx.AsyncClient, clock: Clock, *,
            cache: str = "cache", blobs: LocalBlobStore | None = None,
            revalidate_s: float = 300.0, timeout_s: float = 10.0,
            max_bytes: int = 20 * 2**20) -> PromptLibrary:
    return PromptLibrary(prompts_dir=tmp_path / "prompts", cache_dir=tmp_path / cache,
                         http_client=client, blobs=blobs, clock=clock,
                         revalidate_s=revalidate_s, timeout_s=timeout_s, max_bytes=max_bytes)


WAV_1K = encode_wav(tone(1000, 0.5, 16000), 16000)
WAV_500 = encode_wav(tone(500, 0.5, 16000), 16000)


# --- URL prompts ----------------------------------------------------------------------------------


def test_a_16khz_wav_url_is_decoded_to_8khz(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with origin() as server, httpx.AsyncClient() as client:
            server.resources["/a.wav"] = Resource(WAV_1K, etag='"v1"')
            lib = library(tmp_path, client, Clock())
            pcm = await lib.load(server.url + "/a.wav")
            assert pcm.dtype == np.int16 and pcm.ndim == 1
            assert len(pcm) == 4000  # 0.5 s at 8 kHz
            assert abs(freq_of(pcm) - 1000) < 10
            assert np.array_equal(pcm, decode_wav(WAV_1K))
            assert not pcm.flags.writeable  # shared by every call that plays it
            await lib.aclose()

    run(scenario)


def test_a_cached_url_is_not_fetched_again_within_the_revalidation_window(
        tmp_path: Path) -> None:
    async def scenario() -> None:
        async with origin() as server, httpx.AsyncClient() as client:
            server.resources["/a.wav"] = Resource(WAV_1K, etag='"v1"')
            clock = Clock()
            lib = library(tmp_path, client, clock, revalidate_s=300)
            first = await lib.load(server.url + "/a.wav")
            clock.now += 299
            again = await lib.load(server.url + "/a.wav")
            assert again is first
            assert server.count("/a.wav") == 1
            await lib.aclose()

    run(scenario)


def test_revalidation_304_keeps_the_cached_audio(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with origin() as server, httpx.AsyncClient() as client:
            server.resources["/a.wav"] = Resource(WAV_1K, etag='"v1"')
            clock = Clock()
            lib = library(tmp_path, client, clock, revalidate_s=300)
            first = await lib.load(server.url + "/a.wav")
            clock.now += 301
            again = await lib.load(server.url + "/a.wav")
            assert again is first  # not decoded again
            assert [s.if_none_match for s in server.seen] == [None, '"v1"']
            # ... and the 304 restarted the window.
            clock.now += 200
            await lib.load(server.url + "/a.wav")
            assert server.count("/a.wav") == 2
            meta_file = tmp_path / "cache" / "prompts" / (
                hashlib.sha256((server.url + "/a.wav").encode()).hexdigest() + ".json")
            meta = PromptMeta.model_validate_json(meta_file.read_bytes())
            assert meta.checked_at == clock.now - 200 and meta.etag == '"v1"'
            await lib.aclose()

    run(scenario)


def test_revalidation_brings_changed_content(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with origin() as server, httpx.AsyncClient() as client:
            server.resources["/a.wav"] = Resource(WAV_1K, etag='"v1"')
            clock = Clock()
            lib = library(tmp_path, client, clock, revalidate_s=300)
            url = server.url + "/a.wav"
            assert abs(freq_of(await lib.load(url)) - 1000) < 10
            server.resources["/a.wav"] = Resource(WAV_500, etag='"v2"')
            clock.now += 60
            assert abs(freq_of(await lib.load(url)) - 1000) < 10  # still within the window
            clock.now += 300
            changed = await lib.load(url)
            assert abs(freq_of(changed) - 500) < 10
            assert [s.if_none_match for s in server.seen] == [None, '"v1"']
            # The disk copy is the new one: a fresh library (a restart) plays 500 Hz, unasked.
            restarted = library(tmp_path, client, clock, revalidate_s=300)
            assert np.array_equal(await restarted.load(url), changed)
            assert server.count("/a.wav") == 2
            await lib.aclose()
            await restarted.aclose()

    run(scenario)


def test_last_modified_is_sent_as_if_modified_since(tmp_path: Path) -> None:
    stamp = email.utils.formatdate(1_600_000_000, usegmt=True)

    async def scenario() -> None:
        async with origin() as server, httpx.AsyncClient() as client:
            server.resources["/lm.wav"] = Resource(WAV_1K, last_modified=stamp)
            clock = Clock()
            lib = library(tmp_path, client, clock, revalidate_s=10)
            first = await lib.load(server.url + "/lm.wav")
            clock.now += 11
            assert await lib.load(server.url + "/lm.wav") is first
            assert [s.if_modified_since for s in server.seen] == [None, stamp]
            await lib.aclose()

    run(scenario)


def test_revalidate_zero_asks_the_origin_before_every_play(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with origin() as server, httpx.AsyncClient() as client:
            server.resources["/a.wav"] = Resource(WAV_1K, etag='"v1"')
            lib = library(tmp_path, client, Clock(), revalidate_s=0)
            for _ in range(3):
                await lib.load(server.url + "/a.wav")
            assert [s.if_none_match for s in server.seen] == [None, '"v1"', '"v1"']
            await lib.aclose()

    run(scenario)


def test_the_disk_cache_survives_a_restart_with_its_validators(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with origin() as server, httpx.AsyncClient() as client:
            server.resources["/a.wav"] = Resource(WAV_1K, etag='"v1"')
            clock = Clock()
            url = server.url + "/a.wav"
            first = library(tmp_path, client, clock)
            pcm = await first.load(url)
            await first.aclose()
            second = library(tmp_path, client, clock)  # empty memory, same folder
            assert np.array_equal(await second.load(url), pcm)
            assert server.count("/a.wav") == 1
            clock.now += 301
            assert np.array_equal(await second.load(url), pcm)
            assert [s.if_none_match for s in server.seen] == [None, '"v1"']
            await second.aclose()

    run(scenario)


def test_other_edges_take_the_prompt_from_the_blob_store(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with origin() as server, httpx.AsyncClient() as client:
            server.resources["/a.wav"] = Resource(WAV_1K, etag='"v1"')
            blobs = LocalBlobStore(tmp_path / "blobs")
            clock = Clock()
            url = server.url + "/a.wav"
            edge_a = library(tmp_path, client, clock, cache="cache-a", blobs=blobs)
            pcm = await edge_a.load(url)
            await edge_a.flush()
            digest = hashlib.sha256(url.encode()).hexdigest()
            stored = await blobs.get(f"prompts/{digest}.wav")
            assert np.array_equal(decode_wav(stored), pcm)  # the decoded 8 kHz WAV
            assert PromptMeta.model_validate_json(
                await blobs.get(f"prompts/{digest}.json")).etag == '"v1"'
            edge_b = library(tmp_path, client, clock, cache="cache-b", blobs=blobs)
            assert np.array_equal(await edge_b.load(url), pcm)
            assert server.count("/a.wav") == 1  # edge b never asked the origin
            assert (tmp_path / "cache-b" / "prompts" / f"{digest}.wav").is_file()
            # A blob store without the prompt is a miss, not an error.
            edge_c = library(tmp_path, client, clock, cache="cache-c",
                             blobs=LocalBlobStore(tmp_path / "empty"))
            assert np.array_equal(await edge_c.load(url), pcm)
            assert server.count("/a.wav") == 2
            for lib in (edge_a, edge_b, edge_c):
                await lib.aclose()

    run(scenario)


def test_concurrent_loads_of_one_url_fetch_it_once(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with origin() as server, httpx.AsyncClient() as client:
            server.resources["/slow.wav"] = Resource(WAV_1K, etag='"v1"', delay_s=0.2)
            server.resources["/other.wav"] = Resource(WAV_500, delay_s=0.2)
            lib = library(tmp_path, client, Clock())
            url = server.url + "/slow.wav"
            results = await asyncio.gather(*(lib.load(url) for _ in range(10)),
                                           lib.load(server.url + "/other.wav"))
            assert server.count("/slow.wav") == 1 and server.count("/other.wav") == 1
            assert all(result is results[0] for result in results[:10])
            assert abs(freq_of(results[10]) - 500) < 10
            await lib.aclose()

    run(scenario)


def test_a_cancelled_caller_does_not_cancel_the_fetch_others_wait_for(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with origin() as server, httpx.AsyncClient() as client:
            server.resources["/slow.wav"] = Resource(WAV_1K, delay_s=0.2)
            lib = library(tmp_path, client, Clock())
            url = server.url + "/slow.wav"
            hung_up = asyncio.create_task(lib.load(url))
            waiting = asyncio.create_task(lib.load(url))
            await asyncio.sleep(0.05)
            hung_up.cancel()
            pcm = await waiting
            assert len(pcm) == 4000 and hung_up.cancelled()
            assert server.count("/slow.wav") == 1
            await lib.aclose()

    run(scenario)


def test_a_failing_origin_plays_the_stale_copy(tmp_path: Path,
                                               caplog: pytest.LogCaptureFixture) -> None:
    async def scenario() -> None:
        async with origin() as server, httpx.AsyncClient() as client:
            server.resources["/a.wav"] = Resource(WAV_1K, etag='"v1"')
            clock = Clock()
            lib = library(tmp_path, client, clock)
            url = server.url + "/a.wav"
            pcm = await lib.load(url)
            server.resources["/a.wav"] = Resource(b"oops", status=503)
            clock.now += 301
            with caplog.at_level(logging.WARNING, logger="sdpbx.prompts"):
                assert await lib.load(url) is pcm
            assert "cached copy" in caplog.text and "503" in caplog.text
            clock.now += 10
            await lib.load(url)  # not asked again at once
            assert server.count("/a.wav") == 2
            # Gone for good (404) is not an outage: the prompt is not played.
            server.resources.pop("/a.wav")
            clock.now += 301
            with pytest.raises(PromptNotFound, match="404"):
                await lib.load(url)
            await lib.aclose()

    run(scenario)


@pytest.mark.parametrize(
    ("resource", "error", "message"),
    [
        (None, PromptNotFound, "answered 404"),
        (Resource(b"broken", status=500), PromptUnavailable, "answered 500"),
        (Resource(b"<!DOCTYPE html><html>login</html>", content_type="text/html"),
         UnsupportedAudio, "HTML page"),
        (Resource(b"OggS" + bytes(100)), UnsupportedAudio, "Ogg"),
        (Resource(WAV_1K, delay_s=1.0), PromptUnavailable, "within 0.3 s"),
        (Resource(bytes(5000)), UnsupportedAudio, "not WAV or MP3"),
    ],
    ids=["404", "500", "html", "ogg", "timeout", "zeros"],
)
def test_url_failures_are_clear_errors(tmp_path: Path, resource: Resource | None,
                                       error: type[PromptError], message: str) -> None:
    async def scenario() -> None:
        async with origin() as server, httpx.AsyncClient() as client:
            if resource is not None:
                server.resources["/x"] = resource
            lib = library(tmp_path, client, Clock(), timeout_s=0.3)
            with pytest.raises(error, match=message):
                await lib.load(server.url + "/x?token=secret")
            await lib.aclose()

    run(scenario)


def test_a_url_error_does_not_show_its_query_string(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with origin() as server, httpx.AsyncClient() as client:
            lib = library(tmp_path, client, Clock())
            with pytest.raises(PromptNotFound) as caught:
                await lib.load(server.url + "/missing.wav?token=secret")
            assert "secret" not in str(caught.value) and "/missing.wav" in str(caught.value)
            await lib.aclose()

    run(scenario)


def test_the_size_cap_holds_with_and_without_content_length(tmp_path: Path) -> None:
    big = encode_wav(tone(1000, 2.0, 16000), 16000)  # 64 KB

    async def streamed(request: Request) -> Response:
        from starlette.responses import StreamingResponse

        async def chunks() -> AsyncIterator[bytes]:
            for start in range(0, len(big), 8192):
                yield big[start:start + 8192]
        return StreamingResponse(chunks())  # chunked: no Content-Length

    async def scenario() -> None:
        server = await HttpServer.start(Starlette(routes=[Route("/s", streamed)]),
                                        "127.0.0.1", 0)
        try:
            async with origin() as plain, httpx.AsyncClient() as client:
                plain.resources["/big.wav"] = Resource(big)
                lib = library(tmp_path, client, Clock(), max_bytes=32_000)
                with pytest.raises(PromptUnavailable, match="more than 32000"):
                    await lib.load(plain.url + "/big.wav")
                with pytest.raises(PromptUnavailable, match="larger than 32000"):
                    await lib.load(f"http://127.0.0.1:{server.address[1]}/s")
                roomy = library(tmp_path, client, Clock(), max_bytes=100_000)
                assert len(await roomy.load(f"http://127.0.0.1:{server.address[1]}/s")) == 16000
                await lib.aclose()
                await roomy.aclose()
        finally:
            await server.close()

    run(scenario)


def test_the_edge_pooled_client_fetches_prompts(tmp_path: Path) -> None:
    """The edge's own client (signing hook, lambda:/control: mounts) works for GETs, and
    redirects are followed."""
    async def scenario() -> None:
        async with origin() as server:
            client = build_client(signer=RequestSigner("secret", "k1"))
            try:
                server.resources["/a.wav"] = Resource(WAV_1K)
                lib = library(tmp_path, client, Clock())
                assert len(await lib.load(server.url + "/a.wav")) == 4000
                assert server.seen[0].signed
                await lib.aclose()
            finally:
                await client.aclose()

    run(scenario)


# --- formats --------------------------------------------------------------------------------------


def encode_mp3(pcm: Samples, rate: int) -> bytes:
    """MP3 bytes through libmp3lame (the `libmp3lame0` Debian package) via ctypes: the `lame`
    command is not installed here, the library usually is (ffmpeg depends on it)."""
    name = ctypes.util.find_library("mp3lame") or "libmp3lame.so.0"
    try:
        lame = ctypes.CDLL(name)
    except OSError:
        message = "libmp3lame is not installed (Debian package libmp3lame0): no MP3 to test"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    lame.lame_init.restype = ctypes.c_void_p
    handle = ctypes.c_void_p(lame.lame_init())
    assert handle.value, "lame_init failed"
    try:
        lame.lame_set_in_samplerate(handle, rate)
        lame.lame_set_num_channels(handle, 1)
        lame.lame_set_mode(handle, 3)  # MONO
        lame.lame_set_brate(handle, 32)
        assert lame.lame_init_params(handle) == 0
        samples = np.ascontiguousarray(pcm, dtype=np.int16)
        pointer = samples.ctypes.data_as(ctypes.POINTER(ctypes.c_short))
        out = ctypes.create_string_buffer(len(samples) * 5 // 4 + 7200)
        size = lame.lame_encode_buffer(handle, pointer, pointer, len(samples), out, len(out))
        assert size >= 0
        data = out.raw[:size]
        size = lame.lame_encode_flush(handle, out, len(out))
        assert size >= 0
        return data + out.raw[:size]
    finally:
        lame.lame_close(handle)


def test_an_mp3_url_is_decoded_and_resampled(tmp_path: Path) -> None:
    require_tool("mpg123", "mpg123")
    mp3 = encode_mp3(tone(1000, 1.0, 16000), 16000)
    assert sniff_format(mp3) == "mp3"

    async def scenario() -> None:
        async with origin() as server, httpx.AsyncClient() as client:
            # Sniffed by content: an MP3 without a telling name, a WAV named .mp3.
            server.resources["/audio"] = Resource(mp3, content_type="audio/mpeg")
            server.resources["/really-a-wav.mp3"] = Resource(WAV_500)
            lib = library(tmp_path, client, Clock())
            pcm = await lib.load(server.url + "/audio")
            # 1 s, plus the encoder's delay and padding (at most two 576-sample granules).
            assert 8000 <= len(pcm) <= 8000 + 1152
            assert abs(freq_of(pcm) - 1000) < 10
            assert np.sqrt(np.mean(pcm.astype(np.float64) ** 2)) > 3000  # 8000 peak sine
            assert abs(freq_of(await lib.load(server.url + "/really-a-wav.mp3")) - 500) < 10
            await lib.aclose()

    run(scenario)


def test_mp3_without_mpg123_is_a_clear_error() -> None:
    async def scenario() -> None:
        with pytest.raises(UnsupportedAudio, match="Debian package mpg123"):
            await decode_audio(b"ID3" + bytes(500), mpg123="/nonexistent/mpg123")

    run(scenario)


def test_undecodable_mp3_is_a_clear_error() -> None:
    require_tool("mpg123", "mpg123")

    async def scenario() -> None:
        with pytest.raises(UnsupportedAudio, match="MP3 decoding failed"):
            await decode_audio(b"\xff\xfb\x90\x00" + bytes(200), name="garbage")

    run(scenario)


@pytest.mark.parametrize(
    ("data", "kind"),
    [
        (WAV_1K, "wav"),
        (b"ID3\x04\x00" + bytes(20), "mp3"),
        (b"\xff\xfb\x90\x64" + bytes(20), "mp3"),  # MPEG-1 layer III, 128 kbit/s, 44.1 kHz
        (b"\xff\xf3\x48\xc4" + bytes(20), "mp3"),  # MPEG-2 layer III (lame's 16 kHz output)
        (b"\xff\xf1\x50\x80" + bytes(20), None),  # AAC ADTS: layer bits 00
        (b"\xff\xfb\xf0\x64" + bytes(20), None),  # bitrate index 1111 is invalid
        (b"OggS" + bytes(20), None),
        (b"RIFF\x00\x00\x00\x00AVI " + bytes(20), None),
        (b"", None),
    ],
)
def test_sniff_format(data: bytes, kind: str | None) -> None:
    assert sniff_format(data) == kind


# --- file prompts ---------------------------------------------------------------------------------


def test_file_prompts_are_read_under_the_prompts_folder(tmp_path: Path) -> None:
    folder = tmp_path / "prompts" / "fr"
    folder.mkdir(parents=True)
    (folder / "menu.wav").write_bytes(WAV_1K)

    async def scenario() -> None:
        async with httpx.AsyncClient() as client:
            lib = library(tmp_path, client, Clock())
            first = await lib.load("fr/menu.wav")
            assert abs(freq_of(first) - 1000) < 10 and len(first) == 4000
            assert await lib.load("fr/menu.wav") is first  # unchanged file: from memory
            (folder / "menu.wav").write_bytes(WAV_500 + b"\x00\x00")  # new size and mtime
            assert abs(freq_of(await lib.load("fr/menu.wav")) - 500) < 10
            with pytest.raises(PromptNotFound, match=re.escape("no prompt file 'fr/none.wav'")):
                await lib.load("fr/none.wav")
            with pytest.raises(PromptNotFound, match="not a file"):
                await lib.load("fr")
            (folder / "notes.txt").write_bytes(b"call me back")
            with pytest.raises(UnsupportedAudio, match="not WAV or MP3"):
                await lib.load("fr/notes.txt")
            await lib.aclose()

    run(scenario)


@pytest.mark.parametrize(
    "source",
    ["", "/etc/passwd", "../secret.wav", "fr/../../secret.wav", "fr/..", "./a.wav",
     "fr//a.wav", "fr/", "fr\\a.wav", "a\x00.wav", "a\n.wav", "file:///etc/passwd",
     "ftp://127.0.0.1/a.wav", "lambda:my-function", "control:/x", "C:/a.wav", "http://"],
)
def test_sources_that_could_leave_the_prompts_folder_are_refused(tmp_path: Path,
                                                                 source: str) -> None:
    (tmp_path / "secret.wav").write_bytes(WAV_1K)

    async def scenario() -> None:
        async with httpx.AsyncClient() as client:
            lib = library(tmp_path, client, Clock())
            with pytest.raises(BadPromptSource):
                await lib.load(source)
            await lib.aclose()

    run(scenario)


# --- memory and config ----------------------------------------------------------------------------


def test_the_memory_cache_is_bounded_by_bytes() -> None:
    lru = PcmLru(max_bytes=10_000)
    for index in range(4):
        lru.put(f"k{index}", CachedAudio(np.zeros(2000, dtype=np.int16)))  # 4000 bytes each
    assert lru.size == 8000 and len(lru) == 2
    assert lru.get("k0") is None and lru.get("k1") is None
    assert lru.get("k2") is not None  # now the most recently used
    lru.put("k4", CachedAudio(np.zeros(2000, dtype=np.int16)))
    assert lru.get("k3") is None and lru.get("k2") is not None
    lru.put("huge", CachedAudio(np.zeros(6000, dtype=np.int16)))  # larger than the budget
    assert lru.get("huge") is None and lru.size <= 10_000


def test_memory_eviction_falls_back_to_the_disk_copy(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with origin() as server, httpx.AsyncClient() as client:
            server.resources["/a.wav"] = Resource(WAV_1K)
            server.resources["/b.wav"] = Resource(WAV_500)
            lib = PromptLibrary(prompts_dir=tmp_path, cache_dir=tmp_path / "cache",
                                http_client=client, memory=PcmLru(max_bytes=9000),
                                clock=Clock())
            a = await lib.load(server.url + "/a.wav")  # 8000 bytes
            await lib.load(server.url + "/b.wav")  # evicts a
            assert len(lib.memory) == 1
            assert np.array_equal(await lib.load(server.url + "/a.wav"), a)
            assert server.count("/a.wav") == 1
            await lib.aclose()

    run(scenario)


def test_media_config_keys() -> None:
    default = Config()
    assert default.media.prompts_dir == "./prompts"
    assert default.media.prompt_revalidate_s == 300
    assert media_cache_dir(default) == os.path.join("./data/spool", "cache")
    config = parse_config(
        '[store]\nspool_path = "/var/spool/sdpbx"\n'
        '[media]\nprompts_dir = "/srv/prompts"\nprompt_revalidate_s = 0\n'
        'prompt_timeout_ms = 2000\nprompt_max_bytes = 1048576\nmemory_cache_mb = 8\n')
    assert media_cache_dir(config) == "/var/spool/sdpbx/cache"
    assert parse_config('[media]\ncache_dir = "/tmp/c"\n').media.cache_dir == "/tmp/c"
    with pytest.raises(ConfigError, match=re.escape("media.prompt_revalidate_s")):
        parse_config("[media]\nprompt_revalidate_s = -1\n")

    async def scenario() -> None:
        async with httpx.AsyncClient() as client:
            lib = PromptLibrary.from_config(config, http_client=client, blobs=None)
            assert lib.prompts_dir == Path("/srv/prompts") and lib.revalidate_s == 0
            assert lib.timeout_s == 2.0 and lib.max_bytes == 1048576
            assert lib.memory.max_bytes == 8 * 2**20
            assert lib.cache.folder == Path("/var/spool/sdpbx/cache/prompts")

    run(scenario)
