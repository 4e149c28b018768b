#!/usr/bin/env python3
"""Regenerate the encoder and preprocessing fixtures in crates/framepack/tests/fixtures/.

    llama_tiny.safetensors            LlamaModel, hidden states (HunyuanVideo uses hidden_states[-3])
    clip_text_tiny.safetensors        CLIPTextModel, last_hidden_state + pooler_output
    siglip_vision_tiny.safetensors    SiglipVisionModel, last_hidden_state (+ MAP-head pooler_output)
    siglip_preprocess_tiny.safetensors  SiglipImageProcessor (PIL): uint8 40x56 -> pixel_values 32x32
    encoder_variants_tiny.safetensors other configs of the three towers (MQA with explicit head_dim
                                      and biases; CLIP's legacy argmax pooling and erf GELU; SigLIP
                                      with a patch remainder and no head), batch 2; a two-layer
                                      Llama with the real head_dim, theta and 351 tokens
    preprocess_pil.safetensors        Pillow 8-bit resizes (bilinear, bicubic, Lanczos) and FramePack's
                                      resize_and_center_crop on random uint8 images (both
                                      Pillow pass orders, see resize_h_first)

Tiny random-initialised transformers models with fixed seeds, on CPU; nothing is downloaded.
Weights are stored inside each file as `weights.<HF name>`, inputs as `in.*`, outputs as
`out.*`; the model config is in the safetensors metadata (`description` → `config`). The first
four files are tensor-identical to the shared reference harness for the same library versions
(torch 2.15, transformers 5.23, Pillow 13).

    python3 -m venv .venv && .venv/bin/pip install torch transformers safetensors numpy pillow
    .venv/bin/python tools/fixtures_encoders.py [--out crates/framepack/tests/fixtures]
"""
from __future__ import annotations

import argparse
import json
import os

import numpy as np
import torch
from PIL import Image
from safetensors.torch import save_file

from fixture_common import randomize_


def weights_of(module: torch.nn.Module) -> dict:
    return {f"weights.{k}": v for k, v in module.state_dict().items()}


def save(path: str, tensors: dict, metadata: dict) -> None:
    out = {}
    for k, v in tensors.items():
        v = v.detach()
        out[k] = (v.to(torch.float32) if v.dtype.is_floating_point else v).contiguous().clone()
    save_file(out, path, metadata={k: v if isinstance(v, str) else json.dumps(v) for k, v in metadata.items()})


def llama(out_dir: str) -> None:
    from transformers import LlamaConfig, LlamaModel

    cfg = LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=48, num_hidden_layers=4,
                      num_attention_heads=4, num_key_value_heads=2, hidden_act="silu",
                      max_position_embeddings=64, rms_norm_eps=1e-5, rope_theta=500000.0,
                      attention_bias=False, mlp_bias=False, tie_word_embeddings=False,
                      pad_token_id=0, bos_token_id=1, eos_token_id=2)
    cfg._attn_implementation = "eager"
    model = LlamaModel(cfg).eval()
    randomize_(model, 77)
    ids = torch.tensor([[1, 17, 33, 5, 60, 41, 9, 28, 2, 0, 0, 0]], dtype=torch.int64)
    mask = (ids != 0).to(torch.int64)
    mask[0, 0] = 1
    with torch.no_grad():
        o = model(input_ids=ids, attention_mask=mask, output_hidden_states=True)
    t = weights_of(model)
    t["in.input_ids"] = ids
    t["in.attention_mask"] = mask
    for i, h in enumerate(o.hidden_states):
        t[f"out.hidden_states.{i}"] = h
    t["out.hidden_states_minus3"] = o.hidden_states[-3]
    t["out.last_hidden_state"] = o.last_hidden_state
    desc = dict(config=cfg.to_diff_dict(), num_hidden_states=len(o.hidden_states), valid_len=int(mask.sum()),
                note="hidden_states[0]=embeddings, [i]=after layer i, last one has the final norm. "
                     "HunyuanVideo uses hidden_states[-3] (= output of layer L-2, no final norm). "
                     "Compare only the first valid_len positions.")
    save(os.path.join(out_dir, "llama_tiny.safetensors"), t, {"description": desc})


