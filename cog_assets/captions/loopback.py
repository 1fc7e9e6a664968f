"""A stand-in OpenAI-compatible chat-completions server on loopback: what the tests and the
benchmarks caption against, with no model and no network (bench/bench_captions.py).

It speaks the protocol `vllm serve` does (POST /v1/chat/completions, the vision format with
`image_url` data URLs) and answers from what it is sent: a caption made from the pictures
(their colours and brightness, how much they change, their count and size), so different
clips get different captions and the same frames the same one; a polishing request (a system
prompt and a caption) gets the caption rewritten. Its failures are scripted per request:
`script` is consumed in order, one behaviour per request, then `default` applies.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
from PIL import Image

# What a request can get: a good answer, or one of the failures a real server gives.
OK, ERROR_500, TOO_MANY, SLOW, MALFORMED, EMPTY, REFUSED, LOOP, CHINESE, CUT_OFF = (
    "ok", "500", "429", "slow", "malformed", "empty", "401", "loop", "chinese", "cut_off")


@dataclass
class Seen:
    """One request as the server read it."""

    model: str
    images: int
    text: str
    authorization: str | None
    system: str | None
    answered: str  # the behaviour it got


def _tone(mean: np.ndarray) -> str:
    r, g, b = mean
    if max(r, g, b) - min(r, g, b) < 18:
        return "grey"
    return ("reddish", "greenish", "bluish")[int(np.argmax(mean))]


def describe_frames(frames: list[np.ndarray], prompt: str = "") -> str:
    """A caption from pictures: it changes with their content and, as a model's answer does,
    with the question asked (one of two phrasings, by the prompt's digest)."""
    stack = np.stack([f.astype(np.float32) for f in frames])
    mean = stack.reshape(-1, 3).mean(axis=0)
    light = stack.mean()
    change = float(np.abs(np.diff(stack, axis=0)).mean()) if len(frames) > 1 else 0.0
    height, width = frames[0].shape[:2]
    brightness = "dark" if light < 70 else "bright" if light > 170 else "softly lit"
    motion = ("barely changes" if change < 4 else "changes steadily" if change < 20
              else "changes quickly")
    colours = (f"red {mean[0]:.0f}, green {mean[1]:.0f} and blue {mean[2]:.0f} over "
               f"{len(frames)} frames of {width} by {height} pixels")
    if int(hashlib.sha256(prompt.encode("utf-8")).hexdigest()[0], 16) % 2:
        return (f"In a {brightness} {_tone(mean)} setting the picture {motion} from frame "
                f"to frame, with a mean of {colours}.")
    return (f"A {brightness} {_tone(mean)} scene whose picture {motion} between frames, "
            f"averaging {colours}.")


def polish_text(caption: str) -> str:
    """The caption rewritten; one in another script comes back in English, as the default
    polishing prompt asks (a stand-in for a translation: the words are fixed)."""
    if any(ord(c) > 0x2E7F for c in caption):
        return ("A cat sits on a sunny windowsill and slowly closes its eyes while its tail "
                "sways gently, rendered in rich natural detail with steady framing.")
    return (f"{caption.rstrip('.')}, rendered in rich natural detail with steady framing "
            "and gentle light.")


def _frames(content: list[dict]) -> list[np.ndarray]:
    frames = []
    for part in content:
        if part.get("type") == "image_url":
            url = part["image_url"]["url"]
            data = base64.b64decode(url.split(",", 1)[1])
            with Image.open(io.BytesIO(data)) as image:
                frames.append(np.asarray(image.convert("RGB")))
    return frames


@dataclass
class ChatServer:
    """The server's behaviour and what it saw; `url` is its base (http://127.0.0.1:N/v1)."""

    default: str = OK
    script: list[str] = field(default_factory=list)
    delay_s: float = 0.0  # every answer takes at least this long (a busy GPU)
    slow_s: float = 5.0  # how long a SLOW request hangs before answering
    key: str | None = None  # the API key it requires (401 otherwise)
    fail_if: Callable[[str], str | None] | None = None  # caption -> behaviour, before script
    seen: list[Seen] = field(default_factory=list)
    in_flight: int = 0
    most_in_flight: int = 0
    url: str = ""
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def next_behaviour(self, caption: str) -> str:
        with self._lock:
            if self.fail_if is not None:
                forced = self.fail_if(caption)
                if forced is not None:
                    return forced
            return self.script.pop(0) if self.script else self.default

    @property
    def requests(self) -> int:
        return len(self.seen)


def _handler(server: ChatServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args) -> None:  # quiet
            pass

        def _answered(self) -> None:
            """The request leaves `in_flight` before the first byte of its answer is sent: the
            client may send its next request the moment it has read this answer, before this
            thread runs again (on a busy machine it counted 4 in flight for a bound of 3)."""
            if self._counted:
                self._counted = False
                with server._lock:
                    server.in_flight -= 1

        def _send(self, status: int, body: bytes, headers: dict | None = None) -> None:
            self._answered()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            self.end_headers()
            try:
                self.wfile.write(body)
            except (BrokenPipeError, ConnectionResetError):  # the client gave up (a timeout)
                pass

        def do_POST(self) -> None:  # noqa: N802 - http.server's name
            with server._lock:
                server.in_flight += 1
                server.most_in_flight = max(server.most_in_flight, server.in_flight)
            self._counted = True
            try:
                self._answer()
            finally:
                self._answered()

        def _answer(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            request = json.loads(self.rfile.read(length))
            messages = request["messages"]
            system = next((m["content"] for m in messages if m["role"] == "system"), None)
            user = next(m for m in messages if m["role"] == "user")["content"]
            if isinstance(user, str):
                frames, answer = [], polish_text(user)
            else:
                frames = _frames(user)
                prompt = " ".join(p.get("text", "") for p in user if p.get("type") == "text")
                answer = describe_frames(frames, prompt)
            behaviour = server.next_behaviour(answer)
            authorization = self.headers.get("Authorization")
            if server.key is not None and authorization != f"Bearer {server.key}":
                behaviour = REFUSED
            with server._lock:
                server.seen.append(Seen(request["model"], len(frames),
                                        user if isinstance(user, str) else "", authorization,
                                        system, behaviour))
            if server.delay_s:
                time.sleep(server.delay_s)
            if behaviour == SLOW:
                time.sleep(server.slow_s)
            if behaviour == ERROR_500:
                return self._send(500, b'{"error": "the model crashed"}')
            if behaviour == TOO_MANY:
                return self._send(429, b'{"error": "slow down"}', {"Retry-After": "0"})
            if behaviour == REFUSED:
                return self._send(401, b'{"error": "invalid api key"}')
            if behaviour == CUT_OFF:  # the server dies mid-answer: fewer bytes than announced
                self._answered()
                self.send_response(200)
                self.send_header("Content-Length", "4096")
                self.end_headers()
                self.wfile.write(b'{"choices": [')
                self.close_connection = True
                return None
            if behaviour == MALFORMED:
                return self._send(200, b'{"choices": [{"message": {"content": "A half')
            content = {EMPTY: "", LOOP: "The cat sat. " * 40,
                       CHINESE: "一只猫坐在窗台上，阳光照在它身上，它慢慢地闭上了眼睛。"
                       }.get(behaviour, answer)
            body = {"id": "chatcmpl-test", "object": "chat.completion",
                    "model": request["model"],
                    "choices": [{"index": 0, "finish_reason": "stop",
                                 "message": {"role": "assistant", "content": content}}]}
            self._send(200, json.dumps(body).encode("utf-8"))

    return Handler


@contextmanager
def chat_server(**behaviour) -> Iterator[ChatServer]:
    """A ChatServer listening on 127.0.0.1 (a free port) for the `with` block."""
    state = ChatServer(**behaviour)
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler(state))
    httpd.daemon_threads = True
    state.url = f"http://127.0.0.1:{httpd.server_address[1]}/v1"
    thread = threading.Thread(target=httpd.serve_forever, name="chat-server", daemon=True)
    thread.start()
    try:
        yield state
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)
