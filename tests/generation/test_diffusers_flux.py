"""DiffusersFluxGenerator on a tiny random Flux saved as a diffusers folder and loaded with from_pretrained."""
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from pipeline.config import LoraSpec, Settings
from pipeline.generation.diffusers_flux import DiffusersFluxGenerator
from pipeline.errors import GenerationFailed, Interrupted, InvalidParameter, ModelNotFound
from pipeline.generation.protocol import Generator
from tests.fixtures.tiny_flux import TINY_SIZE, TINY_STEPS, build_tiny_lora, tiny_request as req

ATOL = 1e-4      # batch vs single: same math, different matmul blocking


def same(a: torch.Tensor, b: torch.Tensor, atol: float = ATOL) -> bool:
    return a.shape == b.shape and torch.allclose(a, b, atol=atol)


@pytest.fixture
def fresh_generator(tiny_flux_dir, tmp_path):
    """A generator of its own (LoRA tests change adapters), searching tmp_path for LoRAs by name."""
    return DiffusersFluxGenerator(str(tiny_flux_dir), device="cpu", lora_dirs=[str(tmp_path)])


def test_loads_folder_and_renders_requested_size(tiny_generator, tiny_flux_dir):
    assert isinstance(tiny_generator, Generator)
    results = tiny_generator.generate([req(width=80, height=48, seed=7)])
    image = results[0].image
    assert image.shape == (48, 80, 3) and image.dtype == torch.float32
    assert 0.0 <= image.min() and image.max() <= 1.0 and image.std() > 0.01
    assert results[0].seed == 7 and results[0].seconds > 0
    assert results[0].metadata["model"] == str(tiny_flux_dir)
    info = tiny_generator.describe()
    assert info["dtype"] == "float32" and info["device"] == "cpu" and info["guidance_embeds"] is False
    json.dumps(info)


def test_seed_decides_the_image(tiny_generator):
    a, b, c = tiny_generator.generate([req(seed=1), req(seed=1), req(seed=2)])
    # Equal up to float noise: CPU GEMM kernels may block two identical rows of one batch differently.
    torch.testing.assert_close(a.image, b.image, atol=1e-5, rtol=0)
    assert (a.image - c.image).abs().max() > 0.01


def test_batch_equals_singles_and_groups_by_size(tiny_generator):
    requests = [req("a red cat", seed=3), req("a blue dog in the rain", seed=4),
                req("a red cat", seed=3, width=48), req("green hills", seed=5)]
    batched = tiny_generator.generate(requests)
    assert [r.metadata["batch_size"] for r in batched] == [3, 3, 1, 3]     # 64x64 group, then 48x64
    for request, result in zip(requests, batched):
        alone = tiny_generator.generate([request])[0]
        assert alone.metadata["batch_size"] == 1
        assert same(result.image, alone.image), (request, (result.image - alone.image).abs().max())
    assert (batched[0].image - batched[1].image).abs().max() > 0.01        # prompts differ -> images differ


def test_max_batch_splits_and_on_step_counts_every_step(tiny_generator):
    generator = DiffusersFluxGenerator.from_pipeline(tiny_generator.pipe, model="tiny", max_batch=2)
    steps = []
    results = generator.generate([req(seed=s, steps=3) for s in range(5)], on_step=lambda d, t: steps.append((d, t)))
    assert [r.metadata["batch_size"] for r in results] == [2, 2, 2, 2, 1]
    assert steps == [(i, 9) for i in range(1, 10)]                          # 3 calls x 3 steps


def test_on_step_called_steps_times_for_one_image(tiny_generator):
    calls = []
    tiny_generator.generate([req(steps=4)], on_step=lambda done, total: calls.append((done, total)))
    assert calls == [(1, 4), (2, 4), (3, 4), (4, 4)]


def test_should_stop_interrupts_at_the_next_step(tiny_generator):
    calls = []
    with pytest.raises(Interrupted, match="stopped at step 1/4"):
        tiny_generator.generate([req(steps=4)], on_step=lambda d, t: calls.append(d),
                                should_stop=lambda: len(calls) >= 1)
    assert calls == [1]
    with pytest.raises(Interrupted):                                         # asked before anything starts
        tiny_generator.generate([req()], on_step=lambda d, t: calls.append(d), should_stop=lambda: True)
    assert calls == [1]