def clip_text(out_dir: str) -> None:
    from transformers import CLIPTextConfig, CLIPTextModel

    cfg = CLIPTextConfig(vocab_size=99, hidden_size=32, intermediate_size=37, projection_dim=32,
                         num_hidden_layers=2, num_attention_heads=4, max_position_embeddings=16,
                         hidden_act="quick_gelu", layer_norm_eps=1e-5, bos_token_id=97,
                         eos_token_id=98, pad_token_id=98)
    cfg._attn_implementation = "eager"
    model = CLIPTextModel(cfg).eval()
    randomize_(model, 78)
    ids = torch.tensor([[97, 12, 40, 7, 63, 98] + [98] * 10], dtype=torch.int64)
    with torch.no_grad():
        o = model(input_ids=ids, output_hidden_states=True)
    t = weights_of(model)
    t["in.input_ids"] = ids
    t["out.last_hidden_state"] = o.last_hidden_state
    t["out.pooler_output"] = o.pooler_output
    for i, h in enumerate(o.hidden_states):
        t[f"out.hidden_states.{i}"] = h
    desc = dict(config=cfg.to_diff_dict(),
                note="pooler_output = final_layer_norm(h)[first EOS position] (here index 5). "
                     "Causal mask, no padding mask (FramePack calls it without attention_mask).")
    save(os.path.join(out_dir, "clip_text_tiny.safetensors"), t, {"description": desc})


def siglip_vision(out_dir: str) -> None:
    from transformers import SiglipVisionConfig, SiglipVisionModel

    cfg = SiglipVisionConfig(hidden_size=32, intermediate_size=48, num_hidden_layers=2,
                             num_attention_heads=4, num_channels=3, image_size=32, patch_size=8,
                             hidden_act="gelu_pytorch_tanh", layer_norm_eps=1e-6)
    cfg._attn_implementation = "eager"
    model = SiglipVisionModel(cfg).eval()
    randomize_(model, 79)
    g = torch.Generator().manual_seed(80)
    px = torch.tanh(torch.randn(1, 3, 32, 32, generator=g))
    with torch.no_grad():
        o = model(pixel_values=px, output_hidden_states=True)
    t = weights_of(model)
    t["in.pixel_values"] = px
    t["out.last_hidden_state"] = o.last_hidden_state
    if o.pooler_output is not None:
        t["out.pooler_output"] = o.pooler_output
    for i, h in enumerate(o.hidden_states):
        t[f"out.hidden_states.{i}"] = h
    desc = dict(config=cfg.to_diff_dict(),
                note="last_hidden_state INCLUDES post_layernorm; FramePack feeds it to image_projection. "
                     "pooler_output (MAP head) is unused by FramePack.")
    save(os.path.join(out_dir, "siglip_vision_tiny.safetensors"), t, {"description": desc})


def siglip_preprocess(out_dir: str) -> None:
    from transformers import SiglipImageProcessor

    proc = SiglipImageProcessor(size={"height": 32, "width": 32}, resample=3, do_resize=True,
                                do_rescale=True, rescale_factor=1 / 255, do_normalize=True,
                                image_mean=[0.5, 0.5, 0.5], image_std=[0.5, 0.5, 0.5])
    img = np.random.default_rng(81).integers(0, 256, size=(40, 56, 3), dtype=np.uint8)
    pv = proc.preprocess(images=img, return_tensors="pt")["pixel_values"]
    save(os.path.join(out_dir, "siglip_preprocess_tiny.safetensors"),
         {"in.image_u8_hwc": torch.from_numpy(img.astype(np.int64)), "out.pixel_values": pv},
         {"processor": type(proc).__name__,
          "note": "PIL bicubic resize to 32x32 (real: 384x384), x/255, (x-0.5)/0.5"})


def resize_h_first(pil: Image.Image, size: tuple, resample) -> Image.Image:
    """Image.resize as Pillow <= 12 does it (FramePack pins pillow==11.1.0): the horizontal pass,
    rounded to 8 bits, then the vertical pass. Pillow 13 runs the vertical pass first when the
    height shrinks by more than twice the width's shrink; a one-axis resize is a single pass in
    every version, so two of them reproduce the old order exactly."""
    w, h = size
    if pil.size[0] != w:
        pil = pil.resize((w, pil.size[1]), resample)
    if pil.size[1] != h:
        pil = pil.resize((w, h), resample)
    return pil


