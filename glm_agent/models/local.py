"""`LocalModel`: the `ChatModel` backed by our own decoder engine.

One turn: render messages + tools (the model's own chat template, else the dialect), encode
(markup as control tokens, message content as plain text), run `Engine.generate` in a worker thread, turn tokens into text with the incremental
detokenizer, and feed the text to the dialect's streaming parser, which cuts it at stop strings, so
plain answers stream at once and tool calls come out whole. Generations run on the model's one
`engine.scheduler.Scheduler`: concurrent streams (several agents, `serve`, evals) decode in the
same batch, and a prompt that starts like an earlier one (an agent's next step) reuses its KV
blocks and computes only what is new (`ModelDone.cached_tokens` counts the reused tokens). Events cross from the worker
thread to the caller's event loop through a queue; leaving the `async for` early (or
cancelling the task) stops generation within one token.

The model loads on first use, so constructing a LocalModel is instant.
"""

from __future__ import annotations

import asyncio
import contextvars
import threading
from contextlib import ExitStack, contextmanager
from typing import TYPE_CHECKING, Any, AsyncIterator, Iterator, Sequence

from glm_agent.core.contracts import GenerationSettings, ToolSpec
from glm_agent.core.errors import ContextOverflowError, ModelError
from glm_agent.core.events import ModelDone, ModelEvent, TextDelta, ToolCallReady
from glm_agent.core.messages import Message, ToolMessage
from glm_agent.core.progress import report_progress
from glm_agent.engine import errors as engine_errors
from glm_agent.engine.params import SamplingParams

if TYPE_CHECKING:
    from pathlib import Path

    import torch

    from glm_agent.engine.loading import Checkpoint
    from glm_agent.engine.prompt import Prompt
    from glm_agent.models.templates import ChatTemplate

__all__ = [
    "LocalModel",
    "resolve_device",
    "resolve_dtype",
    "sampling_params",
    "model_error",
    "engine_errors_as_model_errors",
]

_DTYPES = {
    "float32": "float32", "fp32": "float32", "f32": "float32",
    "bfloat16": "bfloat16", "bf16": "bfloat16",
    "float16": "float16", "fp16": "float16", "f16": "float16", "half": "float16",
}
_END = object()
_UNSET = object()


def _default_constrained() -> bool:
    import os

    from glm_agent.models.constrain import available

    return os.environ.get("GLM_AGENT_CONSTRAINED", "1").strip().lower() not in ("0", "false", "no", "off") and available()


class _PlainParser:
    """tool_choice "none": the turn is text only, cut at the stop strings (no call is read)."""

    def __init__(self, stops):
        from glm_agent.models.dialects.base import StopScanner

        self._scanner = StopScanner(stops)

    @property
    def stopped(self) -> bool:
        return self._scanner.hit

    def feed(self, text: str) -> list:
        out = self._scanner.feed(text)
        return [TextDelta(text=out)] if out else []

    def finish(self) -> list:
        out = self._scanner.flush()
        return [TextDelta(text=out)] if out else []


def sampling_params(settings: GenerationSettings) -> SamplingParams:
    """The engine's sampling parameters for the runtime's settings (ValueError when out of range)."""
    return SamplingParams(
        temperature=settings.temperature,
        top_p=settings.top_p,
        top_k=settings.top_k,
        repetition_penalty=settings.repetition_penalty,
        seed=settings.seed,
    )


def model_error(exc: engine_errors.EngineError) -> ModelError:
    """The runtime's error for an engine error: the same message, the engine's error as cause."""
    kind = ContextOverflowError if isinstance(exc, engine_errors.ContextOverflowError) else ModelError
    err = kind(str(exc))
    err.__cause__ = exc
    return err


@contextmanager
def engine_errors_as_model_errors() -> Iterator[None]:
    """Raise the engine's errors as `ModelError`s (the boundary between the two layers)."""
    try:
        yield
    except engine_errors.EngineError as exc:
        raise model_error(exc) from exc


def resolve_device(device: str) -> str:
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


def resolve_dtype(dtype: "str | torch.dtype | None", device: str) -> "torch.dtype":
    """None: bf16 on CUDA and on CPU (half the memory of fp32, faster matmuls on AVX-512)."""
    import torch

    if dtype is None:
        return torch.bfloat16
    if isinstance(dtype, torch.dtype):
        return dtype
    key = _DTYPES.get(str(dtype).lower().removeprefix("torch."))
    if key is None:
        raise ModelError(f"unknown dtype {dtype!r}: use float32, bfloat16 or float16")
    return getattr(torch, key)


