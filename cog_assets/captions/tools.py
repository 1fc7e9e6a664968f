"""The caption step's tools, from the settings: the identities that key written captions, and
the captioner and polisher, each made only when there is something to write."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from cog_assets.captions.captioner import Captioner
from cog_assets.captions.endpoint import (
    ChatEndpoint,
    EndpointCaptioner,
    EndpointPolisher,
    api_key,
)
from cog_assets.captions.local import LocalCaptioner
from cog_assets.captions.prompts import caption_prompt, polish_prompt
from cog_assets.core.choices import CaptionOverLimit
from cog_assets.core.config import CaptionSettings
from cog_assets.core.keys import CaptionerIdentity
from cog_assets.models.devices import dtype_name
from cog_assets.models.vlm import ImageTextModel, process_image_text_model, vlm_identity


@dataclass
class CaptionTools:
    """What the caption step uses besides the rows (see cog_assets.stages.captions)."""

    settings: CaptionSettings
    id_token: str | None = None
    captioner: CaptionerIdentity | None = None
    polisher: CaptionerIdentity | None = None
    make_captioner: Callable[[], Captioner] | None = None
    make_polisher: Callable[[], Captioner] | None = None
    count_tokens: Callable[[list[str]], list[int]] | None = None
    token_limit: int = 226


def polishes(settings: CaptionSettings) -> bool:
    """Whether anything may be polished (every caption, or those over the limit)."""
    return settings.caption_polish or settings.caption_over_limit == CaptionOverLimit.polish


def captioner_identity(settings: CaptionSettings, dtype: str) -> CaptionerIdentity | None:
    """What keys the generated captions (None: the mode writes none). `dtype`: the one a
    local model runs in (an endpoint's model name stands for all of it)."""
    if not settings.captions_written:
        return None
    model = (f"endpoint:{settings.caption_model}" if settings.caption_endpoint else
             vlm_identity(settings.caption_model, settings.caption_revision, dtype))
    return CaptionerIdentity(model, caption_prompt(settings.caption_prompt),
                             settings.caption_max_tokens, settings.caption_temperature)


def polisher_identity(settings: CaptionSettings) -> CaptionerIdentity | None:
    if not polishes(settings):
        return None
    name = settings.caption_polish_model or settings.caption_model
    return CaptionerIdentity(f"endpoint:{name}", polish_prompt(settings.caption_polish_prompt),
                             settings.caption_max_tokens, settings.caption_temperature)


def chat_endpoint(settings: CaptionSettings, model: str) -> ChatEndpoint:
    return ChatEndpoint(settings.caption_endpoint, model, settings.caption_max_tokens,
                        settings.caption_temperature, timeout_s=settings.caption_timeout_s,
                        retries=settings.caption_retries,
                        concurrency=settings.caption_concurrency, key=api_key())


def _captioner(settings: CaptionSettings, writer: CaptionerIdentity,
               device: torch.device | None, dtype: torch.dtype) -> Callable[[], Captioner]:
    """What makes the captioner: an endpoint's client, or the local model's batched writer
    (the model itself loads on its first clip)."""
    if settings.caption_endpoint:
        return lambda: EndpointCaptioner(chat_endpoint(settings, settings.caption_model),
                                         writer.prompt)

    def load() -> ImageTextModel:
        return process_image_text_model(settings.caption_model, settings.caption_revision,
                                        device or torch.device("cpu"), dtype,
                                        settings.caption_trust_remote_code)

    return lambda: LocalCaptioner(load, writer.prompt, writer.model, settings.caption_max_tokens,
                                  settings.caption_temperature, settings.caption_batch_size)


def caption_tools(settings: CaptionSettings, *, id_token: str | None = None,
                  device: torch.device | None = None, dtype: torch.dtype = torch.float32,
                  count_tokens: Callable[[list[str]], list[int]] | None = None,
                  token_limit: int = 226) -> CaptionTools:
    """The tools of these settings; a local model would run on `device` in `dtype`."""
    writer = captioner_identity(settings, dtype_name(dtype))
    polisher = polisher_identity(settings)
    make_polisher = None
    if polisher is not None:
        name = settings.caption_polish_model or settings.caption_model
        make_polisher = lambda: EndpointPolisher(chat_endpoint(settings, name),  # noqa: E731
                                                 polisher.prompt)
    return CaptionTools(settings, id_token, writer, polisher,
                        None if writer is None else _captioner(settings, writer, device, dtype),
                        make_polisher, count_tokens, token_limit)