def variants(out_dir: str) -> None:
    from transformers import (CLIPTextConfig, CLIPTextModel, LlamaConfig, LlamaModel, SiglipVisionConfig,
                              SiglipVisionModel)

    t, configs = {}, {}
    g = torch.Generator().manual_seed(91)

    cfg = LlamaConfig(vocab_size=50, hidden_size=48, intermediate_size=40, num_hidden_layers=3,
                      num_attention_heads=4, num_key_value_heads=1, head_dim=16, hidden_act="silu",
                      max_position_embeddings=32, rms_norm_eps=1e-6, rope_theta=10000.0,
                      attention_bias=True, mlp_bias=True, tie_word_embeddings=False)
    cfg._attn_implementation = "eager"
    model = LlamaModel(cfg).eval()
    randomize_(model, 92)
    ids = torch.randint(0, 50, (2, 7), generator=g)
    with torch.no_grad():
        o = model(input_ids=ids, output_hidden_states=True)
    t.update({f"llama_b.{k}": v for k, v in weights_of(model).items()})
    t["llama_b.in.input_ids"] = ids
    for i, h in enumerate(o.hidden_states):
        t[f"llama_b.out.hidden_states.{i}"] = h
    configs["llama_b"] = cfg.to_diff_dict()

    # The real head_dim (128), RoPE theta (5e5) and prompt length (95 + 256 = 351 tokens);
    # hidden_states[1] is the first layer's output (the last entry would include the final norm).
    cfg = LlamaConfig(vocab_size=64, hidden_size=128, intermediate_size=32, num_hidden_layers=2,
                      num_attention_heads=1, num_key_value_heads=1, hidden_act="silu",
                      max_position_embeddings=512, rms_norm_eps=1e-5, rope_theta=500000.0,
                      attention_bias=False, mlp_bias=False, tie_word_embeddings=False)
    cfg._attn_implementation = "eager"
    model = LlamaModel(cfg).eval()
    randomize_(model, 95)
    ids = torch.randint(0, 64, (1, 351), generator=g)
    with torch.no_grad():
        o = model(input_ids=ids, output_hidden_states=True)
    t.update({f"llama_c.{k}": v for k, v in weights_of(model).items()})
    t["llama_c.in.input_ids"] = ids
    t["llama_c.out.hidden_states.1"] = o.hidden_states[1]
    configs["llama_c"] = cfg.to_diff_dict()

    cfg = CLIPTextConfig(vocab_size=120, hidden_size=24, intermediate_size=30, projection_dim=24,
                         num_hidden_layers=3, num_attention_heads=3, max_position_embeddings=12,
                         hidden_act="gelu", layer_norm_eps=1e-5, bos_token_id=0, eos_token_id=2,
                         pad_token_id=1)
    cfg._attn_implementation = "eager"
    model = CLIPTextModel(cfg).eval()
    randomize_(model, 93)
    ids = torch.tensor([[118, 5, 9, 119, 3, 119, 119, 119, 119, 119],
                        [118, 40, 41, 42, 43, 44, 45, 119, 1, 1]], dtype=torch.int64)
    with torch.no_grad():
        o = model(input_ids=ids)
    t.update({f"clip_b.{k}": v for k, v in weights_of(model).items()})
    t["clip_b.in.input_ids"] = ids
    t["clip_b.out.last_hidden_state"] = o.last_hidden_state
    t["clip_b.out.pooler_output"] = o.pooler_output
    configs["clip_b"] = cfg.to_diff_dict()

    cfg = SiglipVisionConfig(hidden_size=24, intermediate_size=20, num_hidden_layers=1, num_attention_heads=2,
                             num_channels=3, image_size=30, patch_size=7, hidden_act="gelu_pytorch_tanh",
                             layer_norm_eps=1e-6, vision_use_head=False)
    cfg._attn_implementation = "eager"
    model = SiglipVisionModel(cfg).eval()
    randomize_(model, 94)
    px = torch.tanh(torch.randn(2, 3, 30, 30, generator=g))
    with torch.no_grad():
        o = model(pixel_values=px)
    t.update({f"siglip_b.{k}": v for k, v in weights_of(model).items()})
    t["siglip_b.in.pixel_values"] = px
    t["siglip_b.out.last_hidden_state"] = o.last_hidden_state
    configs["siglip_b"] = cfg.to_diff_dict()

    save(os.path.join(out_dir, "encoder_variants_tiny.safetensors"), t,
         {"configs": configs, "note": "<model>.weights.<HF name>, <model>.in.*, <model>.out.*; batch 2"})


