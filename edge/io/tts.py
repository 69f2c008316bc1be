"""Text to speech for say/talk steps: `Speech.synthesize(text, language=, voice=)` gives 8 kHz
mono int16 PCM from one of two engines, cached by sha256(engine, voice, language, text).

`EspeakEngine` runs the local `espeak-ng` (text on stdin, WAV on stdout, bounded time);
`PollyEngine` calls Amazon Polly's SynthesizeSpeech (aioboto3; 16-bit PCM at 8000 Hz, so no
resampling). Voices and languages use Vonage's names where they map: a language "en-US" picks
espeak-ng's "en-us" or a Polly voice of en-US; a voice the engine does not have falls back to the
language's (logged once per name). Speech is cached like URL prompts (edge.io.prompts): memory
LRU, `<cache_dir>/tts/<sha256>.wav`, and the blob store's `tts/<sha256>.wav`; it never expires,
since the same engine, voice and text give the same audio.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import json
import logging
import os
import re
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from control.store.aws import (
    SDK_ERRORS,
    ClientOptions,
    client_config,
    resolve_region,
    shared_session,
)
from control.store.ports import BlobStore
from edge.config import Config, media_cache_dir
from edge.io.prompts import AudioCache, CachedAudio, Coalescer, PcmLru, Samples, run_pipe
from edge.media.audio import AudioFormatError, decode_wav

log = logging.getLogger("sdpbx.tts")

__all__ = [
    "EspeakEngine",
    "EspeakVoices",
    "PollyEngine",
    "Speech",
    "SpeechError",
    "TtsEngine",
]

MAX_CHARS = 3000  # Polly's limit for one request (billed characters); espeak takes it too
DEFAULT_LANGUAGE = "en-US"
_MAX_WAV_BYTES = 64 * 1024 * 1024  # espeak-ng at 22050 Hz: about 25 minutes of speech
_WARNED_MAX = 256


class SpeechError(Exception):
    """Speech could not be made: the message says which engine and why."""


class TtsEngine(Protocol):
    """One speech engine. `name` goes into the cache key."""

    @property
    def name(self) -> str: ...

    async def synthesize(self, text: str, *, language: str | None,
                         voice: str | None) -> Samples: ...

    async def aclose(self) -> None: ...


def _is_ssml(text: str) -> bool:
    return text.lstrip().startswith("<speak")


class _WarnOnce:
    """Log an unknown voice once per name, not once per call (bounded)."""

    def __init__(self) -> None:
        self._seen: set[str] = set()

    def __call__(self, message: str, *args: object) -> None:
        key = message % args
        if key in self._seen:
            return
        if len(self._seen) < _WARNED_MAX:
            self._seen.add(key)
        log.warning(message, *args)


# --- espeak-ng ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class EspeakVoices:
    """What `espeak-ng --voices` and `--voices=variant` list: `languages` maps a lower-cased
    language or voice file name to the `-v` argument that selects it, `variants` a lower-cased
    variant name ("f3", "alex") to its real spelling."""

    languages: dict[str, str]
    variants: dict[str, str]

    @classmethod
    def parse(cls, voices: str, variants: str) -> EspeakVoices:
        languages: dict[str, str] = {}
        aliases: dict[str, str] = {}
        for line in voices.splitlines()[1:]:
            fields = line.split()
            if len(fields) < 5 or fields[4].startswith("mb/"):
                continue  # MBROLA voices need the mbrola package and its databases
            language, file = fields[1], fields[4]
            languages.setdefault(language.lower(), language)
            languages.setdefault(file.lower(), file)
            # "Other languages" such as "(zh 5)" or "(es-mx 6)": names the voice also serves.
            for other in re.findall(r"\(([^\s()]+) \d+\)", line):
                aliases.setdefault(other.lower(), language)
        for alias, language in aliases.items():
            languages.setdefault(alias, language)
        found = {}
        for line in variants.splitlines()[1:]:
            fields = line.split()
            if len(fields) >= 5 and fields[4].startswith("!v/"):
                name = fields[4][3:]
                found[name.lower()] = name
        return cls(languages, found)

    def language(self, code: str) -> str | None:
        """The voice for a language code (Vonage's "en-US", "es-MX", "cmn-CN"): the code
        itself, else its primary subtag ("es", "cmn"), else None."""
        code = code.strip().lower().replace("_", "-")
        if code in self.languages:
            return self.languages[code]
        primary = code.split("-", 1)[0]
        return self.languages.get(primary)

    def voice(self, name: str, language: str | None) -> str | None:
        """The `-v` argument for `name`: a voice ("en-us", "gmw/en-US"), voice+variant
        ("en-us+f3"), or a variant alone ("f3", "Alex") on the language's voice; None if
        espeak-ng has no such voice."""
        base, _, variant = name.strip().partition("+")
        known = self.languages.get(base.lower())
        if known is None and not variant and base.lower() in self.variants:
            # A variant alone: say it with the language's voice (else the default).
            voice = self.language(language or "") or self.language(DEFAULT_LANGUAGE)
            return f"{voice}+{self.variants[base.lower()]}" if voice else None
        if known is None:
            return None
        if not variant:
            return known
        real = self.variants.get(variant.lower())
        return f"{known}+{real}" if real else None


class EspeakEngine:
    """espeak-ng as a subprocess: `espeak-ng --stdout -b 1 -v VOICE` with the text on stdin
    (UTF-8; SSML when the text starts with `<speak`), its 22050 Hz WAV resampled to 8 kHz.

    Voice choice: the step's `voice` if espeak-ng has it (a voice, voice+variant, or a variant
    alone), else the `language` mapped to a voice, else en-us; a `voice` it lacks is logged.
    The voice list is read once (`espeak-ng --voices`), on first use."""

    name = "espeak"

    def __init__(self, *, program: str = "espeak-ng", timeout_s: float = 20.0,
                 speed_wpm: int | None = None) -> None:
        self.program = program
        self.timeout_s = timeout_s
        self.speed_wpm = speed_wpm
        self._voices: EspeakVoices | None = None
        self._voices_lock = asyncio.Lock()
        self._warn = _WarnOnce()

    async def voices(self) -> EspeakVoices:
        async with self._voices_lock:
            if self._voices is None:
                listed = await self._run(["--voices"], b"")
                variants = await self._run(["--voices=variant"], b"")
                self._voices = EspeakVoices.parse(listed.decode(errors="replace"),
                                                  variants.decode(errors="replace"))
            return self._voices

    async def resolve(self, *, language: str | None, voice: str | None) -> str:
        """The `-v` argument for a step's language and voice (see the class doc)."""
        voices = await self.voices()
        if voice:
            found = voices.voice(voice, language)
            if found is not None:
                return found
        chosen = voices.language(language) if language else None
        if language and chosen is None:
            self._warn("espeak-ng has no voice for language %r", language)
        chosen = chosen or voices.language(DEFAULT_LANGUAGE) or "en"
        if voice:
            self._warn("espeak-ng has no voice %r: using %r", voice, chosen)
        return chosen

    async def synthesize(self, text: str, *, language: str | None,
                         voice: str | None) -> Samples:
        chosen = await self.resolve(language=language, voice=voice)
        args = ["--stdout", "-b", "1", "-v", chosen]
        if self.speed_wpm is not None:
            args += ["-s", str(self.speed_wpm)]
        if _is_ssml(text):
            args.append("-m")
        wav = await self._run(args, text.encode())
        try:
            return await asyncio.to_thread(decode_wav, wav)
        except AudioFormatError as exc:
            raise SpeechError(f"espeak-ng gave no usable audio for voice {chosen!r}: {exc}"
                              ) from None

    async def _run(self, args: list[str], stdin: bytes) -> bytes:
        try:
            result = await run_pipe([self.program, *args], stdin, timeout_s=self.timeout_s,
                                    max_output=_MAX_WAV_BYTES)
        except FileNotFoundError:
            raise SpeechError(f"{self.program!r} is not installed (Debian package espeak-ng)"
                              ) from None
        except TimeoutError:
            raise SpeechError(f"espeak-ng took more than {self.timeout_s:g} s") from None
        except OverflowError:
            raise SpeechError("espeak-ng produced too much audio") from None
        if result.returncode != 0:
            detail = result.stderr.decode(errors="replace").strip()[:200]
            raise SpeechError(f"espeak-ng failed (exit {result.returncode}): {detail}")
        return result.stdout

    async def aclose(self) -> None:
        """Nothing to release: each synthesis is its own process."""


