"""A tiny random-weight Stable Diffusion pipeline, built offline, for tests and benchmarks.

No text-to-image weights can be downloaded in our CI (no hub access, nothing on PyPI), so the
tests exercise the real diffusers code path with a pipeline built from configs: a 2-layer CLIP
text encoder, a 2-block UNet, a 2-block VAE (latent = image / 2) and DDIM. About 1.7M
parameters; 64x64 with 4 steps takes ~0.2 s on one CPU core. The pictures are noise.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

__all__ = ["TINY_VOCAB", "build_tiny_pipeline", "save_tiny_pipeline"]

# A small word-level vocabulary: enough that test prompts tokenize to real ids.
TINY_VOCAB = (
    "a an the of in on with and at by photo picture painting drawing image cat dog bird fish "
    "tree house car boat sky sea mountain city river flower sun moon red green blue yellow "
    "black white small big cute old new happy night day"
).split()


def _tiny_tokenizer() -> Any:
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    specials = ["<pad>", "<unk>", "<bos>", "<eos>"]
    vocab = {tok: i for i, tok in enumerate(specials + TINY_VOCAB)}
    tk = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tk.normalizer = normalizers.Lowercase()
    tk.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(
        tokenizer_object=tk,
        bos_token="<bos>",
        eos_token="<eos>",
        pad_token="<pad>",
        unk_token="<unk>",
        model_max_length=77,
    )


def build_tiny_pipeline(seed: int = 0) -> Any:
    """Return a `StableDiffusionPipeline` with random weights (deterministic for a seed)."""
    import torch

    from glm_agent.tools.image.diffusers_backend import quiet_loading

    with quiet_loading():  # importing the pipelines logs optional-dependency notices
        from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel
        from transformers import CLIPTextConfig, CLIPTextModel

    torch.manual_seed(seed)
    tokenizer = _tiny_tokenizer()
    text_encoder = CLIPTextModel(
        CLIPTextConfig(
            vocab_size=1000,
            hidden_size=32,
            intermediate_size=37,
            num_attention_heads=4,
            num_hidden_layers=2,
            max_position_embeddings=77,
            pad_token_id=tokenizer.pad_token_id,
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
        )
    )
    unet = UNet2DConditionModel(
        sample_size=32,
        in_channels=4,
        out_channels=4,
        layers_per_block=1,
        block_out_channels=(32, 64),
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=32,
        norm_num_groups=32,
    )
    vae = AutoencoderKL(
        in_channels=3,
        out_channels=3,
        block_out_channels=(32, 64),
        down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
        up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"),
        latent_channels=4,
        layers_per_block=1,
        norm_num_groups=32,
    )
    scheduler = DDIMScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        clip_sample=False,
        set_alpha_to_one=False,
        steps_offset=1,  # the value real SD checkpoints use; avoids a deprecation notice
    )
    pipe = StableDiffusionPipeline(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        unet=unet,
        scheduler=scheduler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


def save_tiny_pipeline(folder: str | Path, seed: int = 0) -> Path:
    """Build the tiny pipeline and `save_pretrained` it into `folder` (~7 MB); return the folder."""
    from glm_agent.tools.image.diffusers_backend import quiet_loading

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    with quiet_loading():
        build_tiny_pipeline(seed).save_pretrained(folder)
    return folder
