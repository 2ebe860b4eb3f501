"""Scorer numbers against an independent open_clip + torch computation, on tiny random models loaded from disk."""
import os

import numpy as np
import open_clip
import pytest
import torch
from PIL import Image

from pipeline.errors import InvalidParameter, ModelNotFound
from pipeline.scoring.scorer import (ImageScore, TensorPreprocess, describe_score, load_scorer, parse_clip_id,
                                     resolve_device, resolve_dtype)
from tests.fixtures.tiny_clip import build_tiny_clip, reference_laion_head

COLOURS = [(255, 0, 0), (0, 0, 255), (0, 255, 0), (255, 255, 255), (255, 128, 0)]
PROMPTS = ["blue sky", "a photo of a cat", "a red fox"]
LONG_PROMPT = " ".join(f"word{i % 37} landscape" if i % 2 else "mountain" for i in range(300))


def solid(rgb, size=(96, 64)):
    """A solid-colour PIL image: its embedding does not depend on the resize method."""
    return Image.new("RGB", size, rgb)


def as_tensor(images):
    return torch.stack([torch.from_numpy(np.asarray(im, dtype=np.float32) / 255.0) for im in images])


@pytest.fixture(scope="module")
def reference(tiny_clip_dir, tiny_aesthetic_path):
    """Embeddings and head outputs computed with open_clip and a plain nn.Sequential, not with pipeline code."""
    model, _, preprocess = open_clip.create_model_and_transforms(f"local-dir:{tiny_clip_dir}")
    model.eval()
    tokenizer = open_clip.get_tokenizer(f"local-dir:{tiny_clip_dir}")
    head = reference_laion_head(tiny_aesthetic_path)

    def embed_images(images):
        with torch.no_grad():
            features = model.encode_image(torch.stack([preprocess(im) for im in images]))
        return features / features.norm(dim=-1, keepdim=True)

    def embed_text(text):
        with torch.no_grad():
            features = model.encode_text(tokenizer([text]))
        return features / features.norm(dim=-1, keepdim=True)

    def aesthetic(embeddings):
        with torch.no_grad():
            return head(embeddings).squeeze(-1)

    return embed_images, embed_text, aesthetic


def test_alignment_and_aesthetic_match_independent_computation(tiny_scorer, reference):
    embed_images, embed_text, aesthetic = reference
    images = [solid(c) for c in COLOURS]
    image_emb = embed_images(images)
    expected_aes = aesthetic(image_emb)
    positive = zero = 0
    for prompt in PROMPTS:
        expected = 100.0 * (image_emb @ embed_text(prompt)[0]).clamp(min=0)
        scores = tiny_scorer.score(as_tensor(images), prompt)
        assert [s.alignment for s in scores] == pytest.approx(expected.tolist(), abs=1e-3)
        assert [s.aesthetic for s in scores] == pytest.approx(expected_aes.tolist(), abs=1e-4)
        positive += int((expected > 0).sum())
        zero += int((expected == 0).sum())
    assert positive and zero, "the check must cover both the cosine and its clamp at zero"


def test_pil_tensor_and_list_inputs_agree(tiny_scorer):
    images = [solid(c) for c in COLOURS[:3]]
    from_tensor = tiny_scorer.score(as_tensor(images), "blue sky")
    from_pil = tiny_scorer.score(images, "blue sky")
    assert [s.alignment for s in from_pil] == pytest.approx([s.alignment for s in from_tensor], abs=1e-4)
    assert [s.aesthetic for s in from_pil] == pytest.approx([s.aesthetic for s in from_tensor], abs=1e-5)


def test_batch_equals_one_by_one(tiny_scorer):
    torch.manual_seed(3)
    batch = torch.rand(4, 80, 120, 3)
    together = tiny_scorer.score(batch, "a red fox")
    alone = [tiny_scorer.score(batch[i], "a red fox")[0] for i in range(4)]
    assert [s.alignment for s in together] == pytest.approx([s.alignment for s in alone], abs=1e-4)
    assert [s.aesthetic for s in together] == pytest.approx([s.aesthetic for s in alone], abs=1e-5)


def test_mixed_sizes_score_like_single_images(tiny_scorer):
    torch.manual_seed(4)
    images = [torch.rand(64, 64, 3), torch.rand(48, 100, 3)]
    mixed = tiny_scorer.score(images, "blue sky")
    alone = [tiny_scorer.score(image, "blue sky")[0] for image in images]
    assert [s.alignment for s in mixed] == pytest.approx([s.alignment for s in alone], abs=1e-4)


def test_different_images_get_different_scores(tiny_scorer):
    red, blue = tiny_scorer.score(as_tensor([solid(COLOURS[0]), solid(COLOURS[1])]), "blue sky")
    assert red.alignment != blue.alignment
    assert red.aesthetic != blue.aesthetic


def test_one_prompt_per_image(tiny_scorer):
    images = as_tensor([solid(COLOURS[0]), solid(COLOURS[1])])
    paired = tiny_scorer.score(images, ["blue sky", "a red fox"])
    assert paired[0].alignment == pytest.approx(tiny_scorer.score(images[:1], "blue sky")[0].alignment, abs=1e-4)
    assert paired[1].alignment == pytest.approx(tiny_scorer.score(images[1:], "a red fox")[0].alignment, abs=1e-4)


def test_300_word_prompt_is_truncated_like_open_clip(tiny_scorer, reference):
    embed_images, embed_text, _ = reference
    image = solid(COLOURS[4])
    score = tiny_scorer.score(image, LONG_PROMPT)[0]
    expected = 100.0 * max(float(embed_images([image])[0] @ embed_text(LONG_PROMPT)[0]), 0.0)
    assert score.alignment == pytest.approx(expected, abs=1e-3)
    assert score.alignment != 50.0


def test_300_word_prompt_with_hugging_face_tokenizer(tmp_path, tiny_aesthetic_path):
    folder = build_tiny_clip(str(tmp_path / "hf_clip"), hf_tokenizer=True)
    scorer = load_scorer(f"local-dir:{folder}", aesthetic_model=tiny_aesthetic_path, device="cpu")
    assert type(scorer.tokenizer).__name__ == "HFTokenizer"
    long_score, short_score = (scorer.score(solid(COLOURS[0]), text)[0] for text in (LONG_PROMPT, "mountain"))
    assert 0.0 <= long_score.alignment <= 100.0
    assert np.isfinite(long_score.aesthetic)
    tokens = scorer.tokenizer([LONG_PROMPT], context_length=scorer.context_length)
    assert tokens.shape == (1, 77)


def test_tensor_preprocess_matches_open_clip_pil_transform(tiny_clip_dir):
    _, _, preprocess = open_clip.create_model_and_transforms(f"local-dir:{tiny_clip_dir}")
    # A smooth image (gradients), so resampling filters agree closely; random noise would not.
    y, x = np.mgrid[0:300, 0:420]
    array = np.stack([x / 420, y / 300, (x + y) / 720], axis=-1).astype(np.float32)
    array = (array * 255).round().astype(np.uint8)
    expected = preprocess(Image.fromarray(array))
    got = TensorPreprocess(preprocess)(torch.from_numpy(array.astype(np.float32) / 255).permute(2, 0, 1)[None])[0]
    assert got.shape == expected.shape == (3, 224, 224)
    assert float((got - expected).abs().mean()) < 0.01


@pytest.mark.parametrize("images, words", [
    (torch.zeros(0, 64, 64, 3), "empty"),
    ([], "empty"),
    (torch.rand(2, 3, 64, 64), "permute(0, 2, 3, 1)"),
    (torch.rand(2, 64, 64, 4), "[B, H, W, 3]"),
    (torch.rand(1, 64, 64, 3) * 255, "divide 8-bit values by 255"),
    (torch.full((1, 8, 8, 3), float("nan")), "NaN"),
])
def test_bad_images_are_rejected_with_the_reason(tiny_scorer, images, words):
    with pytest.raises(InvalidParameter) as caught:
        tiny_scorer.score(images, "blue sky")
    assert caught.value.name == "images"
    assert words in str(caught.value)


