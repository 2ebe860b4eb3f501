"""The services' file rules on a real filesystem: allowed roots (symlinks, `..`, absolute paths) and retention."""
import os
import time

import pytest

from pipeline.services.confine import AllowedRoots, OutsideRoots
from pipeline.services.load import prune_outputs


@pytest.fixture
def roots(tmp_path):
    (tmp_path / "loras" / "sub").mkdir(parents=True)
    (tmp_path / "loras" / "style.safetensors").write_bytes(b"x")
    (tmp_path / "outside.safetensors").write_bytes(b"x")
    (tmp_path / "loras" / "sub" / "escape.safetensors").symlink_to(tmp_path / "outside.safetensors")
    return AllowedRoots([tmp_path / "loras"], "--lora-dir")


def test_names_inside_the_roots_are_found(roots, tmp_path):
    inside = (tmp_path / "loras" / "style.safetensors").resolve()
    assert roots.find("style", (".safetensors",)) == inside
    assert roots.find("sub/../style.safetensors") == inside
    assert roots.find(str(inside)) == inside
    assert roots.find("missing", (".safetensors",)) is None
    assert roots.find("sub/../missing.safetensors") is None          # stays inside: not found, not refused


@pytest.mark.parametrize("name", ["../outside.safetensors", "../outside", "sub/escape.safetensors",
                                  "../../etc/passwd", "../nothing_here.safetensors"])
def test_paths_leaving_the_roots_are_refused_with_the_flag(roots, name):
    with pytest.raises(OutsideRoots) as info:
        roots.find(name, (".safetensors",), field="loras")
    assert str(info.value).startswith("loras: ") and "start the service with --lora-dir DIR" in str(info.value)


def test_absolute_paths_outside_are_refused_even_when_missing(roots, tmp_path):
    for path in (tmp_path / "outside.safetensors", tmp_path / "absent.safetensors", "/etc/hostname"):
        with pytest.raises(OutsideRoots, match="is outside the folders this service may read"):
            roots.find(str(path))


def test_a_root_that_is_a_symlink_is_resolved_at_start(tmp_path):
    (tmp_path / "real").mkdir()
    (tmp_path / "real" / "a.png").write_bytes(b"x")
    (tmp_path / "link").symlink_to(tmp_path / "real", target_is_directory=True)
    roots = AllowedRoots([tmp_path / "link"], "--allow-dir")
    assert roots.check(tmp_path / "link" / "a.png", "imagePath") == (tmp_path / "real" / "a.png").resolve()
    assert roots.check(tmp_path / "real" / "a.png", "imagePath")     # the same folder by its real name


def test_retention_by_count_and_age_deletes_only_matching_files(tmp_path):
    now = time.time()
    for index in range(6):
        path = tmp_path / f"flux_{index}.png"
        path.write_bytes(b"png")
        os.utime(path, (now - 3600 * index, now - 3600 * index))      # flux_0 newest, flux_5 five hours old
    (tmp_path / "mine.png").write_bytes(b"keep")
    os.utime(tmp_path / "mine.png", (now - 10 * 3600, now - 10 * 3600))
    assert prune_outputs(tmp_path, "flux_*.png") == 0                  # no limit: nothing deleted
    assert prune_outputs(tmp_path, "flux_*.png", keep=4) == 2
    assert sorted(p.name for p in tmp_path.glob("flux_*.png")) == [f"flux_{i}.png" for i in range(4)]
    assert prune_outputs(tmp_path, "flux_*.png", max_age_s=2.5 * 3600) == 1
    assert sorted(p.name for p in tmp_path.glob("*.png")) == ["flux_0.png", "flux_1.png", "flux_2.png", "mine.png"]


class Answer:
    def __init__(self, status, retry_after=None):
        self.status_code, self.headers = status, ({"Retry-After": retry_after} if retry_after else {})


def test_send_when_free_waits_retry_after_within_its_budget():
    from pipeline.services.protocol import send_when_free

    answers, slept = [Answer(503, "2"), Answer(503, "3"), Answer(200)], []
    assert send_when_free(lambda: answers.pop(0), budget_s=10, sleep=slept.append).status_code == 200
    assert slept == [2.0, 3.0]
    answers, slept = [Answer(503, "4"), Answer(503, "4"), Answer(200)], []
    assert send_when_free(lambda: answers.pop(0), budget_s=5, sleep=slept.append).status_code == 503
    assert slept == [4.0]                              # a second wait would pass the budget: the 503 is returned
    assert send_when_free(lambda: Answer(503), budget_s=60, sleep=slept.append).status_code == 503   # no header


def test_output_names_sort_in_save_order_across_a_second_boundary():
    from pipeline.services.flux import output_name

    # Three saves 1 ms apart around a second boundary: with separate reads for the second and its fraction the
    # middle one could be named "…:29_999…" after "…:30_000…"; one clock read keeps name order = save order.
    boundary = 1_796_000_000 * 10**9
    saves = [boundary - 10**6, boundary - 1, boundary, boundary + 10**6]
    names = [output_name(22 + i, now_ns) for i, now_ns in enumerate(saves)]
    assert sorted(names) == names and len(set(names)) == 4
    assert names[1].split("_")[2] == "999999999" and names[2].split("_")[2] == "000000000"


def test_retention_with_equal_mtimes_keeps_the_newest_names(tmp_path):
    from pipeline.services.flux import output_name

    # A file system with coarse timestamps gives every file of a burst the same mtime: the name decides.
    now = time.time()
    names = [output_name(seed, 1_796_000_000 * 10**9 + seed) for seed in range(5)]
    for name in names:
        (tmp_path / name).write_bytes(b"png")
        os.utime(tmp_path / name, (now, now))
    assert prune_outputs(tmp_path, "flux_*.png", keep=3) == 2
    assert sorted(p.name for p in tmp_path.glob("flux_*.png")) == names[2:]