@pytest.mark.parametrize("field, kwargs, expected", [
    ("width", {"width": 100}, "multiple of 16"),
    ("height", {"height": 8}, "multiple of 16"),
    ("steps", {"steps": 0}, "at least 1"),
    ("sampler", {"sampler": "dpmpp_2m"}, "euler"),
    ("scheduler", {"scheduler": "ddim_uniform"}, "karras"),
])
def test_bad_request_is_refused_before_any_work(tiny_generator, field, kwargs, expected):
    calls = []
    with pytest.raises(InvalidParameter, match=expected) as info:
        tiny_generator.generate([req(), req(**kwargs)], on_step=lambda d, t: calls.append(d))
    assert info.value.name == field and str(info.value).startswith(f"{field}:")
    assert calls == []                                                       # the valid first request never ran


def test_missing_model_is_named(tmp_path):
    missing = tmp_path / "no_such_flux"
    with pytest.raises(ModelNotFound, match="not found") as info:
        DiffusersFluxGenerator(str(missing), device="cpu")
    assert str(missing) in str(info.value)
    with pytest.raises(ModelNotFound, match="model_index.json"):
        DiffusersFluxGenerator(str(tmp_path), device="cpu")
    with pytest.raises(ModelNotFound, match="flux1-dev.safetensors"):
        DiffusersFluxGenerator(str(tmp_path / "flux1-dev.safetensors"), device="cpu")


def test_constructor_checks_loras_before_loading_the_model(tmp_path, foreign_lora_path):
    broken = tmp_path / "broken_flux"
    broken.mkdir()
    (broken / "model_index.json").write_text("{}")      # would fail to load: proves the LoRA was checked first
    with pytest.raises(ModelNotFound, match="LoRA 'absent_style' not found"):
        DiffusersFluxGenerator(str(broken), device="cpu", loras=[LoraSpec("absent_style")], lora_dirs=[])
    with pytest.raises(ModelNotFound, match="another architecture"):
        DiffusersFluxGenerator(str(broken), device="cpu", loras=[{"path": str(foreign_lora_path)}])
    with pytest.raises(ModelNotFound, match="broken_flux"):
        DiffusersFluxGenerator(str(broken), device="cpu")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on a machine without CUDA")
def test_cuda_without_cuda_is_a_clear_error(tiny_flux_dir):
    with pytest.raises(InvalidParameter, match="CUDA is not available"):
        DiffusersFluxGenerator(str(tiny_flux_dir), device="cuda")


def test_offload_needs_an_accelerator(tiny_flux_dir):
    with pytest.raises(InvalidParameter, match="offload"):
        DiffusersFluxGenerator(str(tiny_flux_dir), device="cpu", offload=True)


def test_single_file_transformer_with_base_folder(tiny_generator, tiny_flux_dir, tmp_path):
    from safetensors.torch import save_file

    # A transformer-only checkpoint (diffusers key layout; BFL-layout files go through diffusers' converter).
    state = {k: v.contiguous() for k, v in tiny_generator.pipe.transformer.state_dict().items()}
    save_file(state, str(tmp_path / "tiny-flux-transformer.safetensors"))
    generator = DiffusersFluxGenerator(str(tmp_path / "tiny-flux-transformer.safetensors"), base=str(tiny_flux_dir),
                                       device="cpu")
    assert generator.describe()["base"] == str(tiny_flux_dir)
    assert torch.equal(generator.generate([req()])[0].image, tiny_generator.generate([req()])[0].image)
    with pytest.raises(ModelNotFound, match="model_index.json"):
        DiffusersFluxGenerator(str(tmp_path / "tiny-flux-transformer.safetensors"), base=str(tmp_path), device="cpu")


def test_lora_changes_the_image_and_weight_zero_does_not(fresh_generator, tiny_lora_path, tiny_generator):
    plain = tiny_generator.generate([req()])[0].image
    fresh_generator.use_loras([LoraSpec(str(tiny_lora_path), weight=1.0)])
    with_lora = fresh_generator.generate([req()])[0]
    assert (with_lora.image - plain).abs().max() > 1e-3
    assert with_lora.metadata["loras"][0]["weight"] == 1.0
    fresh_generator.use_loras([LoraSpec(str(tiny_lora_path), weight=0.0)])
    assert torch.equal(fresh_generator.generate([req()])[0].image, plain)
    fresh_generator.use_loras([])                                            # none active: the plain model
    assert torch.equal(fresh_generator.generate([req()])[0].image, plain)
    fresh_generator.use_loras([LoraSpec(str(tiny_lora_path), weight=1.0)])   # back on after being disabled
    assert torch.equal(fresh_generator.generate([req()])[0].image, with_lora.image)