def framepack_resize_and_center_crop(image: np.ndarray, target_width: int, target_height: int) -> np.ndarray:
    """FramePack's diffusers_helper.utils.resize_and_center_crop (same steps, written out here),
    with the resize of its pinned Pillow 11.1."""
    if target_height == image.shape[0] and target_width == image.shape[1]:
        return image
    pil = Image.fromarray(image)
    w, h = pil.size
    s = max(target_width / w, target_height / h)
    rw, rh = int(round(w * s)), int(round(h * s))
    resized = resize_h_first(pil, (rw, rh), Image.LANCZOS)
    box = ((rw - target_width) / 2, (rh - target_height) / 2, (rw + target_width) / 2, (rh + target_height) / 2)
    return np.array(resized.crop(box))


# (name, in (h, w), out (h, w))
RESIZE_CASES = [
    ("down", (40, 56), (17, 23)),
    ("up", (14, 20), (29, 37)),
    ("mixed", (30, 60), (41, 45)),
    ("width_only", (20, 33), (20, 50)),
    ("height_only", (33, 20), (12, 20)),
    ("strong_down", (97, 64), (9, 7)),
    # Pillow >= 13 runs the vertical pass first when the height shrinks by more than twice the
    # width's shrink; the intermediate 8-bit rounding makes the order visible.
    ("v_first", (116, 77), (14, 57)),
    ("v_first_widen", (34, 39), (10, 79)),
]
# (name, in (h, w), target (h, w))
CROP_CASES = [
    ("wide", (45, 80), (32, 32)),
    ("tall", (90, 41), (48, 32)),
    ("odd_offsets", (37, 51), (32, 48)),
    ("upscale", (20, 30), (64, 48)),
    ("same", (32, 48), (32, 48)),
]


def pil_cases(out_dir: str) -> None:
    rng = np.random.default_rng(90)
    t = {}
    for name, (h, w), (oh, ow) in RESIZE_CASES:
        img = rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8)
        t[f"in.{name}"] = torch.from_numpy(img)
        for filt, code in (("bilinear", Image.BILINEAR), ("bicubic", Image.BICUBIC), ("lanczos", Image.LANCZOS)):
            out = np.array(Image.fromarray(img).resize((ow, oh), code))
            t[f"out.{filt}.{name}"] = torch.from_numpy(out)
            out = np.array(resize_h_first(Image.fromarray(img), (ow, oh), code))
            t[f"out.{filt}.{name}.h_first"] = torch.from_numpy(out)
    for name, (h, w), (th, tw) in CROP_CASES:
        img = rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8)
        t[f"in.crop.{name}"] = torch.from_numpy(img)
        out = framepack_resize_and_center_crop(img, tw, th)
        t[f"out.crop.{name}"] = torch.from_numpy(np.ascontiguousarray(out))
    save(os.path.join(out_dir, "preprocess_pil.safetensors"), t,
         {"note": "uint8 HWC images (U8); out.{bilinear,bicubic,lanczos}.<case> = Image.resize of the installed "
                  "Pillow (13: adaptive pass order), .h_first = horizontal then vertical pass (Pillow <= 12); "
                  "out.crop.* = FramePack resize_and_center_crop with the horizontal-first order",
          "pillow": Image.__version__,
          "resize_cases": RESIZE_CASES, "crop_cases": CROP_CASES})


def main() -> None:
    here = os.path.dirname(os.path.abspath(__file__))
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=os.path.join(here, "..", "crates", "framepack", "tests", "fixtures"))
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.use_deterministic_algorithms(True)
    os.makedirs(args.out, exist_ok=True)
    llama(args.out)
    clip_text(args.out)
    siglip_vision(args.out)
    siglip_preprocess(args.out)
    variants(args.out)
    pil_cases(args.out)
    print(f"encoder fixtures written to {args.out}")


if __name__ == "__main__":
    main()
