"""The endpoint captioner against a real chat-completions server on loopback: the OpenAI vision
format, captions that follow the pictures, and every way a server fails."""

from __future__ import annotations

import numpy as np
import pytest

from cog_assets.captions.captioner import CaptionJob
from cog_assets.captions.endpoint import ChatEndpoint, EndpointCaptioner, EndpointPolisher
from cog_assets.captions.loopback import (
    CUT_OFF,
    EMPTY,
    ERROR_500,
    MALFORMED,
    SLOW,
    TOO_MANY,
    chat_server,
)
from cog_assets.media.decode import read_window_frames

KEY = "sk-test-not-a-real-key-0123456789"


def endpoint(server, **kw) -> ChatEndpoint:
    options = {"timeout_s": 5.0, "retries": 3, "concurrency": 4, "backoff_s": 0.01, **kw}
    return ChatEndpoint(server.url, "qwen2.5-vl-7b", 200, 0.0, **options)


def clip(seed: int, n: int = 4) -> np.ndarray:
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 255, size=3)
    return np.clip(base + rng.integers(-20, 20, size=(n, 48, 64, 3)), 0, 255).astype(np.uint8)


def run(captioner, jobs):
    return {r.tag: r for r in captioner.run(jobs)}


def test_frames_go_as_jpeg_image_urls_in_one_user_message_and_captions_follow_them(
        shared_media):
    frames = {name: read_window_frames(shared_media / "videos" / name, 6, 448,
                                       root=shared_media)
              for name in ("decord__flipping_a_pancake.mkv", "torchcodec__nasa_13013.mp4")}
    with chat_server() as server:
        captioner = EndpointCaptioner(endpoint(server), "Describe the video.")
        first = run(captioner, [CaptionJob(n, frames=f) for n, f in frames.items()])
        again = run(captioner, [CaptionJob(n, frames=f) for n, f in frames.items()])
    assert {n: r.text for n, r in first.items()} == {n: r.text for n, r in again.items()}
    texts = [r.text for r in first.values()]
    assert all(texts) and texts[0] != texts[1]
    assert "dark" in first["torchcodec__nasa_13013.mp4"].text  # NASA's shot is night-dark
    assert {(s.model, s.images, s.text) for s in server.seen} == {("qwen2.5-vl-7b", 6, "")}
    assert captioner.identity == "endpoint:qwen2.5-vl-7b"


@pytest.mark.parametrize("failure", [ERROR_500, TOO_MANY, SLOW, MALFORMED, EMPTY, CUT_OFF])
def test_a_failed_request_is_tried_again_and_succeeds(failure):
    with chat_server(script=[failure], slow_s=1.0) as server:
        results = run(EndpointCaptioner(endpoint(server, timeout_s=0.3), "Describe."),
                      [CaptionJob("a", frames=clip(1))])
    assert results["a"].ok and results["a"].requests == 2
    assert [s.answered for s in server.seen] == [failure, "ok"]


def test_a_clip_whose_requests_keep_failing_fails_alone_after_its_retries():
    with chat_server(fail_if=lambda caption: ERROR_500 if "bluish" in caption else None) as server:
        jobs = [CaptionJob(i, frames=np.full((2, 32, 32, 3), colour, np.uint8))
                for i, colour in enumerate([(200, 40, 40), (40, 40, 200), (40, 200, 40)])]
        results = run(EndpointCaptioner(endpoint(server, retries=2), "Describe."), jobs)
    assert [results[i].ok for i in range(3)] == [True, False, True]
    assert "HTTP 500" in results[1].error and "after 3 requests" in results[1].error
    assert results[1].requests == 3 and server.requests == 5


def test_a_refused_key_is_not_retried_and_stops_the_run_sending(monkeypatch):
    with chat_server(key=KEY) as server:
        wrong = endpoint(server, concurrency=1, key="sk-wrong-key")
        results = run(EndpointCaptioner(wrong, "Describe."),
                      [CaptionJob(i, frames=clip(i)) for i in range(5)])
        assert server.requests == 1  # nothing more is sent once the key is refused
        assert not any(r.ok for r in results.values())
        assert all("401" in r.error and "COG_ASSETS_CAPTION_API_KEY" in r.error
                   for r in results.values())
        assert all("sk-wrong-key" not in r.error for r in results.values())
        right = run(EndpointCaptioner(endpoint(server, key=KEY), "Describe."),
                    [CaptionJob("a", frames=clip(0))])
    assert right["a"].ok
    assert server.seen[-1].authorization == f"Bearer {KEY}"


def test_requests_in_flight_are_bounded_by_the_concurrency():
    with chat_server(delay_s=0.3) as server:
        results = run(EndpointCaptioner(endpoint(server, concurrency=3), "Describe."),
                      [CaptionJob(i, frames=clip(i, 2)) for i in range(9)])
    assert len(results) == 9 and all(r.ok for r in results.values())
    assert 2 <= server.most_in_flight <= 3


def test_polishing_sends_the_system_prompt_and_the_caption():
    with chat_server() as server:
        polisher = EndpointPolisher(endpoint(server), "Rewrite it.")
        results = run(polisher, [CaptionJob("a", text="一只猫坐在窗台上")])
    assert results["a"].ok
    assert (server.seen[0].system, server.seen[0].text) == ("Rewrite it.", "一只猫坐在窗台上")
