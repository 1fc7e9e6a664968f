"""The local captioner's model: a real transformers image-text-to-text model (the seeded toy
one, built from a config as transformers' own tests build theirs) running a real `generate`
on frames decoded from real videos."""

from __future__ import annotations

import torch

from cog_assets.captions.captioner import CaptionJob
from cog_assets.captions.local import LocalCaptioner
from cog_assets.media.decode import read_window_frames
from cog_assets.models.runtime import PROCESS_MODELS
from cog_assets.models.tiny_vlm import TINY_VLM_IDENTITY
from cog_assets.models.vlm import load_image_text_model, process_image_text_model, vlm_identity

VIDEOS = ("decord__flipping_a_pancake.mkv", "torchcodec__nasa_13013.mp4",
          "moviepy__big_buck_bunny_432_433.webm", "decord__video_0.mov")
PROMPT = "Describe the video in detail."


def frames_of(media, names=VIDEOS, count=4):
    return [read_window_frames(media / "videos" / name, count, 448, root=media) for name in names]


def test_the_toy_vlm_writes_from_the_pictures_deterministically_and_batched_as_alone(
        shared_media):
    model = load_image_text_model("tiny", None, torch.device("cpu"), torch.float32)
    clips = frames_of(shared_media)
    batched = model.describe(clips, PROMPT, 24, 0.0)
    alone = [model.describe([c], PROMPT, 24, 0.0)[0] for c in clips]
    assert batched == alone == model.describe(clips, PROMPT, 24, 0.0)
    assert all(text.split() for text in batched)
    assert len(set(batched)) == len(batched)  # what it writes follows the frames it sees
    assert model.identity == f"{TINY_VLM_IDENTITY}/float32"


def test_the_local_captioner_batches_clips_of_one_frame_size(shared_media):
    clips = frames_of(shared_media, VIDEOS[:3] + VIDEOS[:2])  # two sizes repeat
    captioner = LocalCaptioner(
        lambda: process_image_text_model("tiny", None, torch.device("cpu"), torch.float32),
        PROMPT, "tiny", 16, 0.0, batch_size=4)
    results = {r.tag: r.text for r in captioner.run(
        CaptionJob(i, frames=f) for i, f in enumerate(clips))}
    assert sorted(results) == [0, 1, 2, 3, 4] and all(results.values())
    assert results[0] == results[3] and results[1] == results[4]
    assert captioner.batches == 3  # one per frame size: (0, 3), (1, 4), (2,)


def test_it_is_loaded_once_per_process():
    before = PROCESS_MODELS.loads
    first = process_image_text_model("tiny", None, torch.device("cpu"), torch.float32)
    again = process_image_text_model("tiny", None, torch.device("cpu"), torch.float32)
    assert first is again and PROCESS_MODELS.loads - before <= 1


def test_its_identity_names_weights_revision_and_dtype(tmp_path):
    assert vlm_identity("Qwen/Qwen2.5-VL-7B-Instruct", None, "bfloat16") == \
        "hub:Qwen/Qwen2.5-VL-7B-Instruct@main/bfloat16"
    (tmp_path / "model.safetensors").write_bytes(b"weights")
    local = vlm_identity(str(tmp_path), None, "float32")
    (tmp_path / "model.safetensors").write_bytes(b"other weights")
    assert local.startswith("dir:") and vlm_identity(str(tmp_path), None, "float32") != local
