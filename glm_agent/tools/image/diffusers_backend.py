"""Local text-to-image with diffusers: a pipeline from a folder or a hub id, loaded once per session.

The pipeline is loaded lazily on the first call, in a worker thread (loading real weights takes
seconds to minutes and must not block the event loop), then reused. CUDA is used when present
(fp16 by default, bf16 on request), else CPU in fp32 (half precision is slow or unsupported
there). Generation also runs in a thread; a cancelled call stops at the next denoising step.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import inspect
import logging
import os
import re
import secrets
import threading
import warnings
from pathlib import Path
from typing import Any, Iterator
from urllib.parse import urlsplit

from glm_agent.tools.image.backend import NOT_SET_UP, GeneratedImage, ImageGenerationError, ImageRequest, SizeRule

__all__ = ["DiffusersBackend", "MODEL_ENV", "resolve_device", "quiet_loading", "HubLog"]

MODEL_ENV = "GLM_AGENT_IMAGE_MODEL"

_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
# Distilled few-step models: many steps or classifier-free guidance make them worse, not better.
_FEW_STEP = re.compile(r"turbo|lightning|lcm|schnell|hyper", re.IGNORECASE)
_DTYPES = {"float16": "float16", "fp16": "float16", "half": "float16", "bfloat16": "bfloat16",
           "bf16": "bfloat16", "float32": "float32", "fp32": "float32"}


class _Cancelled(Exception):
    """Raised inside the denoising loop when the awaiting call was cancelled."""


def resolve_device(device: str | None = None) -> str:
    """"auto"/None -> cuda if available, else mps, else cpu; anything else is passed through."""
    import torch

    if device and device != "auto":
        if device.startswith("cuda") and not torch.cuda.is_available():
            raise ImageGenerationError(
                f"device {device!r} was requested but CUDA is not available here; use --device auto or cpu."
            )
        return device

    if torch.cuda.is_available():
        return "cuda"
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        return "mps"
    return "cpu"


def _dtype_keyword() -> str:
    """diffusers renamed `torch_dtype` to `dtype` (0.36+ warns on the old name); older ones need it."""
    try:
        from diffusers.utils import deprecation_utils

        return "dtype" if hasattr(deprecation_utils, "_resolve_dtype") else "torch_dtype"
    except ImportError:
        return "torch_dtype"


@contextlib.contextmanager
def quiet_loading() -> Iterator[None]:
    """Silence loading progress bars and advisory warnings (missing accelerate/torchvision).

    They would scribble over the chat terminal; real failures still raise.
    """
    from diffusers.utils import logging as dlog
    from transformers.utils import logging as tlog

    # diffusers passes an argument huggingface_hub has deprecated; nothing a user can act on.
    warnings.filterwarnings("ignore", message=".*local_dir_use_symlinks.*")

    saved = [(m, m.get_verbosity(), m.is_progress_bar_enabled()) for m in (dlog, tlog)]
    for module in (dlog, tlog):
        module.set_verbosity(module.ERROR)
        module.disable_progress_bar()
    try:
        yield
    finally:
        for module, verbosity, bars in saved:
            module.set_verbosity(verbosity)
            if bars:
                module.enable_progress_bar()


class HubLog(logging.Handler):
    """Keeps huggingface_hub's warnings instead of printing them: offline, it logs two lines
    per attempt ("... thrown while requesting HEAD URL", "Retrying in 2s [Retry 2/5]"), which
    would spill into the chat. `summary()` says the same in one line."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    @contextlib.contextmanager
    def capture(self) -> Iterator[HubLog]:
        """Within the block, huggingface_hub's records come here, and only here."""
        import huggingface_hub.utils.logging  # noqa: F401 - adds its stderr handler now, so it can be set aside

        logger = logging.getLogger("huggingface_hub")
        handlers, propagate = logger.handlers[:], logger.propagate
        logger.handlers[:] = [self]
        logger.propagate = False
        try:
            yield self
        finally:
            logger.handlers[:] = handlers
            logger.propagate = propagate

    def summary(self) -> str | None:
        """E.g. "127.0.0.1:9 could not be reached ([Errno 111] Connection refused; 6 attempts)",
        or None when no request failed."""
        failures = []
        for record in self.records:
            reason, found, request = record.getMessage().partition(" thrown while requesting ")
            if found:
                failures.append((reason.strip().strip("'\""), request.split()[-1] if request.split() else ""))
        if not failures:
            return None
        reason, url = failures[-1]
        where = urlsplit(url).netloc or "the Hugging Face hub"
        return f"{where} could not be reached ({reason}; {len(failures)} attempt{'s' * (len(failures) > 1)})"


