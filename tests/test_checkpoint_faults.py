"""A checkpoint write interrupted at every stage leaves the previous checkpoint loadable.

The stages of ``gpudl.save`` are the file system calls it makes: every write of the .npz data
into the temporary file, its flush and fsync, the ``os.replace`` onto the target. Each stage in
turn fails with ENOSPC (a failing writer), or the process is killed with SIGKILL right there;
a full disk is also tried for real on a tiny tmpfs where this machine lets us mount one.
"""
import errno
import os
import signal
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from conftest import subprocess_env
from gpudl import serialization
from gpudl.serialization import CheckpointError, load, save

OLD = {"w": np.arange(6.0).reshape(2, 3), "epoch": 1}
NEW = {"w": np.full((200, 50), 7.0), "epoch": 2}  # 80 kB: the zip writer makes several writes

# Installs ``fault_at(k, action)``: the k-th file-system stage of gpudl.save runs ``action`` instead.
HOOKS = textwrap.dedent("""
    import os

    from gpudl import serialization

    class Faults:
        def __init__(self, at, action):
            self.at, self.action, self.count = at, action, 0

        def stage(self, name):
            self.count += 1
            if self.count == self.at:
                self.action(name)

    class FaultyFile:
        def __init__(self, file, faults):
            self._file, self._faults = file, faults

        def write(self, data):
            self._faults.stage("write")
            return self._file.write(data)

        def flush(self):
            self._faults.stage("flush")
            return self._file.flush()

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return self._file.__exit__(*exc)

        def __getattr__(self, name):
            return getattr(self._file, name)

    def fault_at(at, action):
        faults = Faults(at, action)
        real_open, real_fsync, real_replace = open, os.fsync, os.replace

        def faulty_open(*args, **kwargs):
            return FaultyFile(real_open(*args, **kwargs), faults)

        def faulty_fsync(fd):
            faults.stage("fsync")
            return real_fsync(fd)

        def faulty_replace(src, dst):
            faults.stage("replace")
            return real_replace(src, dst)

        serialization.open = faulty_open
        os.fsync, os.replace = faulty_fsync, faulty_replace
        return faults
""")
namespace = {}
exec(HOOKS, namespace)  # the same hooks serve this process and the killed subprocesses
fault_at = namespace["fault_at"]


REAL_FSYNC, REAL_REPLACE = os.fsync, os.replace


def restore():
    """Undo ``fault_at``."""
    serialization.__dict__.pop("open", None)
    os.fsync, os.replace = REAL_FSYNC, REAL_REPLACE


def count_stages(tmp_path):
    faults = fault_at(0, None)
    try:
        save(NEW, tmp_path / "count.npz")
    finally:
        restore()
    return faults.count


def assert_loads(path, expected):
    state = load(path, map_location="cpu")
    assert state["epoch"] == expected["epoch"]
    np.testing.assert_array_equal(state["w"], expected["w"])


@pytest.fixture
def stages(tmp_path):
    count = count_stages(tmp_path)
    assert count >= 5  # several writes, a flush, the file's and the folder's fsync, the replace
    return count


def test_a_write_failing_at_any_stage_leaves_the_previous_checkpoint(tmp_path, stages):
    path = tmp_path / "checkpoint.npz"
    save(OLD, path)

    def no_space(stage):
        raise OSError(errno.ENOSPC, "No space left on device")

    for at in range(1, stages + 1):
        faults = fault_at(at, no_space)
        try:
            save(NEW, path)
            replaced = True
        except CheckpointError as exc:
            assert "No space left on device" in str(exc) and "checkpoint.npz" in str(exc)
            replaced = False
        finally:
            restore()
        assert faults.count >= at
        # a failure before the replace keeps the old file, one after it (the folder's fsync, which
        # save ignores) already has the new one: never anything else, and no temporary left behind
        assert_loads(path, NEW if replaced else OLD)
        assert sorted(os.listdir(tmp_path)) == ["checkpoint.npz", "count.npz"], at
        if replaced:
            save(OLD, path)


KILLED = textwrap.dedent("""
    import os, signal, sys
    import numpy as np
    from gpudl.serialization import save
    {hooks}
    fault_at(int(sys.argv[2]), lambda stage: os.kill(os.getpid(), signal.SIGKILL))
    save({{"w": np.full((200, 50), 7.0), "epoch": 2}}, sys.argv[1])
""")


def test_a_process_killed_at_any_stage_leaves_a_loadable_checkpoint(tmp_path, stages):
    path = tmp_path / "checkpoint.npz"
    save(OLD, path)
    script = KILLED.format(hooks=HOOKS)
    seen = set()
    for at in range(1, stages + 1):
        result = subprocess.run([sys.executable, "-c", script, str(path), str(at)], env=subprocess_env(),
                                capture_output=True, text=True, timeout=120)
        assert result.returncode == -signal.SIGKILL, result.stderr[-2000:]
        state = load(path, map_location="cpu")  # the old checkpoint or, killed after the replace, the new one
        seen.add(state["epoch"])
        assert_loads(path, OLD if state["epoch"] == 1 else NEW)
        for name in os.listdir(tmp_path):  # what a kill leaves: at most an unreferenced hidden temporary
            assert name in ("checkpoint.npz", "count.npz") or (name.startswith(".checkpoint.npz.")
                                                               and name.endswith(".tmp")), name
    assert seen == {1, 2}  # kills before and after the replace were both tried


@pytest.fixture
def tiny_filesystem(tmp_path):
    """A 256 KiB tmpfs (root with mount rights only; else the ENOSPC writer above stands in)."""
    mountpoint = tmp_path / "tiny"
    mountpoint.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a tiny tmpfs needs root; the failing-writer test covers ENOSPC")
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mountpoint)],
                             capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({mounted.stderr.strip()}); the failing-writer test covers ENOSPC")
    yield mountpoint
    subprocess.run(["umount", str(mountpoint)], check=True)


def test_a_full_disk_leaves_the_previous_checkpoint(tiny_filesystem):
    path = tiny_filesystem / "checkpoint.npz"
    save(OLD, path)
    with pytest.raises(CheckpointError, match=r"could not write checkpoint .*checkpoint\.npz.*No space left"):
        save({"w": np.ones(100_000), "epoch": 2}, path)  # 800 kB on a 256 KiB disk
    assert_loads(path, OLD)
    assert os.listdir(tiny_filesystem) == ["checkpoint.npz"]  # the partial temporary is removed
    save(NEW, path)  # and its space is free again
    assert_loads(path, NEW)
