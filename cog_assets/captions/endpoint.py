"""Any OpenAI-compatible chat-completions endpoint as a captioner or a polisher.

`vllm serve`, sglang, TGI and the hosted APIs accept the OpenAI vision format: one user message
whose content is the clip's frames as `image_url` parts (JPEG data URLs) followed by the
prompt. Polishing is a plain chat: the system prompt, then the caption.

Requests go out `caption_concurrency` at a time (a thread each: the waiting is the server's).
A timeout, a connection error, a 429, a 5xx, a malformed answer or an empty one is tried again
after a backoff (the server's Retry-After where it gives one), up to `caption_retries` times;
then that clip alone fails. A refused key (401, 403) is not retried and fails every clip of the
run at once, without sending more. The API key is read from COG_ASSETS_CAPTION_API_KEY only;
it is sent in the Authorization header and appears in no message, log, setting or key.
"""

from __future__ import annotations

import base64
import http.client
import io
import json
import logging
import os
import random
import socket
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field

import numpy as np
from PIL import Image

from cog_assets.captions.captioner import CaptionJob, CaptionResult

API_KEY_ENV = "COG_ASSETS_CAPTION_API_KEY"
JPEG_QUALITY = 90
MAX_BACKOFF_S = 30.0
MAX_RETRY_AFTER_S = 60.0
ERROR_BODY_CHARS = 300

log = logging.getLogger(__name__)


class EndpointError(Exception):
    """A request failed; `retry`: whether trying again may help."""

    def __init__(self, message: str, *, retry: bool, status: int | None = None,
                 wait_s: float | None = None):
        super().__init__(message)
        self.retry, self.status, self.wait_s = retry, status, wait_s


class KeyRefused(EndpointError):
    """The endpoint refused the key (401, 403): no request of this run can succeed."""


def api_key() -> str | None:
    """The key from the environment (None: the endpoint needs none, as a local vLLM)."""
    return os.environ.get(API_KEY_ENV) or None


def jpeg_data_url(frame: np.ndarray) -> str:
    buffer = io.BytesIO()
    Image.fromarray(frame).save(buffer, format="JPEG", quality=JPEG_QUALITY)
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def vision_messages(frames: np.ndarray, prompt: str) -> list[dict]:
    """One user message: every frame as an image_url part, then the prompt."""
    parts: list[dict] = [{"type": "image_url", "image_url": {"url": jpeg_data_url(f)}}
                         for f in frames]
    parts.append({"type": "text", "text": prompt})
    return [{"role": "user", "content": parts}]


def polish_messages(caption: str, system_prompt: str) -> list[dict]:
    return [{"role": "system", "content": system_prompt}, {"role": "user", "content": caption}]


def _content(body: bytes) -> str:
    """The first choice's text, or EndpointError (retried) for anything else."""
    try:
        answer = json.loads(body)
        content = answer["choices"][0]["message"]["content"]
    except (ValueError, KeyError, IndexError, TypeError) as exc:
        raise EndpointError(f"malformed answer ({type(exc).__name__}: "
                            f"{body[:ERROR_BODY_CHARS]!r})", retry=True) from None
    if isinstance(content, list):  # content parts, as some servers answer
        content = "".join(p["text"] for p in content
                          if isinstance(p, dict) and isinstance(p.get("text"), str))
    if not isinstance(content, str) or not content.strip():
        raise EndpointError("empty answer (no text in the first choice)", retry=True)
    return content.strip()


