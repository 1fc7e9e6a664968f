"""The default prompts: what a captioner is asked, and how the polishing LLM rewrites.

In the spirit of the captioning pipelines CogVideoX's data came from: CogVLM2-Caption is asked
for a detailed description of the video; EasyAnimate and NeMo Curator ask a VLM for a detailed
paragraph and rewrite it with an LLM; CogVideo's inference/convert_demo.py turns a short prompt
into one detailed English paragraph of the length the model was trained on. A training caption
must describe what the clip shows and nothing else, in the words a prompt would use, within the
226 T5 tokens CogVideoX reads (about 170 English words).
"""

from __future__ import annotations

from pathlib import Path

CAPTION_PROMPT = (
    "These are frames sampled in order from one short video clip. Describe the video in one "
    "detailed English paragraph of at most 120 words, as a prompt for a text-to-video model: "
    "the main subjects and their appearance, what they do and how they move, the setting, the "
    "lighting and colours, and the camera's framing and movement. Describe only what is shown. "
    "Do not begin with \"The video\" or \"The frames\", do not mention frames or images, and do "
    "not use lists or headings."
)

POLISH_PROMPT = (
    "You rewrite captions of video clips into training prompts for a text-to-video model.\n"
    "Rules:\n"
    "- Output one paragraph of fluent English, between 60 and 150 words, and nothing else: no "
    "preamble, no quotes, no lists, no headings.\n"
    "- Translate the caption into English if it is in another language.\n"
    "- Keep every fact the caption states: subjects, their appearance, actions, setting, "
    "lighting, colours, camera framing and movement. Make it vivid and concrete, but do not "
    "invent objects, people, text or events the caption does not state.\n"
    "- Describe the scene directly; never begin with \"The video shows\" or mention the video, "
    "clip, frames or caption.\n"
    "- If a trigger word or name appears, keep it exactly as written."
)


def polish_prompt(path: str | None) -> str:
    """The polishing system prompt: the user's file (caption_polish_prompt), else the default."""
    if path is None:
        return POLISH_PROMPT
    text = Path(path).read_text(encoding="utf-8").strip()
    if not text:
        raise ValueError(f"caption_polish_prompt {path} is empty")
    return text


def caption_prompt(text: str | None) -> str:
    """What the captioner is asked: the caption_prompt setting, else the default."""
    return text.strip() if text and text.strip() else CAPTION_PROMPT
