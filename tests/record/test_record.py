"""The run directory: report.json written atomically and incrementally, PNG text metadata, A1111 parameters."""
import json
import re
import struct

import pytest
import torch
from PIL import Image

from pipeline.record import pnginfo, report as record_module
from pipeline.beam.types import Candidate
from pipeline.errors import InvalidParameter, PromptBeamError
from pipeline.record.pnginfo import a1111_parameters, parse_a1111_parameters, read_png_text, rewrite_png_text, save_png
from pipeline.record.report import RunRecord

CONFIG = {"beam_width": 2, "keep_top": 1, "iterations": 2, "steps": 4, "guidance": 3.5, "sampler": None,
          "scheduler": None, "generator": {"model": "black-forest-labs/FLUX.1-schnell"}}


def candidate(cid, prompt="a red fox in the snow", total=70.5, parent=None, seed=123):
    iteration, index = (int(x) for x in cid[1:].split("c"))
    return Candidate(id=cid, iteration=iteration, index=index, parent=parent, dimension="what" if parent else None,
                     what="a red fox", how="in the snow", prompt=prompt, negative=None, seed=seed,
                     scores={"alignment": 30.0, "aesthetic": 6.5, "total": total}, status="ok")


def image(value=0.5, size=16):
    return torch.full((size, size, 3), value)


def png_chunks(path):
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    chunks, pos = [], 8
    while pos < len(data):
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        body = data[pos + 8:pos + 8 + length]
        chunks.append((kind.decode(), body.split(b"\0", 1)[0].decode("latin-1")))
        pos += 12 + length
    return chunks


def test_create_writes_a_complete_report(tmp_path):
    rec = RunRecord.create(tmp_path, "a red fox", CONFIG, run_id="fox-1")
    assert rec.run_dir == tmp_path / "fox-1"
    report = json.loads((rec.run_dir / "report.json").read_text())
    assert report["schema_version"] == 1 and report["run_id"] == "fox-1" and report["user_prompt"] == "a red fox"
    assert report["config"] == CONFIG and report["candidates"] == [] and report["iterations"] == []
    assert report["status"] == "running" and report["stop_reason"] is None and report["control"] is None
    assert set(report["timings"]) >= {"llm_s", "generate_s", "score_s", "wall_s"}


def test_run_ids_are_fresh_and_checked(tmp_path):
    first = RunRecord.create(tmp_path, "p", CONFIG)
    second = RunRecord.create(tmp_path, "p", CONFIG)
    assert first.run_dir != second.run_dir
    with pytest.raises(InvalidParameter, match="already exists"):
        RunRecord.create(tmp_path, "p", CONFIG, run_id=first.run_dir.name)
    with pytest.raises(InvalidParameter, match="^run_id: "):
        RunRecord.create(tmp_path, "p", CONFIG, run_id="../escape")


def test_candidate_is_on_disk_with_png_metadata(tmp_path):
    rec = RunRecord.create(tmp_path, "a red fox", CONFIG, run_id="r")
    c0 = candidate("i0c0", prompt="ein Fuchs im Schnee, 🦊 füchsisch")
    rec.add_candidate(c0, image(0.25))
    on_disk = json.loads((rec.run_dir / "report.json").read_text())
    assert on_disk["candidates"][0]["id"] == "i0c0" and on_disk["candidates"][0]["image"] == "i0c0.png"
    text = read_png_text(rec.run_dir / "i0c0.png")
    assert text["promptbeam:prompt"] == "ein Fuchs im Schnee, 🦊 füchsisch"
    assert text["promptbeam:what"] == "a red fox" and text["promptbeam:how"] == "in the snow"
    assert text["promptbeam:seed"] == "123" and text["promptbeam:parent"] == ""
    assert json.loads(text["promptbeam:scores"]) == {"alignment": 30.0, "aesthetic": 6.5, "total": 70.5}
    assert "parameters" not in text and "prompt" not in text   # a plain "prompt" chunk would confuse ComfyUI
    kinds = dict((key, kind) for kind, key in png_chunks(rec.run_dir / "i0c0.png") if kind in ("tEXt", "iTXt"))
    assert kinds["promptbeam:prompt"] == "iTXt" and kinds["promptbeam:seed"] == "tEXt"
    loaded = rec.load_image("i0c0.png")
    assert torch.allclose(loaded, image(0.25), atol=1 / 255)

    failed = Candidate(id="i0c1", iteration=0, index=1, parent=None, dimension=None, what="w", how="h",
                       prompt="p", negative=None, seed=5).fail("generate", RuntimeError("CUDA out of memory"))
    rec.add_candidate(failed, None)
    report = RunRecord.open(rec.run_dir).report
    assert report["candidates"][1]["status"] == "failed" and report["candidates"][1]["image"] is None
    assert report["candidates"][1]["error"] == "RuntimeError: CUDA out of memory"
    assert report["images"] == {"budget": None, "rendered": 2, "failed": 1}
    assert not (rec.run_dir / "i0c1.png").exists()
    assert [p.name for p in rec.run_dir.iterdir() if p.name.endswith(".tmp")] == []