# --- Amazon Polly ---------------------------------------------------------------------------------

# A voice per language for when a step names only the language; voices that have the standard
# engine, so `polly_engine = "standard"` works with all of them.
_POLLY_DEFAULTS = {
    "en-us": "Joanna", "en-gb": "Amy", "en-au": "Nicole", "en-in": "Aditi", "es-es": "Lucia",
    "es-us": "Lupe", "es-mx": "Mia", "fr-fr": "Lea", "fr-ca": "Chantal", "de-de": "Vicki",
    "it-it": "Bianca", "pt-br": "Camila", "pt-pt": "Ines", "nl-nl": "Lotte", "ja-jp": "Mizuki",
    "cmn-cn": "Zhiyu", "zh-cn": "Zhiyu", "ko-kr": "Seoyeon", "ru-ru": "Tatyana",
    "pl-pl": "Ewa", "sv-se": "Astrid",
}


# The engine asked for when a voice lacks the configured one: the closest in kind and price.
_ENGINE_PREFERENCE = ("neural", "standard", "long-form", "generative")
# DescribeVoices failing, or answering without the fields we read.
_DESCRIBE_ERRORS: tuple[type[BaseException], ...] = (*SDK_ERRORS, KeyError, TypeError)


@dataclass(frozen=True, slots=True)
class _PollyVoice:
    voice_id: str
    languages: tuple[str, ...]  # its LanguageCode, then its AdditionalLanguageCodes
    engines: frozenset[str]

    def speaks(self, language: str) -> str | None:
        """Polly's spelling of `language` if this voice speaks it."""
        wanted = language.lower()
        return next((code for code in self.languages if code.lower() == wanted), None)