class LocalModel:
    """A `ChatModel` running a local checkpoint with our engine.

    path_or_name: "embedded" (default), "smollm2", a .gguf file or a checkpoint folder.
    device: "auto" | "cpu" | "cuda[:n]". dtype: compute dtype (default bf16).
    quant: "int8" | "int4" | dict | "none": weight-only quantization. None (default) picks int4
        (lm_head too) for the embedded model on CPU and float otherwise. GGUF sources are quantized once
        into the cache folder and reloaded from there (`cache_quantized=False` to skip).
    dialect: override the tool-call dialect ("hermes", "glm4", "glm4_0414").
    use_template: render with the model's own chat template (default: when it has one and
        the dialect is not "glm4", whose HF template reads tools from inside messages).
    apar: APAR parallel decoding (`glm_agent.engine.apar`): the model's `[Fork]` starts a child
        stream decoded in the same batch; text arrives in document order. Needs an APAR-tuned
        checkpoint. apar_tokens: (fork, child) token names (default "[Fork]"/"[Child]", then
        "[SplitMask]"/"[SplitSop]"). apar_options: AparDecoder keywords (max_streams,
        max_depth, schedule).
    tool_result_nudge: text appended to tool results (default: the checkpoint's choice; the
        embedded Qwen-Coder needs it to stop re-calling tools). Pass "" to disable.
    constrained: grammar-constrained tool calls (`glm_agent.models.constrain`): once the model
        opens a call, its name is one of the tools and its arguments match the tool's schema.
        Default: on when llguidance is installed, unless $GLM_AGENT_CONSTRAINED is "0";
        `GenerationSettings.constrained` overrides it per request. `tool_choice` "required" /
        named and `response_format` always use the grammar (not on the APAR path).
    """

    batches = True  # concurrent streams decode in one batch (servers need not queue them)

    def __init__(
        self,
        path_or_name: str = "embedded",
        device: str = "auto",
        dtype: "str | torch.dtype | None" = None,
        quant: Any = None,
        dialect: str | None = None,
        max_context: int | None = None,
        *,
        use_template: bool | None = None,
        tool_result_nudge: str | None = None,
        settings: GenerationSettings | None = None,
        progress: bool = True,
        apar: bool = False,
        apar_tokens: tuple[str, str] | None = None,
        apar_options: dict | None = None,
        cache_quantized: bool = True,
        constrained: bool | None = None,
    ):
        self.path_or_name = str(path_or_name)
        self.constrained = _default_constrained() if constrained is None else constrained
        # What the last constrained turn's masks cost (bench/constrained.py reads it).
        self.constraint_stats: dict[str, float] = {}
        self.name = f"local:{self.path_or_name}"
        self.device = device
        self.dtype = dtype
        self.quant = quant
        self.max_context = max_context
        self.default_settings = settings or GenerationSettings()
        self._dialect_name = dialect
        self._use_template = use_template
        self._nudge = tool_result_nudge
        self._progress = progress
        self.apar = apar
        self.cache_quantized = cache_quantized
        self._apar_tokens = apar_tokens
        self._apar_options = dict(apar_options or {})
        self._checkpoint: "Checkpoint | None" = None
        self._chat_template: Any = _UNSET
        self._engine = None
        self._load_lock = threading.Lock()
        self._scheduler = None

    # ---- loading ----------------------------------------------------------------------------
    @property
    def checkpoint(self) -> "Checkpoint":
        """Config, tokenizer and template source (opened on first access; weights not read)."""
        with self._load_lock, engine_errors_as_model_errors():
            if self._checkpoint is None:
                from glm_agent.core.progress import fraction_reporter, listening
                from glm_agent.engine.loading import open_checkpoint

                # Joining the embedded model's parts (first use): through the caller's display if it has one.
                progress = fraction_reporter("preparing") if self._progress and listening() else self._progress
                self._checkpoint = open_checkpoint(self.path_or_name, progress=progress)
            return self._checkpoint

    @property
    def chat_template(self) -> "ChatTemplate | None":
        """The checkpoint's own chat template, compiled on first use (None: it has none)."""
        if self._chat_template is _UNSET:
            from glm_agent.models.templates import ChatTemplate

            ck = self.checkpoint
            tok = ck.tokenizer
            self._chat_template = (
                ChatTemplate(ck.chat_template, bos_token=tok.bos_token, eos_token=tok.eos_token)
                if ck.chat_template else None
            )
        return self._chat_template

    @property
    def tokenizer(self):
        return self.checkpoint.tokenizer

    @property
    def dialect(self):
        from glm_agent.models.dialects import get_dialect

        return get_dialect(self._dialect_name or self.checkpoint.dialect)

    @property
    def engine(self):
        """The loaded engine (weights read and dequantized on first access)."""
        ck = self.checkpoint
        with self._load_lock, engine_errors_as_model_errors():
            if self._engine is None:
                from glm_agent.engine.engine import Engine

                device = resolve_device(self.device)
                dtype = resolve_dtype(self.dtype, device)
                quant = self._resolved_quant(device)
                if quant is not None and ck.source == "gguf" and self.cache_quantized:
                    config, weights = self._cached_quantized(ck, quant)
                    quant = None  # the stored tensors are already quantized
                else:
                    # GGUF weights are dequantized straight to the compute dtype (one copy only).
                    config, weights = ck.config, ck.weights(dtype)
                self._engine = Engine.from_weights(
                    config, weights, device=device, dtype=dtype,
                    quant=quant, max_context=self.max_context,
                )
            return self._engine

    @property
    def scheduler(self):
        """The continuous-batching scheduler every generation of this model goes through."""
        engine = self.engine
        with self._load_lock:
            if self._scheduler is None or self._scheduler.engine is not engine:
                from glm_agent.engine.scheduler import Scheduler

                self._scheduler = Scheduler(engine)
            return self._scheduler

    def _resolved_quant(self, device: str) -> dict | None:
        """`quant=None` means: int4 (lm_head included) for the embedded model on CPU, where it
        decodes fastest with the same greedy text (bench/cpu_decode.py measures it); float
        otherwise."""
        quant = self.quant
        if quant is None and self.path_or_name == "embedded" and device == "cpu":
            quant = {"bits": 4, "group_size": 128, "lm_head": True}
        if quant is None:
            return None
        from glm_agent.engine.quant import normalize_quant

        return normalize_quant(quant)

    def quantization_plan(self) -> "tuple[dict | None, Path | None]":
        """What loading will use, without loading: the quantization on this device (None: float)
        and, for a GGUF quantized once into the cache, that folder (made on first load)."""
        quant = self._resolved_quant(resolve_device(self.device))
        ck = self.checkpoint
        if quant is None or ck.source != "gguf" or not self.cache_quantized:
            return quant, None
        return quant, self._quantized_folder(ck, quant)[1]

    @staticmethod
    def _quantized_folder(ck: "Checkpoint", quant: dict) -> "tuple[str, Path]":
        """The tag and cache folder of `ck` quantized as `quant` (keyed by the file's path, size, time)."""
        import hashlib

        from glm_agent.engine.embedded import cache_dir

        st = ck.path.stat()
        key = hashlib.sha1(f"{ck.path.resolve()}|{st.st_size}|{st.st_mtime_ns}".encode()).hexdigest()[:10]
        tag = f"int{quant['bits']}" + (f"-g{quant['group_size']}" if quant["group_size"] else "")
        tag += "-head" if quant["lm_head"] else ""
        return tag, cache_dir() / "quantized" / f"{ck.path.stem}.{tag}.{key}"

    def _cached_quantized(self, ck: "Checkpoint", quant: dict):
        """Quantize a GGUF once into the cache folder and load the stored int4/int8 tensors
        from then on (re-quantizing 1.5B weights costs about a minute on 2 cores)."""
        from glm_agent.core.progress import fraction_reporter
        from glm_agent.engine.loaders.quantized import load_quantized_checkpoint, quantize_cached

        tag, folder = self._quantized_folder(ck, quant)
        # Safe across processes: one quantizes, the others wait for it and reuse the folder.
        label = f"glm-agent: quantizing {ck.name} to {tag} once (cached in {folder})"
        quantize_cached(ck.path, folder, quant["bits"], quant["group_size"], quant["lm_head"],
                        steps=fraction_reporter("preparing", label if self._progress else None),
                        waiting=lambda: report_progress("preparing"))
        return load_quantized_checkpoint(folder)

    def load(self) -> "LocalModel":
        """Load now instead of on the first `stream` call."""
        self.engine  # noqa: B018
        return self

    # ---- prompt -----------------------------------------------------------------------------
    def _nudged(self, messages: Sequence[Message]) -> list[Message]:
        nudge = self.checkpoint.tool_result_nudge if self._nudge is None else self._nudge
        if not nudge:
            return list(messages)
        from glm_agent.engine.loading import TOOL_ERROR_NUDGE

        return [
            m.model_copy(update={"content": f"{m.content}\n\n{TOOL_ERROR_NUDGE if m.is_error else nudge}"})
            if isinstance(m, ToolMessage) else m
            for m in messages
        ]

    def render(self, messages: Sequence[Message], tools: Sequence[ToolSpec] = ()) -> str:
        """The exact prompt text this model is given for `messages` + `tools`."""
        return self.render_prompt(messages, tools).text

    def render_prompt(self, messages: Sequence[Message], tools: Sequence[ToolSpec] = ()) -> "Prompt":
        """The prompt text and which of it is message content (encoded as plain text)."""
        ck = self.checkpoint
        messages = self._nudged(messages)
        dialect_name = self._dialect_name or ck.dialect
        use = self._use_template
        if use is None:
            use = ck.chat_template is not None and dialect_name != "glm4"
        if use and self.chat_template is not None:
            return self.chat_template.render_prompt(
                messages, list(tools), add_generation_prompt=True, markup_tokens=ck.tokenizer.markup_tokens
            )
        return self.dialect.render_prompt(messages, list(tools), add_generation_prompt=True)

    # ---- generation -------------------------------------------------------------------------
    async def stream(
        self,
        messages: list[Message],
        tools: list[ToolSpec],
        settings: GenerationSettings | None = None,
    ) -> AsyncIterator[ModelEvent]:
        settings = settings or self.default_settings
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue = asyncio.Queue()
        cancel = threading.Event()

        def put(item: Any) -> None:
            loop.call_soon_threadsafe(queue.put_nowait, item)

        def work() -> None:
            try:
                if not cancel.is_set():
                    self._run(messages, tools, settings, put, cancel)
            except engine_errors.EngineError as exc:  # the runtime's type, for the consumer
                put(model_error(exc))
            except BaseException as exc:  # delivered to the consumer, re-raised there
                put(exc)
            finally:
                put(_END)

        # The caller's context goes along: it carries the progress handler (core.progress).
        thread = threading.Thread(target=contextvars.copy_context().run, args=(work,),
                                  name=f"{self.name}-generate", daemon=True)
        thread.start()
        try:
            while True:
                item = await queue.get()
                if item is _END:
                    break
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            cancel.set()
            running = getattr(cancel, "generation", None)
            if running is not None:  # leave the batch now, not after the next token
                await asyncio.get_running_loop().run_in_executor(None, running.close)
            # Wait for the worker to leave the engine before anyone reuses it.
            await asyncio.get_running_loop().run_in_executor(None, thread.join)

    def _run(self, messages, tools, settings: GenerationSettings, put, cancel: threading.Event) -> None:
        """Worker thread: prompt -> tokens -> text -> parsed events."""
        if self._engine is None:
            report_progress("loading")
        tok = self.tokenizer
        apar = None
        if self.apar:  # resolve the control tokens first: a non-APAR model fails clearly
            from glm_agent.engine.apar import AparDecoder, AparTokens

            apar = AparDecoder(self.engine, AparTokens.from_tokenizer(tok, *(self._apar_tokens or (None, None))),
                               **self._apar_options)
        from glm_agent.models.constrain import normalize_tool_choice

        try:
            choice = normalize_tool_choice(settings.tool_choice, tools)
        except ValueError as exc:
            raise ModelError(str(exc)) from None
        if choice == "none":
            tools = []  # the model is not shown tools and no call is read from its text
        # Only the template's markup may become control tokens: a `<|im_start|>system` inside a
        # tool result or a web page is encoded as the text it is.
        ids = tok.encode_prompt(self.render_prompt(messages, tools))
        engine = self.engine
        limit = engine.max_context
        if len(ids) >= limit:
            raise ContextOverflowError(
                f"the conversation is {len(ids)} tokens, the model's context is {limit}: "
                "shorten the conversation (drop old turns or tool output) or raise max_context."
            )
        max_new = min(settings.max_new_tokens, limit - len(ids))
        sampling = sampling_params(settings)
        dialect = self.dialect
        # The parser cuts the text at the dialect's and the caller's stop strings.
        parser = dialect.parser(tools, stop=settings.stop) if choice != "none" else \
            _PlainParser((*dialect.stop_strings, *settings.stop))
        stop_ids = set(tok.eos_ids) | set(self.checkpoint.config.eos_token_ids)
        constraint = None if apar is not None else self._constraint(tools, choice, settings, dialect.name, stop_ids)
        detok = tok.detokenizer()
        said: list[str] = []  # the turn's text, to find a call the token limit cut off
        finish = "length"
        n = 0
        saw_call = False

        def emit(text: str) -> None:
            nonlocal saw_call
            if not text:
                return
            said.append(text)
            for ev in parser.feed(text):
                saw_call |= isinstance(ev, ToolCallReady)
                put(ev)

        report_progress("prompt", len(ids))
        scheduler = self.scheduler
        with ExitStack() as hold:
            if apar is not None:  # tokens come in document order, control tokens dropped
                # APAR drives its own tree of streams: it holds the engine while it decodes.
                hold.enter_context(scheduler.exclusive())
                gen = apar.generate(ids, max_new, sampling, stop_token_ids=stop_ids)
            else:
                gen = cancel.generation = scheduler.submit(ids, max_new, sampling, stop_token_ids=stop_ids,
                                                           logits_processor=constraint)
                if cancel.is_set():  # the caller left while it was being submitted
                    gen.close()
            hold.callback(gen.close)  # frees the stream's KV blocks (runs before the engine is let go)
            for token in gen:
                n += 1
                if n == 1:
                    report_progress("generating")
                if token in stop_ids:
                    finish = "stop"
                    break
                emit(detok.push(token))
                if parser.stopped:
                    finish = "stop"
                    break
                if cancel.is_set():
                    finish = "cancelled"
                    break
            if cancel.is_set():  # closed from outside while waiting for a token
                finish = "cancelled"
        cut = None
        if finish != "cancelled":
            emit(detok.flush())  # nothing, once a stop string was seen
            if finish == "length" and choice != "none":
                from glm_agent.models.constrain import cut_off_call

                cut = cut_off_call("".join(said), dialect.name, tools)
            for ev in parser.finish():
                if cut is not None and not (isinstance(ev, ToolCallReady) and ev.call.arguments_error is None):
                    continue  # the unfinished call's text, or the parser's broken reading of it
                saw_call |= isinstance(ev, ToolCallReady)
                put(ev)
            if cut is not None:  # an error for the agent to report, not an answer: finish stays "length"
                put(ToolCallReady(call=cut))
                saw_call = False
        self.constraint_stats = {} if constraint is None else {
            "mask_seconds": constraint.mask_seconds, "masked_steps": constraint.masked_steps,
            "tokens": n, "calls_opened": constraint.calls_opened,
        }
        if saw_call:
            finish = "tool_calls"
        used = apar.stats.tokens if apar is not None else n  # APAR: every stream's tokens
        cached = 0 if apar is not None else gen.cached_tokens
        put(ModelDone(finish_reason=finish, prompt_tokens=len(ids), completion_tokens=used, cached_tokens=cached))

    def _constraint(self, tools, choice, settings: GenerationSettings, dialect: str, stop_ids):
        """The turn's grammar constraint (None: nothing to constrain, or constraints are off)."""
        from glm_agent.models.constrain import CallConstraint, available, response_schema

        forced = choice not in ("auto", "none") or response_schema(settings.response_format) is not None
        on = self.constrained if settings.constrained is None else settings.constrained
        if not forced and not (on and tools and choice == "auto"):
            return None
        if not available():
            raise ModelError('tool_choice "required"/named and response_format need llguidance: '
                             'pip install "glm-agent[engine]" (or pip install llguidance)')
        return CallConstraint(self.tokenizer, self.engine.vocab_size, tools, dialect, tool_choice=choice,
                              response_format=settings.response_format, stop_ids=sorted(stop_ids),
                              greedy=settings.temperature == 0 and settings.repetition_penalty == 1.0)

    async def complete(
        self, messages: list[Message], tools: list[ToolSpec] = (), settings: GenerationSettings | None = None
    ) -> tuple[str, list, ModelDone]:
        """Convenience: run `stream` to the end; (text, tool calls, done)."""
        text, calls, done = [], [], ModelDone()
        async for ev in self.stream(messages, list(tools), settings):
            if isinstance(ev, TextDelta):
                text.append(ev.text)
            elif isinstance(ev, ToolCallReady):
                calls.append(ev.call)
            else:
                done = ev
        return "".join(text), calls, done

    async def aclose(self) -> None:
        """Cancel what runs and drop the engine (frees the weights and KV cache)."""
        scheduler, self._scheduler = self._scheduler, None
        if scheduler is not None:
            await asyncio.get_running_loop().run_in_executor(None, scheduler.close)
        self._engine = None

    def __repr__(self) -> str:
        state = "loaded" if self._engine is not None else "not loaded"
        return f"<LocalModel {self.path_or_name!r} {state}>"