def test_same_lora_is_loaded_once(tiny_flux_dir, tiny_lora_path):
    generator = DiffusersFluxGenerator(str(tiny_flux_dir), device="cpu", lora_dirs=[str(tiny_lora_path.parent)])
    reads = []
    real_load = generator.pipe.load_lora_weights

    def counting_load(*args, **kwargs):      # the real loader, counted
        reads.append(args[0])
        return real_load(*args, **kwargs)

    generator.pipe.load_lora_weights = counting_load
    first = generator.load_lora(LoraSpec(str(tiny_lora_path)))
    again = generator.load_lora(LoraSpec(str(tiny_lora_path), weight=0.3, trigger="other"))
    generator.use_loras([LoraSpec(str(tiny_lora_path), weight=0.7)])
    generator.use_loras([{"path": "tiny_style", "weight": 0.5}])             # same file, found by name
    generator.generate([req()])
    assert first == again
    assert reads == [str(tiny_lora_path.resolve())] and generator.lora_loads == 1
    assert generator.pipe.get_list_adapters() == {"transformer": [first.adapter]}
    assert generator.describe()["loras"][0]["weight"] == 0.5


def test_loras_from_the_constructor_add_their_triggers(tiny_flux_dir, tiny_lora_path):
    generator = DiffusersFluxGenerator(str(tiny_flux_dir), device="cpu",
                                       loras=[LoraSpec(str(tiny_lora_path), trigger="tnystyle", weight=0.8)])
    first, second = generator.generate([req("a red cat"), req("a TNYSTYLE painting of a dog")])
    assert first.prompt == "tnystyle, a red cat"
    assert second.prompt == "a TNYSTYLE painting of a dog"                   # already there: not repeated
    assert generator.describe()["loras"][0]["trigger"] == "tnystyle"
    assert generator.lora_loads == 1


def test_missing_lora_lists_where_it_looked(tiny_flux_dir, tmp_path):
    folders = [tmp_path / "loras_a", tmp_path / "loras_b"]
    generator = DiffusersFluxGenerator(str(tiny_flux_dir), device="cpu", lora_dirs=[str(f) for f in folders])
    with pytest.raises(ModelNotFound) as info:
        generator.use_loras([LoraSpec("my_style")])
    message = str(info.value)
    assert "LoRA 'my_style' not found" in message
    for folder in folders:
        assert str(folder / "my_style.safetensors") in message
    assert "FLUX_LORAS_DIR" in message and generator.lora_loads == 0


def test_lora_by_name_is_found_in_a_lora_folder(fresh_generator, tmp_path, tiny_flux_dir):
    build_tiny_lora(tmp_path / "ink_wash.safetensors", tiny_flux_dir / "transformer", seed=5)
    fresh_generator.use_loras([LoraSpec("ink_wash", weight=0.5)])
    assert fresh_generator.describe()["loras"][0]["file"] == str((tmp_path / "ink_wash.safetensors").resolve())


def test_lora_for_another_architecture_is_refused(fresh_generator, foreign_lora_path):
    with pytest.raises(ModelNotFound, match="another architecture") as info:
        fresh_generator.use_loras([LoraSpec(str(foreign_lora_path))])
    assert "SDXL" in str(info.value) and fresh_generator.lora_loads == 0


def test_lora_for_another_flux_size_is_refused(fresh_generator, tmp_path):
    (tmp_path / "big").mkdir()
    (tmp_path / "big" / "config.json").write_text(json.dumps({"num_attention_heads": 4, "attention_head_dim": 16}))
    lora = build_tiny_lora(tmp_path / "for_bigger_flux.safetensors", tmp_path / "big")
    with pytest.raises(ModelNotFound, match="could not be loaded into this Flux model") as info:
        fresh_generator.use_loras([LoraSpec(str(lora))])
    assert "size mismatch" in str(info.value)
    assert fresh_generator.generate([req()])[0].image.shape == (TINY_SIZE, TINY_SIZE, 3)   # still usable


def test_from_settings_reads_flux_model_and_loras(tiny_flux_dir, tiny_lora_path):
    settings = Settings.from_env({"IMAGE_PROVIDER": "flux", "FLUX_MODEL": str(tiny_flux_dir), "FLUX_LORAS": json.dumps(
        [{"path": str(tiny_lora_path), "trigger": "tnystyle", "weight": 0.6}])})
    generator = DiffusersFluxGenerator.from_settings(settings, device="cpu", max_batch=2)
    info = generator.describe()
    assert info["model"] == str(tiny_flux_dir) and info["max_batch"] == 2
    assert info["loras"][0]["weight"] == 0.6 and generator.triggers == ["tnystyle"]


