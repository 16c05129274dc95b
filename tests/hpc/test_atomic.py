import pytest

from hpc import atomic


def test_write_is_whole_or_absent(tmp_path):
    target = tmp_path / "out" / "ckpt.pt"
    with pytest.raises(RuntimeError):
        with atomic.atomic_path(target) as tmp:
            tmp.write_bytes(b"half")
            raise RuntimeError("crash mid-write")
    assert not target.exists()
    assert list(target.parent.iterdir()) == []  # no temporary left behind either
    atomic.write_text(target, "whole")
    assert target.read_text() == "whole"


def test_torch_save_roundtrip(tmp_path):
    import torch

    atomic.torch_save({"w": torch.arange(3)}, tmp_path / "c.pt")
    assert torch.load(tmp_path / "c.pt")["w"].tolist() == [0, 1, 2]