def test_bad_text_is_rejected(tiny_scorer):
    with pytest.raises(InvalidParameter, match="prompt to score against is empty"):
        tiny_scorer.score(torch.rand(1, 8, 8, 3), "   ")
    with pytest.raises(InvalidParameter, match="got 3 prompts for 2 images"):
        tiny_scorer.score(torch.rand(2, 8, 8, 3), ["a", "b", "c"])
    with pytest.raises(InvalidParameter, match="no vision LLM is configured"):
        tiny_scorer.score(torch.rand(1, 8, 8, 3), "a", captions=True)


@pytest.mark.parametrize("clip_id, kind, words", [
    ("", InvalidParameter, "is empty"),
    ("ViT-L-14", InvalidParameter, "without weights; add a pretrained tag, e.g. ViT-L-14/openai"),
    ("ViT-L-15/openai", InvalidParameter, "did you mean"),
    ("ViT-L-14/not-a-tag", InvalidParameter, "known: openai"),
    ("local-dir:/nonexistent/clip", ModelNotFound, "/nonexistent/clip/open_clip_config.json not found"),
])
def test_bad_clip_ids(clip_id, kind, words):
    with pytest.raises(kind) as caught:
        parse_clip_id(clip_id)
    assert words in str(caught.value)


def test_clip_ids_that_parse():
    assert parse_clip_id("ViT-L-14/openai") == ("ViT-L-14", "openai")
    assert parse_clip_id("hf-hub:laion/CLIP-ViT-L-14-laion2B-s32B-b82K") == (
        "hf-hub:laion/CLIP-ViT-L-14-laion2B-s32B-b82K", None)
    # OpenAI weights need QuickGELU, which load_clip forces from this entry.
    assert open_clip.get_pretrained_cfg("ViT-L-14", "openai")["quick_gelu"] is True


def test_local_dir_without_weights_is_refused(tmp_path, tiny_aesthetic_path):
    folder = build_tiny_clip(str(tmp_path / "no_weights"))
    os.remove(os.path.join(folder, "open_clip_model.safetensors"))
    with pytest.raises(ModelNotFound, match="could not be loaded"):
        load_scorer(f"local-dir:{folder}", aesthetic_model=tiny_aesthetic_path, device="cpu")


def test_device_and_dtype_choices():
    assert resolve_device("cpu").type == "cpu"
    assert resolve_dtype(None, torch.device("cpu")) is torch.float32
    assert resolve_dtype(None, torch.device("cuda")) is torch.float16
    assert resolve_dtype("bf16", torch.device("cpu")) is torch.bfloat16
    with pytest.raises(InvalidParameter, match="dtype"):
        resolve_dtype("fp8", torch.device("cpu"))
    with pytest.raises(InvalidParameter, match="not a torch device"):
        resolve_device("banana")
    if not torch.cuda.is_available():
        with pytest.raises(InvalidParameter, match="torch sees no CUDA device"):
            resolve_device("cuda")


def test_bf16_scores_close_to_fp32(tiny_clip_dir, tiny_aesthetic_path, tiny_scorer):
    scorer = load_scorer(f"local-dir:{tiny_clip_dir}", aesthetic_model=tiny_aesthetic_path, device="cpu",
                         dtype="bf16")
    assert scorer.describe()["dtype"] == "bf16"
    images = as_tensor([solid(c) for c in COLOURS[:2]])
    low, full = scorer.score(images, "blue sky"), tiny_scorer.score(images, "blue sky")
    assert [s.alignment for s in low] == pytest.approx([s.alignment for s in full], abs=1.5)