def test_guidance_is_ignored_by_schnell_and_used_by_dev(tiny_generator, tiny_flux_dev_dir):
    low, high = tiny_generator.generate([req(guidance=1.0), req(guidance=6.0)])
    # one call, no guidance embed (equal up to float noise between two rows of one batch)
    torch.testing.assert_close(low.image, high.image, atol=1e-5, rtol=0)
    assert low.metadata["batch_size"] == 2
    assert low.metadata["guidance"] is None
    dev = DiffusersFluxGenerator(str(tiny_flux_dev_dir), device="cpu")
    assert dev.max_sequence_length == 512
    low, high, again = dev.generate([req(guidance=1.0), req(guidance=6.0), req(guidance=6.0)])
    assert (low.image - high.image).abs().max() > 1e-3
    assert [low.metadata["batch_size"], high.metadata["batch_size"]] == [1, 2]      # grouped by guidance
    assert same(high.image, again.image) and high.metadata["guidance"] == 6.0


def test_negative_prompt_needs_true_cfg(tiny_generator):
    plain = tiny_generator.generate([req()])[0]
    ignored = tiny_generator.generate([req(negative="blurry, low quality")])[0]
    assert torch.equal(ignored.image, plain.image) and ignored.metadata["negative_ignored"] is True
    cfg = DiffusersFluxGenerator.from_pipeline(tiny_generator.pipe, model="tiny", true_cfg_scale=2.0)
    with_negative, without = cfg.generate([req(negative="blurry, low quality"), req()])
    assert with_negative.metadata["negative"] == "blurry, low quality"
    assert (with_negative.image - plain.image).abs().max() > 1e-3
    assert torch.equal(without.image, plain.image)                         # no negative: no second pass


def test_karras_schedule_changes_sigmas_not_the_noise(tiny_generator):
    simple, karras = tiny_generator.generate([req(steps=3), req(steps=3, scheduler="karras")])
    assert (simple.image - karras.image).abs().max() > 1e-3
    assert karras.metadata["scheduler"] == "karras"
    assert torch.equal(tiny_generator.generate([req(steps=3)])[0].image, simple.image)   # default restored


def test_out_of_memory_becomes_an_actionable_error(fresh_generator):
    def out_of_memory(done, total):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    # The batch of two is split first (tests/beam/test_render_faults.py); one image that does not fit fails.
    with pytest.raises(GenerationFailed, match="out of GPU memory rendering 1 image") as info:
        fresh_generator.generate([req(), req(seed=2)], on_step=out_of_memory)
    assert "offload" in str(info.value) and fresh_generator.max_batch == 1


def test_a_failing_batch_hands_back_the_images_rendered_before_it(tiny_generator):
    requests = [req(seed=4), req(seed=5, width=48)]        # two sizes: two pipeline calls

    def fail_in_second_call(done, total):
        if done > TINY_STEPS:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    with pytest.raises(GenerationFailed) as info:
        tiny_generator.generate(requests, on_step=fail_in_second_call)
    assert list(info.value.completed) == [0]
    alone = tiny_generator.generate(requests[:1])[0]
    torch.testing.assert_close(info.value.completed[0].image, alone.image, atol=1e-5, rtol=0)


def test_pipeline_without_text_encoders_uses_a_prompt_encoder(tiny_generator):
    from diffusers import FluxPipeline

    pipe = tiny_generator.pipe
    bare = FluxPipeline(scheduler=pipe.scheduler, vae=pipe.vae, transformer=pipe.transformer, text_encoder=None,
                        tokenizer=None, text_encoder_2=None, tokenizer_2=None)
    with pytest.raises(InvalidParameter, match="prompt_encoder"):
        DiffusersFluxGenerator.from_pipeline(bare)
    seen = []

    def encode(prompts):   # the real encoders, called from outside the pipeline
        seen.append(list(prompts))
        embeds, pooled, _ = pipe.encode_prompt(prompt=prompts, prompt_2=None, max_sequence_length=256)
        return embeds, pooled

    generator = DiffusersFluxGenerator.from_pipeline(bare, model="bare", prompt_encoder=encode)
    a, b = generator.generate([req("a red cat", seed=1), req("a blue dog", seed=2)])
    assert seen == [["a red cat", "a blue dog"]]
    assert same(a.image, tiny_generator.generate([req("a red cat", seed=1)])[0].image)


def test_import_of_generation_types_stays_light():
    code = ("import sys, pipeline.generation as g; assert 'diffusers' not in sys.modules, 'diffusers imported';"
            "assert g.DiffusersFluxGenerator.__module__ == 'pipeline.generation.diffusers_flux';"
            "assert g.RemoteFluxClient.__module__ == 'pipeline.generation.remote_flux'; print('ok')")
    out = subprocess.run([sys.executable, "-c", code], cwd=Path(__file__).resolve().parents[2],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr
