"""Contract tests of the generation nodes and ComfyFluxGenerator against the fake ComfyUI (tests/comfy_fakes).

The fake MODEL / CLIP / VAE do real tensor maths, so these tests check what the adapter computes, not only which
functions it calls. The same properties are checked on a real ComfyUI in tests/integration/.
"""
import json
import os
import sys

import pytest
import safetensors.torch
import torch

from tests.fixtures.comfy import PACK_MODULE, load_pack, run_node

load_pack()
import comfy.model_management  # noqa: E402  (the fake modules are importable once the pack is loaded)
import comfy.sample  # noqa: E402
import comfy.samplers  # noqa: E402
import comfy.sd  # noqa: E402
import comfy.utils  # noqa: E402
from tests.comfy_fakes import fake_models  # noqa: E402
import folder_paths  # noqa: E402
import node_helpers  # noqa: E402

generator_module = sys.modules[f"{PACK_MODULE}.nodes.comfy_generator"]
nodes = sys.modules[f"{PACK_MODULE}.nodes.generation_nodes"]
errors = sys.modules[f"{PACK_MODULE}.pipeline.errors"]
generation = sys.modules[f"{PACK_MODULE}.pipeline.generation"]
# The pack's own classes (imported under its folder name, as ComfyUI does), not a second copy via `pipeline.`


def stack(lora_name, trigger, weight, loras=None):
    return run_node(nodes.PromptBeamLoraStack, lora_name=lora_name, trigger=trigger, weight=weight,
                    **({} if loras is None else {"loras": loras})).result


def build(model, clip, vae, width, height, steps, guidance, sampler_name, scheduler, **optional):
    return run_node(nodes.PromptBeamFluxGenerator, model=model, clip=clip, vae=vae, width=width, height=height,
                    steps=steps, guidance=guidance, sampler_name=sampler_name, scheduler=scheduler, **optional).result


def generate(generator, prompt, seed):
    return run_node(nodes.PromptBeamGenerate, generator=generator, prompt=prompt, seed=seed).result
LoraSpec = sys.modules[f"{PACK_MODULE}.pipeline.config"].LoraSpec
ComfyFluxGenerator = generator_module.ComfyFluxGenerator

SIZE = dict(width=64, height=48)


@pytest.fixture(autouse=True)
def fresh_fakes(comfy_base):
    comfy.sd.LORA_CALLS.clear()
    comfy.sd.TOKENIZED.clear()
    comfy.samplers.SAMPLE_CALLS.clear()
    yield comfy_base
    comfy.utils.set_progress_bar_global_hook(None)


@pytest.fixture
def loras_dir(comfy_base):
    path = comfy_base / "models" / "loras"
    path.mkdir(parents=True, exist_ok=True)
    return path


@pytest.fixture
def style_lora(loras_dir):
    path = loras_dir / "style.safetensors"
    safetensors.torch.save_file(fake_models.lora_state_dict(seed=3), str(path))
    return path


@pytest.fixture
def foreign_lora(loras_dir):
    path = loras_dir / "sdxl_thing.safetensors"
    safetensors.torch.save_file(fake_models.foreign_lora_state_dict(), str(path))
    return path


def models():
    return fake_models.tiny_model(), fake_models.tiny_clip(), fake_models.tiny_vae()