class DiffusersBackend:
    """Text-to-image with a local diffusers pipeline.

    Args:
        model: a folder holding a diffusers pipeline (`model_index.json`) or a hub id such as
            `stabilityai/sdxl-turbo` (needs hub access the first time). Default: `$GLM_AGENT_IMAGE_MODEL`.
        device: "auto" (default), "cuda", "cuda:1", "cpu", "mps".
        dtype: "auto" (fp16 on CUDA, fp32 elsewhere), "float16", "bfloat16" or "float32".
        steps: default denoising steps (4 for turbo/lightning/LCM models, else 30).
        guidance: default classifier-free guidance (0 for turbo-like models, else the pipeline's).
        variant: weight-file variant to load from the hub, e.g. "fp16" (smaller download).
    """

    name = "diffusers"
    size_rule = SizeRule(min_side=64, max_side=2048, multiple=8)

    def __init__(
        self,
        model: str | os.PathLike[str] | None = None,
        *,
        device: str | None = None,
        dtype: str | None = None,
        steps: int | None = None,
        guidance: float | None = None,
        variant: str | None = None,
    ) -> None:
        model = model if model is not None else os.environ.get(MODEL_ENV) or None
        self.model = str(model) if model is not None else ""
        self.device_request = device
        self.dtype_request = dtype
        self.default_steps = steps
        self.default_guidance = guidance
        self.variant = variant
        self.device: str | None = None
        self.load_seconds: float | None = None
        self._pipe: Any = None
        self._load_lock = asyncio.Lock()
        self._run_lock = threading.Lock()  # one denoising loop at a time: pipelines keep state
        self._cancel_events: set[threading.Event] = set()

    # -- loading -------------------------------------------------------------------------

    def _source(self) -> tuple[str, bool]:
        """Return (what to pass to from_pretrained, is_local), or raise a helpful error."""
        if not self.model:
            raise ImageGenerationError(
                "no text-to-image model is configured. Start with `--image-model <folder or hub id>` "
                f"(e.g. stabilityai/sdxl-turbo) or set {MODEL_ENV}; or use the cogview backend with "
                f"ZHIPUAI_API_KEY set. {NOT_SET_UP}"
            )
        path = Path(self.model).expanduser()
        if path.is_dir():
            if not (path / "model_index.json").is_file():
                raise ImageGenerationError(
                    f"the image model folder {str(path)!r} is not a diffusers pipeline (it has no "
                    "model_index.json). Point the image model at a folder saved with "
                    "`pipe.save_pretrained(folder)` or downloaded in diffusers format."
                )
            return str(path), True
        if path.exists():
            raise ImageGenerationError(f"the image model {str(path)!r} is a file, not a pipeline folder.")
        looks_like_path = self.model.startswith((".", "/", "~")) or "\\" in self.model or self.model.count("/") > 1
        if looks_like_path or not _HUB_ID.match(self.model):
            raise ImageGenerationError(
                f"the image model folder {str(path)!r} does not exist. Check the path given with "
                f"--image-model / {MODEL_ENV}, or give a hub id like stabilityai/sdxl-turbo."
            )
        return self.model, False

    def problem(self) -> str | None:
        """Why this backend cannot work at all (no model, a folder that is not a pipeline), or
        None; a hub id is not looked up (that needs the network)."""
        try:
            self._source()
        except ImageGenerationError as exc:
            return str(exc).removesuffix(NOT_SET_UP).strip()
        return None

    def _torch_dtype(self, device: str) -> Any:
        import torch

        want = (self.dtype_request or "auto").lower()
        if want == "auto":
            return torch.float16 if device.startswith("cuda") else torch.float32
        if want not in _DTYPES:
            raise ImageGenerationError(f"unknown dtype {self.dtype_request!r}; use float16, bfloat16 or float32.")
        return getattr(torch, _DTYPES[want])

    def load(self) -> Any:
        """Load the pipeline now (blocking) and return it; later calls reuse it."""
        if self._pipe is not None:
            return self._pipe
        import time

        source, local = self._source()
        started = time.perf_counter()
        device = resolve_device(self.device_request)
        dtype = self._torch_dtype(device)
        try:
            with quiet_loading():  # importing the pipelines logs optional-dependency notices
                from diffusers import AutoPipelineForText2Image, DiffusionPipeline
        except ImportError as exc:  # the [image] extra is not installed
            raise ImageGenerationError(
                f"the diffusers backend needs `pip install 'glm-agent[image]'` ({exc})."
            ) from None
        kwargs: dict[str, Any] = {_dtype_keyword(): dtype}
        if local:
            kwargs["local_files_only"] = True  # a folder never needs the network
        if self.variant:
            kwargs["variant"] = self.variant
        hub = HubLog()
        try:
            with quiet_loading(), hub.capture():
                try:
                    pipe = AutoPipelineForText2Image.from_pretrained(source, **kwargs)
                except ValueError as exc:
                    # AutoPipeline knows the common families only; any other text-to-image
                    # pipeline class still loads through the generic entry point.
                    if "AutoPipeline" not in str(exc) and "not supported" not in str(exc):
                        raise
                    pipe = DiffusionPipeline.from_pretrained(source, **kwargs)
        except ImageGenerationError:
            raise
        except OSError as exc:
            first = str(exc).strip().splitlines()[0].rstrip(".") if str(exc).strip() else type(exc).__name__
            if local:
                raise ImageGenerationError(
                    f"could not load the image model from {source!r}: {first}. The folder looks "
                    "incomplete; save or download the pipeline again."
                ) from None
            offline = " (HF_HUB_OFFLINE is set)" if os.environ.get("HF_HUB_OFFLINE", "") not in ("", "0") else ""
            # Offline, the hub's own error only says a file is missing: the retries say why.
            first = hub.summary() or first
            raise ImageGenerationError(
                f"could not load image model {source!r} from the Hugging Face hub{offline}: {first}. If this "
                f"machine is offline, download it where the hub is reachable (`hf download {source}`) "
                "and pass the local folder with --image-model."
            ) from None
        except Exception as exc:  # corrupt weights, wrong class, missing components ...
            network = f" ({hub.summary()})" if hub.summary() else ""
            raise ImageGenerationError(
                f"could not load image model {source!r}: {type(exc).__name__}: {exc}{network}"
            ) from None
        pipe = pipe.to(device)
        pipe.set_progress_bar_config(disable=True)
        self.device = device
        self._pipe = pipe
        self.load_seconds = time.perf_counter() - started
        return pipe

    async def _ensure_loaded(self) -> Any:
        if self._pipe is not None:
            return self._pipe
        async with self._load_lock:  # concurrent first calls load once
            if self._pipe is None:
                await asyncio.to_thread(self.load)
        return self._pipe

    # -- generation ----------------------------------------------------------------------

    def native_size(self) -> tuple[int, int] | None:
        """The size the loaded model was trained at (e.g. 512 for SD 1.5, 64 for the tiny test pipe)."""
        pipe = self._pipe
        if pipe is None:
            return None
        scale = int(getattr(pipe, "vae_scale_factor", 8) or 8)
        sample = getattr(pipe, "default_sample_size", None)
        if sample is None:
            unet = getattr(pipe, "unet", None) or getattr(pipe, "transformer", None)
            sample = getattr(getattr(unet, "config", None), "sample_size", None)
        if isinstance(sample, (list, tuple)):
            return int(sample[1]) * scale, int(sample[0]) * scale
        if isinstance(sample, int):
            return sample * scale, sample * scale
        return None

    def _defaults(self) -> tuple[int, float | None]:
        few_step = bool(_FEW_STEP.search(self.model))
        steps = self.default_steps or (4 if few_step else 30)
        guidance = self.default_guidance
        if guidance is None and few_step:
            guidance = 0.0
        return steps, guidance

    def _run(self, pipe: Any, request: ImageRequest, cancel: threading.Event) -> GeneratedImage:
        import torch

        default_steps, default_guidance = self._defaults()
        steps = request.steps or default_steps
        guidance = request.guidance if request.guidance is not None else default_guidance
        seed = request.seed if request.seed is not None else secrets.randbelow(2**31)
        width, height = request.width, request.height
        if width is None or height is None:
            width, height = self.native_size() or (512, 512)
        params = inspect.signature(pipe.__call__).parameters
        kwargs: dict[str, Any] = {
            "prompt": request.prompt,
            "num_inference_steps": steps,
            "width": width,
            "height": height,
            # A CPU generator gives the same picture for a seed on every device.
            "generator": torch.Generator(device="cpu").manual_seed(seed),
        }
        if guidance is not None and "guidance_scale" in params:
            kwargs["guidance_scale"] = guidance
        if request.negative_prompt and "negative_prompt" in params:
            kwargs["negative_prompt"] = request.negative_prompt
        if "callback_on_step_end" in params:

            def on_step(_pipe: Any, _step: int, _t: Any, tensors: dict[str, Any]) -> dict[str, Any]:
                if cancel.is_set():
                    raise _Cancelled()
                return tensors

            kwargs["callback_on_step_end"] = on_step
        with self._run_lock:
            if cancel.is_set():
                raise _Cancelled()
            try:
                with torch.inference_mode():
                    out = pipe(**kwargs)
            except _Cancelled:
                raise
            except torch.OutOfMemoryError:
                if str(self.device).startswith("cuda"):
                    torch.cuda.empty_cache()
                raise ImageGenerationError(
                    f"out of GPU memory generating {width}x{height}; try a smaller size or fewer steps."
                ) from None
            except MemoryError:
                raise ImageGenerationError(
                    f"out of memory generating {width}x{height}; try a smaller size."
                ) from None
        image = out.images[0]
        return GeneratedImage(
            image=image,
            backend=self.name,
            model=self.model,
            seed=seed,
            steps=steps,
            extra={"device": self.device, "guidance": guidance},
        )

    async def generate(self, request: ImageRequest) -> GeneratedImage:
        pipe = await self._ensure_loaded()
        cancel = threading.Event()
        self._cancel_events.add(cancel)
        task = asyncio.ensure_future(asyncio.to_thread(self._run, pipe, request, cancel))
        # After a cancellation nobody awaits the worker: retrieve its _Cancelled quietly.
        task.add_done_callback(lambda t: t.cancelled() or t.exception())
        try:
            # shield: on cancellation (tool timeout, Ctrl-C) we tell the worker thread to stop
            # at its next step instead of abandoning it mid-loop with the run lock held.
            return await asyncio.shield(task)
        except asyncio.CancelledError:
            cancel.set()
            raise
        finally:
            self._cancel_events.discard(cancel)

    async def aclose(self) -> None:
        """Stop running generations and free the pipeline's memory (CPU RAM and GPU VRAM)."""
        for event in list(self._cancel_events):
            event.set()
        pipe, self._pipe = self._pipe, None
        if pipe is None:
            return
        device = self.device or ""
        del pipe
        gc.collect()
        if device.startswith("cuda"):
            import torch

            torch.cuda.empty_cache()

    def __repr__(self) -> str:
        return f"<DiffusersBackend model={self.model!r} device={self.device or self.device_request or 'auto'}>"
