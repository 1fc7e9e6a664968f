"""A local image-text-to-text model as a captioner: clips written for in batches.

Jobs are grouped by the size of their frames (clips of one source, or of one aspect ratio,
make the same number of image tokens), so a batch needs no padding and a clip gets the same
caption in a batch as alone. A batch that fails (out of memory, a model error) is written
again one clip at a time, so one bad clip fails alone.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

from cog_assets.captions.captioner import CaptionJob, CaptionResult
from cog_assets.models.vlm import ImageTextModel


@dataclass
class LocalCaptioner:
    load: Callable[[], ImageTextModel]  # called once, on the first job
    prompt: str
    identity: str
    max_new_tokens: int
    temperature: float
    batch_size: int = 4
    batches: int = 0  # generate calls made (benchmarks and tests read it)

    def run(self, jobs: Iterable[CaptionJob]) -> Iterator[CaptionResult]:
        waiting: dict[tuple[int, ...], list[CaptionJob]] = {}
        model = None
        for job in jobs:
            same = waiting.setdefault(tuple(job.frames.shape), [])
            same.append(job)
            if len(same) >= self.batch_size:
                model = model or self.load()
                yield from self._write(model, same)
                same.clear()
        for same in waiting.values():
            if same:
                model = model or self.load()
                yield from self._write(model, same)

    def _write(self, model: ImageTextModel, batch: list[CaptionJob]) -> list[CaptionResult]:
        self.batches += 1
        try:
            texts = model.describe([job.frames for job in batch], self.prompt,
                                   self.max_new_tokens, self.temperature)
            return [CaptionResult(job.tag, text or None,
                                  None if text else "the model wrote nothing")
                    for job, text in zip(batch, texts)]
        except Exception as exc:  # noqa: BLE001 - a model error fails its clips, not the step
            if len(batch) > 1:
                return [result for job in batch for result in self._write(model, [job])]
            return [CaptionResult(batch[0].tag, None, f"{type(exc).__name__}: {exc}")]
