"""The models behind the server: a transformers causal LM and a sentence-transformers embedder.

Both load from a local directory and compute on the CPU in worker threads, so the event loop
stays free; ``max_concurrency`` bounds how many computations run at once, the rest wait their
turn. torch's global random generator serves ``seed``, so seeded answers only repeat exactly
with ``max_concurrency`` 1.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncGenerator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agora.runtimes.protocol import APIError


@dataclass(frozen=True)
class Sampling:
    max_tokens: int
    temperature: float
    top_p: float
    seed: int | None
    stop: tuple[str, ...]


@dataclass
class Outcome:
    """Filled in by ``CausalLM.stream`` once its iteration ends."""

    prompt_tokens: int
    completion_tokens: int = 0
    finish_reason: str = "stop"

    def usage(self) -> dict[str, int]:
        return {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.prompt_tokens + self.completion_tokens,
        }


class StopMatcher:
    """Cuts streamed text at the first stop string; holds back what may be the start of one."""

    def __init__(self, stops: Sequence[str]) -> None:
        self.stops = [s for s in stops if s]
        self.pending = ""

    def feed(self, text: str) -> tuple[str, bool]:
        """Text safe to emit now, and whether a stop string was reached."""
        self.pending += text
        hits = [i for i in (self.pending.find(s) for s in self.stops) if i >= 0]
        if hits:
            out, self.pending = self.pending[: min(hits)], ""
            return out, True
        longest = max((len(s) for s in self.stops), default=0)
        keep = 0
        for size in range(1, min(len(self.pending), longest - 1) + 1):
            if any(s.startswith(self.pending[-size:]) for s in self.stops):
                keep = size
        cut = len(self.pending) - keep
        out, self.pending = self.pending[:cut], self.pending[cut:]
        return out, False

    def flush(self) -> str:
        out, self.pending = self.pending, ""
        return out


def chat_prompt(tokenizer: Any, messages: Sequence[tuple[str, str]]) -> str:
    """The tokenizer's chat template when it has one; otherwise this plain format::

    <|system|>
    You are terse.
    <|user|>
    Hello
    <|assistant|>
    """
    if getattr(tokenizer, "chat_template", None):
        from jinja2 import TemplateError

        try:
            return str(
                tokenizer.apply_chat_template(
                    [{"role": role, "content": content} for role, content in messages],
                    tokenize=False,
                    add_generation_prompt=True,
                )
            )
        except TemplateError as exc:
            raise APIError(
                400, f"messages: refused by the chat template: {exc}", param="messages"
            ) from None
    return "".join(f"<|{role}|>\n{content}\n" for role, content in messages) + "<|assistant|>\n"


class _Pieces:
    """A transformers streamer: decodes new tokens and hands text to the event loop.

    Incremental decoding (as in text-generation-inference) emits text per token but holds back
    tokens that end in the middle of a UTF-8 character.
    """

    def __init__(self, tokenizer: Any, loop: asyncio.AbstractEventLoop) -> None:
        self.tokenizer = tokenizer
        self.loop = loop
        self.queue: asyncio.Queue[str | BaseException | None] = asyncio.Queue()
        self.ids: list[int] = []
        self.prefix = 0
        self.read = 0
        self.prompt_seen = False

    def _decode(self, ids: list[int]) -> str:
        return str(
            self.tokenizer.decode(ids, skip_special_tokens=True, clean_up_tokenization_spaces=False)
        )

    def send(self, item: str | BaseException | None) -> None:
        self.loop.call_soon_threadsafe(self.queue.put_nowait, item)

    def put(self, value: Any) -> None:
        if not self.prompt_seen:  # generate() first hands over the prompt
            self.prompt_seen = True
            return
        self.ids.extend(int(t) for t in value.reshape(-1).tolist())
        before = self._decode(self.ids[self.prefix : self.read])
        text = self._decode(self.ids[self.prefix :])
        # A UTF-8 character spans at most 4 bytes: after 4 more tokens a trailing "\ufffd" is
        # really in the output (and decoding a window that keeps growing would cost O(n²)).
        settled = not text.endswith("\ufffd") or len(self.ids) - self.read >= 4
        if len(text) > len(before) and settled:
            self.prefix, self.read = self.read, len(self.ids)
            self.send(text[len(before) :])

    def end(self) -> None:
        before = self._decode(self.ids[self.prefix : self.read])
        text = self._decode(self.ids[self.prefix :])
        if len(text) > len(before):
            self.send(text[len(before) :])


def use_threads(count: int) -> None:
    """CPU threads for each computation; more threads than cores leaves torch spinning idle."""
    import torch

    torch.set_num_threads(count)


class CausalLM:
    def __init__(self, path: Path, max_concurrency: int) -> None:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
        self.model: Any = AutoModelForCausalLM.from_pretrained(path, local_files_only=True)
        self.model.train(False)  # inference mode: no dropout
        self.context_length: int | None = getattr(
            self.model.config, "max_position_embeddings", None
        )
        # A chat model may end its turn with one of several tokens (Llama 3: two); its generation
        # config knows them all, its tokenizer only one.
        eos = self.model.generation_config.eos_token_id
        if eos is None:
            eos = self.tokenizer.eos_token_id
        self.eos: list[int] = [] if eos is None else [eos] if isinstance(eos, int) else list(eos)
        pad = self.model.generation_config.pad_token_id
        if pad is None:
            pad = self.tokenizer.pad_token_id
        if pad is None and self.eos:
            pad = self.eos[0]
        self.pad: int | None = pad
        self.slots = asyncio.Semaphore(max_concurrency)

    def encode(self, text: str, *, special_tokens: bool, param: str) -> list[int]:
        ids = self.tokenizer(text, add_special_tokens=special_tokens)["input_ids"]
        if self.context_length is not None and len(ids) >= self.context_length:
            raise APIError(
                400,
                f"the prompt has {len(ids)} tokens; this model's context is "
                f"{self.context_length} tokens",
                param=param,
                code="context_length_exceeded",
            )
        return [int(i) for i in ids]

    async def stream(
        self, prompt: list[int], sampling: Sampling, outcome: Outcome
    ) -> AsyncGenerator[str, None]:
        """Text as it is generated. Closing the iterator early stops the generation."""
        limit = sampling.max_tokens
        if self.context_length is not None:
            limit = min(limit, self.context_length - len(prompt))
        loop = asyncio.get_running_loop()
        pieces = _Pieces(self.tokenizer, loop)
        cancelled = threading.Event()
        await self.slots.acquire()
        try:
            worker = threading.Thread(
                target=self._generate,
                args=(prompt, sampling, limit, pieces, cancelled, outcome),
                daemon=True,
            )
            worker.start()
        except BaseException:
            self.slots.release()
            raise
        matcher = StopMatcher(sampling.stop)
        try:
            while (item := await pieces.queue.get()) is not None:
                if isinstance(item, BaseException):
                    raise item
                text, stopped = matcher.feed(item)
                if text:
                    yield text
                if stopped:
                    # Let the worker finish its token so the usage counts are complete.
                    cancelled.set()
                    while (item := await pieces.queue.get()) is not None:
                        if isinstance(item, BaseException):
                            raise item
                    outcome.finish_reason = "stop"
                    return
            if text := matcher.flush():
                yield text
        finally:
            cancelled.set()

    def _generate(
        self,
        prompt: list[int],
        sampling: Sampling,
        limit: int,
        pieces: _Pieces,
        cancelled: threading.Event,
        outcome: Outcome,
    ) -> None:
        import torch
        from transformers import GenerationConfig, StoppingCriteria, StoppingCriteriaList

        class Cancelled(StoppingCriteria):
            def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
                return torch.full((input_ids.shape[0],), cancelled.is_set(), dtype=torch.bool)

        sample = sampling.temperature > 0
        config = GenerationConfig(  # type: ignore[no-untyped-call]
            max_new_tokens=limit,
            do_sample=sample,
            temperature=sampling.temperature if sample else None,
            top_p=sampling.top_p if sample else None,
            top_k=None,
            eos_token_id=self.eos or None,
            pad_token_id=self.pad,
        )
        result: BaseException | None = None
        try:
            if sampling.seed is not None:
                torch.manual_seed(sampling.seed)
            ids = torch.tensor([prompt], dtype=torch.long)
            with torch.inference_mode():
                out = self.model.generate(
                    input_ids=ids,
                    attention_mask=torch.ones_like(ids),
                    generation_config=config,
                    streamer=pieces,
                    stopping_criteria=StoppingCriteriaList([Cancelled()]),
                )
            new = out[0, len(prompt) :].tolist()
            outcome.completion_tokens = len(new)
            ended = bool(new) and new[-1] in self.eos
            outcome.finish_reason = "length" if len(new) >= limit and not ended else "stop"
        except Exception as exc:  # handed to the request, which reports it
            result = exc
        finally:
            try:
                pieces.send(result)
                pieces.loop.call_soon_threadsafe(self.slots.release)
            except RuntimeError:  # the event loop is gone: the server is shutting down
                pass


class Embedder:
    def __init__(self, path: Path, max_concurrency: int) -> None:
        from sentence_transformers import SentenceTransformer

        self.model = SentenceTransformer(str(path), device="cpu", local_files_only=True)
        self.dimensions = int(self.model.get_embedding_dimension() or 0)
        self.slots = asyncio.Semaphore(max_concurrency)

    async def embed(self, texts: list[str]) -> tuple[list[Any], int]:
        """Unit-length float32 vectors (numpy) and the number of tokens read."""
        async with self.slots:
            return await asyncio.to_thread(self._embed, texts)

    def _embed(self, texts: list[str]) -> tuple[list[Any], int]:
        tokens = self.model.tokenizer(texts, truncation=True, max_length=self.model.max_seq_length)[
            "input_ids"
        ]
        vectors = self.model.encode(
            texts, convert_to_numpy=True, normalize_embeddings=True, show_progress_bar=False
        )
        return list(vectors), sum(len(t) for t in tokens)