def test_best_carries_a1111_parameters_and_it_moves(tmp_path):
    rec = RunRecord.create(tmp_path, "a red fox", CONFIG, run_id="r")
    rec.add_candidate(candidate("i0c0", seed=123), image(0.2))
    rec.add_candidate(candidate("i1c0", parent="i0c0", prompt="a red fox, snow, dawn", seed=123), image(0.3))
    rec.set_best("i0c0", ["i0c0"], ["i0c0"])
    expected = ("a red fox in the snow\nSteps: 4, Sampler: Euler, CFG scale: 1, Distilled CFG Scale: 3.5, "
                "Seed: 123, Size: 16x16, Model: black-forest-labs/FLUX.1-schnell, Version: Prompt Beam 0.1.0")
    assert read_png_text(rec.run_dir / "i0c0.png")["parameters"] == expected
    rec.set_best("i1c0", ["i0c0", "i1c0"], ["i1c0", "i0c0"])
    assert "parameters" not in read_png_text(rec.run_dir / "i0c0.png")
    params = parse_a1111_parameters(read_png_text(rec.run_dir / "i1c0.png")["parameters"])
    assert params["prompt"] == "a red fox, snow, dawn" and params["Seed"] == "123" and params["Steps"] == "4"
    assert params["Model"] == "black-forest-labs/FLUX.1-schnell" and params["negative"] is None
    report = RunRecord.open(rec.run_dir).report
    assert report["best"] == "i1c0" and report["lineage"] == ["i0c0", "i1c0"]
    # rewriting metadata keeps the pixels
    assert torch.allclose(rec.load_image("i0c0.png"), image(0.2), atol=1 / 255)


def test_a1111_format_with_negative_and_quoting():
    text = a1111_parameters("a fox, in snow", "blurry, text",
                            {"Steps": 20, "Sampler": "dpmpp_2m", "Schedule type": None, "CFG scale": 1,
                             "Seed": 5, "Size": "1024x768", "Model": "flux: dev, fp8"})
    assert text == ('a fox, in snow\nNegative prompt: blurry, text\nSteps: 20, Sampler: dpmpp_2m, CFG scale: 1, '
                    'Seed: 5, Size: 1024x768, Model: "flux: dev, fp8"')
    parsed = parse_a1111_parameters(text)
    assert parsed == {"prompt": "a fox, in snow", "negative": "blurry, text", "Steps": "20",
                      "Sampler": "dpmpp_2m", "CFG scale": "1", "Seed": "5", "Size": "1024x768",
                      "Model": "flux: dev, fp8"}


def test_report_write_is_atomic(tmp_path, monkeypatch):
    rec = RunRecord.create(tmp_path, "a red fox", CONFIG, run_id="r")
    rec.add_candidate(candidate("i0c0"), image())
    before = (rec.run_dir / "report.json").read_text()

    def torn_dump(obj, handle, **kwargs):
        handle.write('{"schema_version": 1, "candidates": [')
        raise OSError("disk full")
    monkeypatch.setattr(record_module.json, "dump", torn_dump)
    with pytest.raises(OSError, match="disk full"):
        rec.add_candidate(candidate("i0c1"), image())
    monkeypatch.undo()
    assert (rec.run_dir / "report.json").read_text() == before
    assert not (rec.run_dir / "report.json.tmp").exists()         # the torn copy does not hold on to disk space
    assert RunRecord.open(rec.run_dir).report["candidates"][0]["id"] == "i0c0"


def test_open_refuses_what_is_not_a_run(tmp_path):
    with pytest.raises(InvalidParameter, match="^run_dir: .*no report.json"):
        RunRecord.open(tmp_path)
    (tmp_path / "report.json").write_text("{not json")
    with pytest.raises(PromptBeamError, match="not valid JSON"):
        RunRecord.open(tmp_path)
    (tmp_path / "report.json").write_text(json.dumps({"schema_version": 99}))
    with pytest.raises(PromptBeamError, match="schema_version 99"):
        RunRecord.open(tmp_path)


def test_png_writes_are_atomic_too(tmp_path, monkeypatch):
    target = tmp_path / "x.png"
    pnginfo.save_png(target, image(0.1), {"promptbeam:id": "old"})

    class Boom(Exception):
        pass

    def broken_save(self, fp, *args, **kwargs):
        fp.write(b"\x89PNG partial")
        raise Boom()
    monkeypatch.setattr(pnginfo.Image.Image, "save", broken_save)
    with pytest.raises(Boom):
        pnginfo.save_png(target, image(0.9), {"promptbeam:id": "new"})
    monkeypatch.undo()
    assert read_png_text(target) == {"promptbeam:id": "old"}


def test_rewriting_png_text_keeps_the_image_data_byte_for_byte(tmp_path):
    image = torch.rand(32, 48, 3)
    path = tmp_path / "x.png"
    save_png(path, image, {"promptbeam:prompt": "a fox", "parameters": "old"})
    idat_before = re.findall(rb"IDAT.*?(?=IEND)", path.read_bytes(), re.S)
    rewrite_png_text(path, {"promptbeam:prompt": "a fox", "promptbeam:how": "Morgenröte über dem Meer — 夜明け"})
    assert read_png_text(path) == {"promptbeam:prompt": "a fox", "promptbeam:how": "Morgenröte über dem Meer — 夜明け"}
    assert re.findall(rb"IDAT.*?(?=IEND)", path.read_bytes(), re.S) == idat_before
    with Image.open(path) as reloaded:
        assert reloaded.size == (48, 32)
        reloaded.load()      # CRCs and zlib stream check out
