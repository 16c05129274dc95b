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


def test_a_signal_during_save_waits_for_the_whole_file(tmp_path):
    """A preemption signal arriving mid-save is handled after the file is complete."""
    import os
    import signal

    import torch

    seen = []

    def handler(signum, frame):
        seen.append((signum, (tmp_path / "c.pt").exists()))

    old = signal.signal(signal.SIGUSR2, handler)
    try:
        with atomic.signals_deferred():
            os.kill(os.getpid(), signal.SIGUSR2)     # arrives while "saving"
            assert seen == []
            atomic.torch_save({"w": torch.zeros(10)}, tmp_path / "c.pt")
        assert seen == [(signal.SIGUSR2, True)]
    finally:
        signal.signal(signal.SIGUSR2, old)