def test_unload_after_use_reloads_with_same_scores(tiny_clip_dir, tiny_aesthetic_path, tiny_scorer):
    scorer = load_scorer(f"local-dir:{tiny_clip_dir}", aesthetic_model=tiny_aesthetic_path, device="cpu",
                         after_use="unload")
    image = solid(COLOURS[0])
    first = scorer.score(image, "blue sky")[0]
    assert scorer.describe()["loaded"] is False
    second = scorer.score(image, "blue sky")[0]
    assert first == second == pytest.approx(tiny_scorer.score(image, "blue sky")[0])
    with pytest.raises(InvalidParameter, match="after_use"):
        scorer.after_use = "sometimes"


def test_analyze_gives_the_seed_shape(tiny_scorer):
    result = tiny_scorer.analyze(solid(COLOURS[0]), "blue sky")
    assert set(result) >= {"alignmentScore", "aestheticScore", "analysis", "strengths", "weaknesses"}
    score = tiny_scorer.score(solid(COLOURS[0]), "blue sky")[0]
    assert result["alignmentScore"] == pytest.approx(score.alignment, abs=1e-3)
    assert result["aestheticScore"] == pytest.approx(score.aesthetic, abs=1e-3)


def test_describe_score_rules():
    good = describe_score(ImageScore(alignment=31.0, aesthetic=6.5))
    assert good["strengths"] == ["Strong prompt alignment (CLIPScore 31.0 >= 30)",
                                 "High aesthetic score (6.50 >= 6 on the laion predictor)"]
    assert good["weaknesses"] == []
    middling = describe_score(ImageScore(alignment=25.0, aesthetic=5.5, caption="A fox on grass."))
    assert middling["strengths"] == []
    assert middling["weaknesses"][0].startswith("Only moderate prompt alignment (CLIPScore 25.0")
    assert middling["weaknesses"][1].startswith("Only average aesthetic score (5.50")
    assert middling["analysis"].endswith("Vision model's description: A fox on grass.")
    poor = describe_score(ImageScore(alignment=12.0, aesthetic=11.2))
    assert poor["weaknesses"] == ["Weak prompt alignment (CLIPScore 12.0 < 20)"]
    assert poor["aestheticScore"] == 10.0 and poor["aestheticRaw"] == 11.2
    assert describe_score(ImageScore(alignment=0, aesthetic=5.6), "v2.5")["strengths"] == [
        "High aesthetic score (5.60 >= 5.5 on the v2.5 predictor)"]


def test_total_formula_unchanged():
    score = ImageScore(alignment=30.0, aesthetic=6.0)
    assert score.total() == pytest.approx(0.7 * 30 + 0.3 * 60)
    assert score.as_dict(0.5) == {"alignment": 30.0, "aesthetic": 6.0, "total": pytest.approx(45.0)}


def test_captions_from_a_vision_model(tiny_clip_dir, tiny_aesthetic_path, fake_ollama):
    from pipeline.llm.client import OllamaClient, OllamaModelNotFound
    from pipeline.errors import ScoringFailed
    from pipeline.scoring.scorer import caption_images
    from tests.fixtures.ollama import DEFAULT_MODELS

    client = OllamaClient(fake_ollama.url, DEFAULT_MODELS[0])
    fake_ollama.script("/api/chat", {"content": "A red square."}, {"content": "A blue square."})
    scorer = load_scorer(f"local-dir:{tiny_clip_dir}", aesthetic_model=tiny_aesthetic_path, device="cpu",
                         caption_client=client)
    scores = scorer.score(as_tensor([solid(COLOURS[0]), solid(COLOURS[1])]), "blue sky", captions=True)
    assert [s.caption for s in scores] == ["A red square.", "A blue square."]
    first = fake_ollama.bodies()[0]["messages"][0]
    assert first["role"] == "user" and '"blue sky"' in first["content"]
    assert describe_score(scores[0])["analysis"].endswith("Vision model's description: A red square.")

    fake_ollama.script("/api/chat", {"content": "   "})
    with pytest.raises(ScoringFailed, match="empty caption for image 0"):
        caption_images(client, solid(COLOURS[0]), "Describe it.")
    with pytest.raises(OllamaModelNotFound):
        caption_images(OllamaClient(fake_ollama.url, "llava:missing", retries=0), solid(COLOURS[0]))