@dataclass
class ChatEndpoint:
    """The chat-completions API at `url` (its base, e.g. http://127.0.0.1:8000/v1)."""

    url: str
    model: str
    max_tokens: int
    temperature: float
    timeout_s: float = 120.0
    retries: int = 3
    concurrency: int = 8
    backoff_s: float = 1.0
    key: str | None = field(default=None, repr=False)

    @property
    def completions_url(self) -> str:
        base = self.url.rstrip("/")
        return base if base.endswith("/chat/completions") else f"{base}/chat/completions"

    def _hide(self, text: str) -> str:
        return text.replace(self.key, "***") if self.key else text

    def _post(self, messages: list[dict]) -> str:
        payload = json.dumps({"model": self.model, "messages": messages,
                              "max_tokens": self.max_tokens,
                              "temperature": self.temperature}).encode("utf-8")
        headers = {"Content-Type": "application/json"}
        if self.key:
            headers["Authorization"] = f"Bearer {self.key}"
        request = urllib.request.Request(self.completions_url, data=payload, headers=headers,
                                         method="POST")
        try:
            with urllib.request.urlopen(request, timeout=self.timeout_s) as response:
                body = response.read()
        except urllib.error.HTTPError as exc:
            detail = self._hide(exc.read()[:ERROR_BODY_CHARS].decode("utf-8", "replace"))
            status = exc.code
            if status in (401, 403):
                raise KeyRefused(f"HTTP {status}: the endpoint refused the key (set "
                                 f"{API_KEY_ENV}): {detail}", retry=False,
                                 status=status) from None
            retry_after = exc.headers.get("Retry-After") if exc.headers else None
            raise EndpointError(f"HTTP {status}: {detail}", retry=status == 429 or status >= 500,
                                status=status, wait_s=_seconds(retry_after)) from None
        except (TimeoutError, socket.timeout):
            raise EndpointError(f"no answer within {self.timeout_s:g} s (caption_timeout_s)",
                                retry=True) from None
        except http.client.HTTPException as exc:  # a broken answer: cut off, not HTTP at all
            raise EndpointError(self._hide(f"broken answer from {self.completions_url}: "
                                           f"{type(exc).__name__}: {exc}"),
                                retry=True) from None
        except (urllib.error.URLError, ConnectionError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            if isinstance(reason, (TimeoutError, socket.timeout)):
                raise EndpointError(f"no answer within {self.timeout_s:g} s "
                                    "(caption_timeout_s)", retry=True) from None
            raise EndpointError(self._hide(f"cannot reach {self.completions_url}: {reason}"),
                                retry=True) from None
        return _content(body)

    def complete(self, messages: list[dict]) -> tuple[str, int]:
        """(the answer, requests sent), trying again as the module says; raises the last
        EndpointError."""
        attempt = 0
        while True:
            attempt += 1
            try:
                return self._post(messages), attempt
            except EndpointError as exc:
                if not exc.retry or attempt > self.retries:
                    exc.args = (f"{exc.args[0]} (after {attempt} request"
                                f"{'s' if attempt > 1 else ''})",)
                    exc.requests = attempt
                    raise
                pause = exc.wait_s if exc.wait_s is not None else min(
                    MAX_BACKOFF_S, self.backoff_s * 2 ** (attempt - 1))
                log.info("caption endpoint: %s; trying again in %.1f s", exc, pause)
                time.sleep(pause * (1 + random.random() * 0.1))

    def map(self, jobs: Iterable[CaptionJob], messages: Callable[[CaptionJob], list[dict]]
            ) -> Iterator[CaptionResult]:
        """One result per job, at most `concurrency` requests in flight, jobs pulled only as
        a slot frees (their frames are not all held at once)."""
        refused: list[KeyRefused] = []

        def one(job: CaptionJob) -> CaptionResult:
            if refused:
                return CaptionResult(job.tag, None, str(refused[0]))
            try:
                text, requests = self.complete(messages(job))
            except KeyRefused as exc:
                refused.append(exc)
                return CaptionResult(job.tag, None, str(exc), getattr(exc, "requests", 1))
            except EndpointError as exc:
                return CaptionResult(job.tag, None, str(exc), getattr(exc, "requests", 1))
            return CaptionResult(job.tag, text, None, requests)

        pending: set[Future] = set()
        with ThreadPoolExecutor(self.concurrency, thread_name_prefix="caption-endpoint") as pool:
            for job in jobs:
                if len(pending) >= self.concurrency:
                    done, pending = wait(pending, return_when=FIRST_COMPLETED)
                    yield from (future.result() for future in done)
                pending.add(pool.submit(one, job))
            while pending:
                done, pending = wait(pending, return_when=FIRST_COMPLETED)
                yield from (future.result() for future in done)


def _seconds(value: str | None) -> float | None:
    """A Retry-After header in seconds (its date form is ignored), capped."""
    try:
        return min(MAX_RETRY_AFTER_S, max(0.0, float(value))) if value else None
    except ValueError:
        return None


@dataclass
class EndpointCaptioner:
    """Captions from the clip's frames, by the model the endpoint serves."""

    endpoint: ChatEndpoint
    prompt: str

    @property
    def identity(self) -> str:
        return f"endpoint:{self.endpoint.model}"

    def run(self, jobs: Iterable[CaptionJob]) -> Iterator[CaptionResult]:
        return self.endpoint.map(jobs, lambda job: vision_messages(job.frames, self.prompt))


@dataclass
class EndpointPolisher:
    """Captions rewritten by the LLM the endpoint serves, with `system_prompt`."""

    endpoint: ChatEndpoint
    system_prompt: str

    @property
    def identity(self) -> str:
        return f"endpoint:{self.endpoint.model}"

    def run(self, jobs: Iterable[CaptionJob]) -> Iterator[CaptionResult]:
        return self.endpoint.map(jobs, lambda job: polish_messages(job.text, self.system_prompt))