class PollyEngine:
    """Amazon Polly through aioboto3: SynthesizeSpeech with OutputFormat "pcm" (signed 16-bit
    little-endian mono) at SampleRate "8000", VoiceId, LanguageCode (when the step gives one)
    and Engine. Region from `region`, else `AWS_REGION`/`AWS_DEFAULT_REGION`; credentials from
    the standard chain; endpoint from `endpoint_url`, else `AWS_ENDPOINT_URL_POLLY`.

    The voice list (DescribeVoices) is read once, on first use, to map a language to a voice and
    to send a voice only the engine it supports (a neural-only voice with `engine="standard"`
    is asked for neural); without it (no permission) the step's voice is sent as given.
    `client`: an already open Polly client (tests); else one is made on first use and closed
    by `aclose`."""

    name = "polly"

    def __init__(self, *, region: str | None = None, engine: str = "standard",
                 endpoint_url: str | None = None, timeout_s: float = 10.0,
                 client: Any = None) -> None:
        self.region = region
        self.engine = engine
        self.endpoint_url = endpoint_url
        self.timeout_s = timeout_s
        self._client = client
        self._stack = contextlib.AsyncExitStack()
        self._lock = asyncio.Lock()
        self._voices: dict[str, _PollyVoice] | None = None
        self._warn = _WarnOnce()

    async def client(self) -> Any:
        async with self._lock:
            if self._client is None:
                options = ClientOptions(region=self.region, endpoint_url=self.endpoint_url,
                                        max_retries=2, read_timeout_s=self.timeout_s)
                try:
                    maker = shared_session().client(
                        "polly", region_name=resolve_region(self.region),
                        endpoint_url=self.endpoint_url, config=client_config(options))
                    self._client = await self._stack.enter_async_context(maker)
                except SDK_ERRORS as exc:
                    raise SpeechError(f"cannot create the Polly client: {exc}") from exc
            return self._client

    async def voices(self) -> dict[str, _PollyVoice]:
        """Polly's voices by lower-cased VoiceId (empty when DescribeVoices is refused)."""
        if self._voices is not None:
            return self._voices
        client = await self.client()
        voices: dict[str, _PollyVoice] = {}
        params: dict[str, Any] = {"IncludeAdditionalLanguageCodes": True}
        try:
            async with asyncio.timeout(self.timeout_s):
                while True:
                    page = await client.describe_voices(**params)
                    for item in page.get("Voices", []):
                        voices[item["Id"].lower()] = _PollyVoice(
                            item["Id"],
                            (item.get("LanguageCode", ""),
                             *(item.get("AdditionalLanguageCodes") or ())),
                            frozenset(item.get("SupportedEngines") or ("standard",)))
                    if not page.get("NextToken"):
                        break
                    params["NextToken"] = page["NextToken"]
        except _DESCRIBE_ERRORS as exc:
            log.warning("Polly DescribeVoices failed (voices are sent as given): %s", exc)
        self._voices = voices
        return voices

    async def resolve(self, *, language: str | None,
                      voice: str | None) -> tuple[str, str, str | None]:
        """(VoiceId, Engine, LanguageCode) for a step's language and voice. LanguageCode is
        sent only when the voice speaks it (it matters for bilingual voices: Aditi en-IN/hi-IN)
        and in Polly's spelling, so a Vonage code Polly lacks ("zh-CN") is not an error."""
        voices = await self.voices()
        if voice and (not voices or voice.lower() in voices):
            known = voices.get(voice.lower())
            if known is None:  # no voice list: send what the step gave
                return voice, self.engine, language
            return (known.voice_id, self._engine_for(known),
                    known.speaks(language) if language else None)
        chosen = self._for_language(voices, language or DEFAULT_LANGUAGE)
        if voice:
            self._warn("Polly has no voice %r: using %r", voice, chosen.voice_id)
        return (chosen.voice_id, self._engine_for(chosen),
                chosen.speaks(language) if language else None)

    def _for_language(self, voices: dict[str, _PollyVoice], language: str) -> _PollyVoice:
        preferred = _POLLY_DEFAULTS.get(language.lower())
        if preferred and (not voices or preferred.lower() in voices):
            return voices.get(preferred.lower()) or _PollyVoice(preferred, (language,),
                                                                frozenset({self.engine}))
        # Voices whose own language it is first, then bilingual ones; the engine's first.
        matching = [v for v in voices.values() if v.speaks(language)]
        matching.sort(key=lambda v: (v.languages[0].lower() != language.lower(),
                                     self.engine not in v.engines, v.voice_id))
        if matching:
            return matching[0]
        if language.lower() != DEFAULT_LANGUAGE.lower():
            self._warn("Polly has no voice for language %r: using en-US", language)
        return voices.get("joanna") or _PollyVoice("Joanna", (DEFAULT_LANGUAGE,),
                                                   frozenset({"standard", "neural"}))

    def _engine_for(self, voice: _PollyVoice | None) -> str:
        if voice is None or self.engine in voice.engines:
            return self.engine
        usable = [engine for engine in _ENGINE_PREFERENCE if engine in voice.engines]
        return usable[0] if usable else sorted(voice.engines)[0]

    async def synthesize(self, text: str, *, language: str | None,
                         voice: str | None) -> Samples:
        voice_id, engine, language_code = await self.resolve(language=language, voice=voice)
        params: dict[str, Any] = {
            "Text": text, "TextType": "ssml" if _is_ssml(text) else "text",
            "OutputFormat": "pcm", "SampleRate": "8000", "VoiceId": voice_id, "Engine": engine,
        }
        if language_code:
            params["LanguageCode"] = language_code
        client = await self.client()
        try:
            async with asyncio.timeout(self.timeout_s):
                response = await client.synthesize_speech(**params)
                async with response["AudioStream"] as stream:
                    pcm: bytes = await stream.read()
        except TimeoutError:
            raise SpeechError(f"Polly gave no answer within {self.timeout_s:g} s") from None
        except SDK_ERRORS as exc:
            raise SpeechError(f"Polly SynthesizeSpeech failed ({voice_id}, {engine}): {exc}"
                              ) from exc
        # "pcm": signed 16-bit little-endian mono at the SampleRate asked for.
        return np.frombuffer(pcm[: len(pcm) // 2 * 2], dtype="<i2").astype(np.int16)

    async def aclose(self) -> None:
        await self._stack.aclose()


# --- the cached front ---------------------------------------------------------------------------


class Speech:
    """Cached text to speech: `synthesize` answers from memory, the cache folder or the blob
    store when the same engine, voice, language and text were spoken before, else asks the
    engine (one synthesis for concurrent identical requests). `default_voice` stands in for a
    step without a voice (and so is part of the cache key). The arrays are read-only."""

    def __init__(self, engine: TtsEngine, *, cache_dir: str | os.PathLike[str],
                 blobs: BlobStore | None = None, memory: PcmLru | None = None,
                 default_voice: str | None = None, max_chars: int = MAX_CHARS) -> None:
        self.engine = engine
        self.default_voice = default_voice
        self.max_chars = max_chars
        self.cache = AudioCache("tts", cache_dir, blobs=blobs,
                                memory=memory if memory is not None else PcmLru())
        self._jobs = Coalescer()

    @classmethod
    def from_config(cls, config: Config, *, blobs: BlobStore | None,
                    memory: PcmLru | None = None) -> Speech:
        """The speech `[tts]` describes, cached under `[media]`'s cache dir."""
        tts = config.tts
        engine: TtsEngine
        if tts.engine == "polly":
            engine = PollyEngine(region=tts.polly_region, engine=tts.polly_engine,
                                 timeout_s=tts.timeout_ms / 1000)
        else:
            engine = EspeakEngine(timeout_s=tts.timeout_ms / 1000)
        return cls(engine, cache_dir=media_cache_dir(config), blobs=blobs,
                   memory=memory if memory is not None
                   else PcmLru(config.media.memory_cache_mb * 2**20),
                   default_voice=tts.voice)

    def key(self, text: str, *, language: str | None, voice: str | None) -> str:
        """The cache key: sha256 over engine, voice (or the default), language and text."""
        identity = [self.engine.name, voice or self.default_voice, language, text]
        return hashlib.sha256(json.dumps(identity).encode()).hexdigest()

    async def synthesize(self, text: str, *, language: str | None = None,
                         voice: str | None = None) -> Samples:
        """8 kHz mono int16 speech of `text`; `SpeechError` when it cannot be made."""
        if not text.strip():
            raise SpeechError("nothing to say: the text is empty")
        if len(text) > self.max_chars:
            raise SpeechError(f"text of {len(text)} characters is longer than {self.max_chars}")
        voice = voice or self.default_voice
        digest = self.key(text, language=language, voice=voice)
        hit = self.cache.recall(digest)
        if hit is not None:
            return hit.pcm
        return await self._jobs.run(digest, functools.partial(
            self._make, digest, text, language, voice))

    async def _make(self, digest: str, text: str, language: str | None,
                    voice: str | None) -> Samples:
        stored = await self.cache.read(digest, with_meta=False)
        if stored is not None:
            pcm = stored[0]
        else:
            pcm = await self.engine.synthesize(text, language=language, voice=voice)
            pcm.flags.writeable = False
            await self.cache.write(digest, pcm, None)
        self.cache.remember(digest, CachedAudio(pcm))
        return pcm

    async def flush(self) -> None:
        """Wait for background blob store uploads."""
        await self.cache.flush()

    async def aclose(self) -> None:
        await self._jobs.aclose()
        await self.cache.flush()
        await self.engine.aclose()