def standard_chain(model, clip, vae, text, seed, width=64, height=48, steps=4, guidance=3.5, sampler="euler",
                   scheduler="simple", cfg=1.0, negative_text=""):
    """CLIPTextEncode -> FluxGuidance -> KSampler(EmptySD3LatentImage) -> VAEDecode, as ComfyUI's nodes do it."""
    positive = node_helpers.conditioning_set_values(
        clip.encode_from_tokens_scheduled(clip.tokenize(text)), {"guidance": guidance})
    negative = node_helpers.conditioning_set_values(
        clip.encode_from_tokens_scheduled(clip.tokenize(negative_text)), {"guidance": guidance})
    latent = comfy.sample.fix_empty_latent_channels(model, torch.zeros([1, 16, height // 8, width // 8]))
    noise = comfy.sample.prepare_noise(latent, seed, None)
    samples = comfy.sample.sample(model, noise, steps, cfg, sampler, scheduler, positive, negative, latent,
                                  denoise=1.0, seed=seed)
    return vae.decode(samples)[0]


def interrupt_hook_like_comfyui():
    """What ComfyUI's main.py installs as the ProgressBar hook: report, and raise if the user pressed Cancel."""
    def hook(value, total, preview_image, prompt_id=None, node_id=None):
        comfy.model_management.throw_exception_if_processing_interrupted()
    comfy.utils.set_progress_bar_global_hook(hook)


# ---- node declarations -------------------------------------------------------------------------------------


def test_lora_stack_declares_the_contract_sockets_and_lists_the_loras_folder(style_lora, loras_dir):
    (loras_dir / "sub").mkdir()
    safetensors.torch.save_file(fake_models.lora_state_dict(seed=5), str(loras_dir / "sub" / "ink.safetensors"))
    spec = nodes.PromptBeamLoraStack.INPUT_TYPES()
    assert spec["required"]["lora_name"][0] == ["style.safetensors", "sub/ink.safetensors"]
    assert spec["required"]["trigger"][0] == "STRING"
    assert spec["required"]["weight"][0] == "FLOAT" and spec["required"]["weight"][1]["default"] == 1.0
    assert spec["optional"]["loras"][0] == "PROMPTBEAM_LORAS"
    assert nodes.PromptBeamLoraStack.GET_NODE_INFO_V1()["output"] == ["PROMPTBEAM_LORAS"]


def test_lora_stack_resolves_full_paths_and_chains_in_order(style_lora, loras_dir):
    safetensors.torch.save_file(fake_models.lora_state_dict(seed=5), str(loras_dir / "ink.safetensors"))
    (first,) = stack("style.safetensors", "  pbstyle ", 0.8)
    (both,) = stack("ink.safetensors", "ink", 0.5, loras=first)
    assert both == (LoraSpec(str(style_lora), "pbstyle", 0.8), LoraSpec(str(loras_dir / "ink.safetensors"), "ink", 0.5))
    assert nodes.PromptBeamLoraStack.validate_inputs("style.safetensors") is True


@pytest.mark.parametrize("name", ["../secret.safetensors", "/etc/passwd", "sub/../../x.safetensors",
                                  "C:\\loras\\x.safetensors", "..\\x.safetensors"])
def test_lora_stack_refuses_paths(style_lora, name):
    message = nodes.PromptBeamLoraStack.validate_inputs(name)
    assert isinstance(message, str) and "is a path" in message and "loras folders" in message
    with pytest.raises(errors.InvalidParameter, match=r"^lora_name: .* is a path") as info:
        stack(name, "", 1.0)
    assert info.value.name == "lora_name"


def test_missing_lora_lists_the_folders_searched(comfy_base, loras_dir):
    extra = comfy_base / "more_loras"
    folder_paths.add_model_folder_path("loras", str(extra))
    message = nodes.PromptBeamLoraStack.validate_inputs("gone.safetensors")
    assert "'gone.safetensors' was not found" in message
    assert str(loras_dir) in message and str(extra) in message
    with pytest.raises(errors.ModelNotFound, match=r"^lora_name: LoRA 'gone.safetensors' was not found") as info:
        stack("gone.safetensors", "", 1.0)
    assert str(extra) in str(info.value)


def test_flux_generator_node_declares_the_contract_sockets():
    spec = nodes.PromptBeamFluxGenerator.INPUT_TYPES()
    required = spec["required"]
    assert [required[k][0] for k in ("model", "clip", "vae")] == ["MODEL", "CLIP", "VAE"]
    assert required["width"][1]["default"] == 1024 and required["width"][1]["step"] == 16
    assert required["height"][0] == "INT" and required["steps"][1]["default"] == 4
    assert required["guidance"][0] == "FLOAT" and required["guidance"][1]["default"] == 3.5
    assert required["sampler_name"][0] == comfy.samplers.KSampler.SAMPLERS
    assert required["scheduler"][0] == comfy.samplers.KSampler.SCHEDULERS
    assert spec["optional"]["loras"][0] == "PROMPTBEAM_LORAS"
    assert spec["optional"]["cfg"][1]["default"] == 1.0
    assert nodes.PromptBeamFluxGenerator.GET_NODE_INFO_V1()["output"] == ["PROMPTBEAM_GENERATOR"]


def test_generate_node_declares_the_contract_sockets():
    required = nodes.PromptBeamGenerate.INPUT_TYPES()["required"]
    assert required["generator"][0] == "PROMPTBEAM_GENERATOR"
    assert required["prompt"][0] == "STRING" and required["prompt"][1]["multiline"] is True
    assert required["seed"][0] == "INT" and required["seed"][1]["control_after_generate"] is True
    assert required["seed"][1]["max"] == 0xFFFFFFFFFFFFFFFF
    assert nodes.PromptBeamGenerate.GET_NODE_INFO_V1()["output"] == ["IMAGE"]
    for cls in (nodes.PromptBeamLoraStack, nodes.PromptBeamFluxGenerator, nodes.PromptBeamGenerate):
        info = cls.GET_NODE_INFO_V1()
        assert info["category"].startswith("Prompt Beam/") and info["description"]


# ---- the image equals the standard chain's ------------------------------------------------------------------


def test_image_equals_the_standard_chain_for_the_same_seed():
    model, clip, vae = models()
    generator = ComfyFluxGenerator(model, clip, vae, steps=4, guidance=2.5, **SIZE)
    (result,) = generator.generate([generator.request("a red fox in the snow", 123)])
    expected = standard_chain(model, clip, vae, "a red fox in the snow", 123, steps=4, guidance=2.5)
    assert result.image.shape == (48, 64, 3) and result.image.dtype == torch.float32
    assert torch.equal(result.image, expected)
    other_seed = standard_chain(model, clip, vae, "a red fox in the snow", 124, steps=4, guidance=2.5)
    assert not torch.allclose(result.image, other_seed)   # the comparison can fail: seeds matter
    assert result.seed == 123 and result.prompt == "a red fox in the snow"
    assert not result.image.is_inference()   # usable, even in place, outside ComfyUI's inference mode


def test_lora_image_equals_lora_loader_plus_trigger_words(style_lora):
    model, clip, vae = models()
    lora = LoraSpec(str(style_lora), "pbstyle", 0.7)
    generator = ComfyFluxGenerator(model, clip, vae, loras=[lora], **SIZE)
    (result,) = generator.generate([generator.request("a fox", 9)])
    lora_model, lora_clip = comfy.sd.load_lora_for_models(
        model, clip, comfy.utils.load_torch_file(str(style_lora)), 0.7, 0.7)
    assert torch.equal(result.image, standard_chain(lora_model, lora_clip, vae, "pbstyle, a fox", 9))
    assert not torch.allclose(result.image, standard_chain(model, clip, vae, "pbstyle, a fox", 9))
    assert result.prompt == "pbstyle, a fox"


def test_a_batch_renders_each_request_with_its_own_seed_like_one_by_one():
    model, clip, vae = models()
    generator = ComfyFluxGenerator(model, clip, vae, **SIZE)
    requests = [generator.request("a fox", 5), generator.request("a cat", 6), generator.request("a fox", 7)]
    batch = generator.generate(requests)
    assert [c["seed"] for c in comfy.samplers.SAMPLE_CALLS] == [5, 6, 7]
    for call, request in zip(comfy.samplers.SAMPLE_CALLS, requests):
        assert torch.equal(call["noise"], comfy.sample.prepare_noise(torch.zeros(1, 16, 6, 8), request.seed))
    alone = [generator.generate([r])[0] for r in requests]
    assert all(torch.equal(a.image, b.image) for a, b in zip(batch, alone))
    assert [r.seed for r in batch] == [5, 6, 7]


def test_request_settings_reach_the_sampler_and_guidance_sits_in_the_conditioning():
    model, clip, vae = models()
    generator = ComfyFluxGenerator(model, clip, vae, steps=3, guidance=2.0, sampler_name="euler_ancestral",
                                   scheduler="normal", **SIZE)
    low, = generator.generate([generator.request("a fox", 1)])
    call = comfy.samplers.SAMPLE_CALLS[-1]
    assert (call["steps"], call["cfg"], call["sampler"], call["scheduler"]) == (3, 1.0, "euler_ancestral", "normal")
    assert call["positive"][0][1]["guidance"] == 2.0 and call["negative"][0][1]["guidance"] == 2.0
    assert call["positive"][0][1]["pooled_output"].shape == (1, fake_models.TEXT_DIM)
    high, = generator.generate([generation.GenerationRequest("a fox", 1, steps=3, guidance=6.0, **SIZE)])
    assert comfy.samplers.SAMPLE_CALLS[-1]["positive"][0][1]["guidance"] == 6.0
    assert comfy.samplers.SAMPLE_CALLS[-1]["sampler"] == "euler_ancestral"   # None falls back to the generator's
    assert not torch.allclose(low.image, high.image)
    assert low.metadata["guidance"] == 2.0 and high.metadata["guidance"] == 6.0


def test_negative_prompt_matters_only_above_cfg_one():
    model, clip, vae = models()
    flux = ComfyFluxGenerator(model, clip, vae, **SIZE)
    plain, negative = flux.generate([flux.request("a fox", 3), flux.request("a fox", 3, negative="blurry")])
    assert torch.equal(plain.image, negative.image)   # cfg 1: KSampler does not evaluate the negative
    assert negative.metadata["negative_ignored"] is True and "negative_ignored" not in plain.metadata
    cfg3 = ComfyFluxGenerator(model, clip, vae, cfg=3.0, **SIZE)
    plain, negative = cfg3.generate([cfg3.request("a fox", 3), cfg3.request("a fox", 3, negative="blurry")])
    assert not torch.allclose(plain.image, negative.image) and "negative_ignored" not in negative.metadata
    assert torch.equal(negative.image, standard_chain(model, clip, vae, "a fox", 3, cfg=3.0, negative_text="blurry"))


# ---- LoRAs -----------------------------------------------------------------------------------------------


def test_loras_are_applied_once_for_the_generator_lifetime(style_lora):
    model, clip, vae = models()
    generator = ComfyFluxGenerator(model, clip, vae, loras=[LoraSpec(str(style_lora), "", 0.6)], **SIZE)
    assert len(comfy.sd.LORA_CALLS) == 1 and comfy.sd.LORA_CALLS[0][1:] == (0.6, 0.6)
    assert len(generator.model.patches) == 2 and len(generator.clip.patcher.patches) == 1
    assert model.patches == {} and clip.patcher.patches == {}   # the user's MODEL/CLIP are left untouched
    first = generator.generate([generator.request("a fox", 1), generator.request("a fox", 2)])
    second = generator.generate([generator.request("a fox", 1)])
    assert len(comfy.sd.LORA_CALLS) == 1 and len(generator.model.patches) == 2
    assert torch.equal(first[0].image, second[0].image)


def test_trigger_words_are_prepended_once_in_lora_order(style_lora, loras_dir):
    ink = loras_dir / "ink.safetensors"
    safetensors.torch.save_file(fake_models.lora_state_dict(seed=5), str(ink))
    loras = [LoraSpec(str(style_lora), "pbstyle", 1.0), LoraSpec(str(ink), "ink wash", 0.5),
             LoraSpec(str(style_lora), "pbstyle", 0.2)]
    generator = ComfyFluxGenerator(*models(), loras=loras, **SIZE)
    results = generator.generate([generator.request("a fox", 1), generator.request("an INK WASH fox", 1)])
    assert [r.prompt for r in results] == ["pbstyle, ink wash, a fox", "pbstyle, an INK WASH fox"]
    assert "pbstyle, ink wash, a fox" in comfy.sd.TOKENIZED and "pbstyle, an INK WASH fox" in comfy.sd.TOKENIZED
    encoded = comfy.samplers.SAMPLE_CALLS[0]["positive"][0][0]
    expected = generator.clip.encode_from_tokens_scheduled(generator.clip.tokenize("pbstyle, ink wash, a fox"))
    assert torch.equal(encoded, expected[0][0])
    assert generator.describe()["loras"][1] == {"path": "ink.safetensors", "trigger": "ink wash", "weight": 0.5}


def test_zero_weight_lora_is_skipped_with_its_trigger(style_lora):
    generator = ComfyFluxGenerator(*models(), loras=[LoraSpec(str(style_lora), "pbstyle", 0.0)], **SIZE)
    assert comfy.sd.LORA_CALLS == [] and generator.triggers == []


def test_lora_for_another_architecture_is_refused(foreign_lora, caplog):
    with pytest.raises(errors.InvalidParameter) as info:
        ComfyFluxGenerator(*models(), loras=[LoraSpec(str(foreign_lora), "", 1.0)], **SIZE)
    message = str(info.value)
    assert message.startswith("loras: LoRA 'sdxl_thing.safetensors' doesn't match this model")
    assert "none of its 3 tensors apply" in message and "another architecture" in message
    assert "lora key not loaded" in caplog.text   # what ComfyUI alone would have said, and then carried on


def test_missing_lora_file_is_model_not_found(tmp_path):
    with pytest.raises(errors.ModelNotFound, match="does not exist"):
        ComfyFluxGenerator(*models(), loras=[LoraSpec(str(tmp_path / "nope.safetensors"))], **SIZE)


# ---- progress and interruption --------------------------------------------------------------------------


def test_progress_goes_through_comfyui_progress_bar_and_on_step():
    generator = ComfyFluxGenerator(*models(), steps=3, **SIZE)
    steps = []
    generator.generate([generator.request("a fox", 1), generator.request("a cat", 2)],
                       on_step=lambda done, total: steps.append((done, total)))
    assert [(v, t) for v, t, _preview, _node in comfy.utils.PROGRESS_UPDATES] == [(1, 3), (2, 3), (3, 3)] * 2
    assert steps == [(i, 6) for i in range(1, 7)]


def test_comfyui_interrupt_raised_by_the_progress_hook_stops_the_run():
    def hook(value, total, preview_image, prompt_id=None, node_id=None):
        if value == 3:   # the user presses Cancel while step 3 is being reported
            comfy.model_management.interrupt_current_processing(True)
        comfy.model_management.throw_exception_if_processing_interrupted()
    comfy.utils.set_progress_bar_global_hook(hook)
    generator = ComfyFluxGenerator(*models(), steps=5, **SIZE)
    steps = []
    with pytest.raises(errors.Interrupted, match="interrupted in ComfyUI"):
        generator.generate([generator.request("a fox", 1), generator.request("a cat", 2)],
                           on_step=lambda done, total: steps.append(done))
    assert [v for v, *_ in comfy.utils.PROGRESS_UPDATES] == [1, 2, 3] and steps == [1, 2]
    assert len(comfy.samplers.SAMPLE_CALLS) == 1
    assert not comfy.model_management.processing_interrupted()   # consumed, like ComfyUI's own check


def test_comfyui_interrupt_flag_is_seen_right_after_the_step_that_set_it():
    interrupt_hook_like_comfyui()
    generator = ComfyFluxGenerator(*models(), steps=5, **SIZE)

    def press_cancel(done, total):
        if done == 2:
            comfy.model_management.interrupt_current_processing(True)

    with pytest.raises(errors.Interrupted, match="interrupted in ComfyUI"):
        generator.generate([generator.request("a fox", 1), generator.request("a cat", 2)], on_step=press_cancel)
    assert [v for v, *_ in comfy.utils.PROGRESS_UPDATES] == [1, 2]
    assert len(comfy.samplers.SAMPLE_CALLS) == 1


def test_interrupt_is_seen_even_without_a_progress_hook():
    generator = ComfyFluxGenerator(*models(), steps=5, **SIZE)
    comfy.model_management.interrupt_current_processing(True)
    with pytest.raises(errors.Interrupted):
        generator.generate([generator.request("a fox", 1)])
    assert comfy.samplers.SAMPLE_CALLS == []


def test_should_stop_stops_between_steps_and_requests():
    generator = ComfyFluxGenerator(*models(), steps=4, **SIZE)
    done_steps = []
    with pytest.raises(errors.Interrupted, match="stopped on request"):
        generator.generate([generator.request("a fox", 1), generator.request("a cat", 2)],
                           on_step=lambda done, total: done_steps.append(done),
                           should_stop=lambda: len(done_steps) >= 2)
    assert done_steps == [1, 2] and len(comfy.samplers.SAMPLE_CALLS) == 1


def test_generate_node_turns_an_interrupt_into_comfyuis_exception():
    interrupt_hook_like_comfyui()
    (generator,) = build(*models(), 64, 48, 3, 3.5, "euler", "simple")
    comfy.model_management.interrupt_current_processing(True)
    with pytest.raises(comfy.model_management.InterruptProcessingException):
        generate(generator, "a fox", 1)


# ---- bad input and failures -----------------------------------------------------------------------------


def test_bad_requests_are_refused_before_any_sampling():
    generator = ComfyFluxGenerator(*models(), **SIZE)
    with pytest.raises(errors.InvalidParameter, match=r"^width: must be a positive multiple of 16"):
        generator.generate([generator.request("a fox", 1), generation.GenerationRequest("a cat", 2, width=50)])
    with pytest.raises(errors.InvalidParameter, match=r"^scheduler: unknown scheduler 'nope'"):
        generator.generate([generation.GenerationRequest("a cat", 2, scheduler="nope", **SIZE)])
    assert comfy.samplers.SAMPLE_CALLS == []


@pytest.mark.parametrize("kwargs, name", [({"sampler_name": "nope"}, "sampler_name"), ({"width": 100}, "width"),
                                          ({"steps": 0}, "steps"), ({"cfg": -1.0}, "cfg")])
def test_bad_generator_settings_name_the_parameter(kwargs, name):
    settings = {**SIZE, **kwargs}
    with pytest.raises(errors.InvalidParameter) as info:
        ComfyFluxGenerator(*models(), **settings)
    assert info.value.name == name


def test_missing_vae_is_named():
    model, clip, _ = models()
    with pytest.raises(errors.InvalidParameter, match=r"^vae: is missing"):
        build(model, clip, None, 64, 64, 4, 3.5, "euler", "simple")


def test_sampling_errors_become_generation_failed():
    class BrokenVAE:
        def decode(self, samples):
            raise RuntimeError("out of memory decoding")

    model, clip, _ = models()
    generator = ComfyFluxGenerator(model, clip, BrokenVAE(), **SIZE)
    with pytest.raises(errors.GenerationFailed, match=r"seed 77 \(RuntimeError: out of memory decoding\)"):
        generator.generate([generator.request("a fox", 77)])


def test_a_failure_mid_list_hands_back_the_images_rendered_before_it():
    model, clip, vae = models()

    class VAEFailingOnSecondImage:
        calls = 0

        def decode(self, samples):
            self.calls += 1
            if self.calls == 2:
                raise RuntimeError("out of memory decoding")
            return vae.decode(samples)

    generator = ComfyFluxGenerator(model, clip, VAEFailingOnSecondImage(), **SIZE)
    requests = [generator.request("a fox", 1), generator.request("a hare", 2), generator.request("an owl", 3)]
    with pytest.raises(errors.GenerationFailed, match=r"seed 2 ") as info:
        generator.generate(requests)
    assert list(info.value.completed) == [0]
    expected = ComfyFluxGenerator(model, clip, vae, **SIZE).generate(requests[:1])[0].image
    assert torch.equal(info.value.completed[0].image, expected)


# ---- the nodes end to end -------------------------------------------------------------------------------


def test_nodes_chain_lora_stack_generator_and_generate(style_lora):
    model, clip, vae = models()
    (loras,) = stack("style.safetensors", "pbstyle", 0.7)
    (generator,) = build(model, clip, vae, 64, 48, 4, 3.5, "euler", "simple", loras=loras)
    (image,) = generate(generator, "a fox", 9)
    assert image.shape == (1, 48, 64, 3)
    lora_model, lora_clip = comfy.sd.load_lora_for_models(
        model, clip, comfy.utils.load_torch_file(str(style_lora)), 0.7, 0.7)
    assert torch.equal(image[0], standard_chain(lora_model, lora_clip, vae, "pbstyle, a fox", 9))
    with pytest.raises(errors.InvalidParameter, match="^prompt: is empty"):
        generate(generator, "  ", 9)


def test_describe_is_json_and_the_generator_satisfies_the_protocol(style_lora):
    generator = ComfyFluxGenerator(*models(), loras=[LoraSpec(str(style_lora), "pbstyle", 0.7)], steps=3, **SIZE)
    description = json.loads(json.dumps(generator.describe()))
    assert description == {"backend": "comfyui", "model": "TinyFluxModel", "width": 64, "height": 48, "steps": 3,
                           "guidance": 3.5, "sampler": "euler", "scheduler": "simple", "cfg": 1.0, "denoise": 1.0,
                           "loras": [{"path": "style.safetensors", "trigger": "pbstyle", "weight": 0.7}]}
    assert isinstance(generator, generation.Generator)
    assert os.path.isabs(generator.loras[0].path)


def test_max_batch_groups_deterministic_requests_and_keeps_each_seeds_noise():
    """Contract test on the fakes: with max_batch, euler requests go to one sample call whose noise rows are each
    request's own seed noise; an ancestral request still gets its own call. (That the batch's pixels equal
    KSampler's for each seed is proven on the real ComfyUI in tests/integration/test_comfy_generator.py.)"""
    import dataclasses

    from tests.comfy_fakes.fake_samplers import SAMPLE_CALLS
    one_by_one = ComfyFluxGenerator(*models(), width=64, height=64, steps=2)
    batched = ComfyFluxGenerator(*models(), width=64, height=64, steps=2, max_batch=4)
    requests = [one_by_one.request(f"prompt {i}", 10 + i) for i in range(3)]
    requests.append(dataclasses.replace(one_by_one.request("prompt 3", 13), sampler="euler_ancestral"))
    singles = one_by_one.generate(requests)
    SAMPLE_CALLS.clear()
    steps = []
    batch = batched.generate(requests, on_step=lambda done, total: steps.append((done, total)))
    assert [call["noise"].shape[0] for call in SAMPLE_CALLS] == [3, 1]
    latent = torch.zeros(1, 16, 8, 8)
    for i in range(3):
        assert torch.equal(SAMPLE_CALLS[0]["noise"][i:i + 1], comfy.sample.prepare_noise(latent, 10 + i, None))
    assert steps[-1] == (8, 8) and [s for s, _ in steps] == sorted(s for s, _ in steps)
    for ours, theirs in zip(batch, singles):
        assert ours.seed == theirs.seed and torch.allclose(ours.image, theirs.image, atol=1e-5)
    with pytest.raises(errors.InvalidParameter, match="max_batch"):
        ComfyFluxGenerator(*models(), max_batch=0)
