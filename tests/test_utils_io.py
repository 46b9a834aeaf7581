"""Atomic writes: permissions follow the umask, which concurrent writers never touch."""
import os
import stat
from concurrent.futures import ThreadPoolExecutor

from captioning.utils import io as io_module


def test_concurrent_atomic_writes_never_set_the_umask(tmp_path, monkeypatch):
    """Reading the umask means setting it; a writer that did so from a thread pool could leave it at 0
    (thread A sets 0, thread B reads 0, A restores, B "restores" 0). Writers must not call it at all."""
    calls = []
    real_umask = os.umask

    def spy(mask):
        calls.append(mask)
        return real_umask(mask)

    monkeypatch.setattr(os, "umask", spy)
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda i: io_module.write_json(tmp_path / f"{i}.json", {"i": i}), range(200)))
    assert calls == []
    umask = real_umask(0o022)
    real_umask(umask)
    modes = {stat.S_IMODE((tmp_path / f"{i}.json").stat().st_mode) for i in range(200)}
    assert modes == {0o666 & ~umask}
