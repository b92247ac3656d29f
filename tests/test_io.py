import os

import pytest

from museforge.io import atomic_write_bytes, atomic_write_json, read_jsonl


def test_atomic_write_gives_the_mode_a_plain_open_would(tmp_path):
    umask = os.umask(0o022)
    try:
        atomic_write_bytes(tmp_path / "a.bin", b"x")
        with open(tmp_path / "b.bin", "wb") as fh:
            fh.write(b"x")
    finally:
        os.umask(umask)
    assert (tmp_path / "a.bin").stat().st_mode & 0o777 == (tmp_path / "b.bin").stat().st_mode & 0o777


def test_failed_write_leaves_the_old_file_and_no_temp(tmp_path):
    path = tmp_path / "data.json"
    atomic_write_json(path, {"v": 1})
    with pytest.raises(TypeError):
        atomic_write_bytes(path, 123)  # fails inside the write, after the temporary file exists
    assert path.read_text().strip().replace(" ", "").replace("\n", "") == '{"v":1}'
    assert [p.name for p in tmp_path.iterdir()] == ["data.json"]


def test_read_jsonl_skips_a_truncated_last_line(tmp_path):
    path = tmp_path / "log.jsonl"
    path.write_text('{"a": 1}\n{"a": 2}\n{"a": ')
    assert read_jsonl(path) == [{"a": 1}, {"a": 2}]
