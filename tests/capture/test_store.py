"""The on-disk cache: round trips are memory-mapped and exact; corrupt, truncated, tampered or
mismatched files are caught (and deleted by `read_layer`); a killed writer never leaves a bad
entry; two processes computing one key make one entry; keys are deterministic and safe."""
from __future__ import annotations

import copy
import json
import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from repmap_core.capture import store
from repmap_core.capture.activations import get_activations
from repmap_core.capture.models import load_model
from repmap_core.capture.store import CorruptEntry
from repmap_core.data.load import adapt_frame

ROOT = Path(__file__).resolve().parents[2]
MARKER = 424242  # a manifest value whose digits are easy to find in the header


def tensors(n: int = 6, d: int = 8) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {
        "activations": rng.standard_normal((n, d)).astype(np.float32),
        "labels": (np.arange(n) % 2).astype(np.int8),
        "pair_ids": np.array([i // 2 if i < n - 1 else -1 for i in range(n)], dtype=np.int64),
    }


def manifest(layer: int = 0, **extra) -> dict:
    return dict({"model": "tiny", "layer": layer, "marker": MARKER, "nested": {"a": [1, 2]}}, **extra)


def header_of(path: Path) -> tuple[int, dict]:
    raw = path.read_bytes()
    n = int.from_bytes(raw[:8], "little")
    return n, json.loads(raw[8:8 + n])


def bump_mtime(path: Path) -> None:
    # read_file memoises a good checksum per (path, size, mtime_ns) so a file is hashed once per
    # process. Tampering in place keeps the size and, within one clock tick (or on a filesystem
    # with coarse timestamps), the mtime too: read_file would then trust its memo and skip the
    # checksum, and the test would check nothing. A distinct mtime makes the tampered file a new
    # file to read_file, as it is to any other process (whose memo starts empty).
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_007))


def patch_bytes(path: Path, offset: int, data: bytes) -> None:
    with open(path, "r+b") as f:
        f.seek(offset)
        f.write(data)
    bump_mtime(path)


def rewrite_header(path: Path, header) -> None:
    """Replace the JSON header by `header`, padded to the same length (so the size stays consistent)."""
    raw = path.read_bytes()
    n = int.from_bytes(raw[:8], "little")
    blob = json.dumps(header, separators=(",", ":")).encode()
    assert len(blob) <= n
    path.write_bytes(raw[:8] + blob.ljust(n) + raw[8 + n:])
    bump_mtime(path)


@pytest.fixture
def written(tmp_path) -> tuple[Path, dict, dict]:
    path = tmp_path / "entry" / "layer_0.safetensors"
    t, m = tensors(), manifest()
    store.write_file(path, t, m)
    return path, t, m


# --------------------------------------------------------------------------- round trip


def test_round_trip_is_exact_memory_mapped_and_read_only(written):
    path, t, m = written
    got, got_manifest = store.read_file(path)
    assert got_manifest == m
    assert set(got) == set(t)
    for name, arr in t.items():
        assert got[name].dtype == arr.dtype
        assert got[name].shape == arr.shape
        np.testing.assert_array_equal(got[name], arr)
        # a view into a memory map of the file, not a copy in RAM
        assert isinstance(got[name], np.memmap) or isinstance(got[name].base, np.memmap)
        assert not got[name].flags.owndata
        assert not got[name].flags.writeable
        with pytest.raises(ValueError):
            got[name][0] = 0
    # nothing but the final file is left in the folder
    assert sorted(p.name for p in path.parent.iterdir()) == ["layer_0.safetensors"]


def test_round_trip_survives_a_fresh_checksum(written):
    path, t, m = written
    store._verified.clear()  # as in a new process: the checksum is really computed
    got, got_manifest = store.read_file(path)
    assert got_manifest == m
    np.testing.assert_array_equal(got["activations"], t["activations"])
    st = path.stat()
    assert store._verified[(str(path), st.st_size, st.st_mtime_ns)] is True


def test_write_replaces_an_existing_file_atomically(written):
    path, t, _ = written
    t2 = {k: v[::-1].copy() for k, v in t.items()}
    store.write_file(path, t2, manifest(marker=1))
    got, m = store.read_file(path)
    assert m["marker"] == 1
    np.testing.assert_array_equal(got["activations"], t2["activations"])
    assert sorted(p.name for p in path.parent.iterdir()) == ["layer_0.safetensors"]


# --------------------------------------------------------------------------- corruption


def flip_data_byte(path: Path) -> None:
    n, header = header_of(path)
    b, e = header["activations"]["data_offsets"]
    offset = 8 + n + (b + e) // 2
    byte = path.read_bytes()[offset]
    patch_bytes(path, offset, bytes([byte ^ 0x01]))


def edit_manifest_digit(path: Path) -> None:
    raw = path.read_bytes()
    n = int.from_bytes(raw[:8], "little")
    at = raw.index(str(MARKER).encode())
    assert 8 <= at < 8 + n  # inside the header's manifest string
    patch_bytes(path, at, str(MARKER + 1).encode())  # same length: the layout still looks right


def truncate_by(k: int):
    def run(path: Path) -> None:
        os.truncate(path, path.stat().st_size - k)

    return run


def truncate_to(size: int):
    def run(path: Path) -> None:
        os.truncate(path, size)

    return run


def truncate_to_header(path: Path) -> None:
    n, _ = header_of(path)
    os.truncate(path, 8 + n)


def header_length(value: int):
    def run(path: Path) -> None:
        patch_bytes(path, 0, int(value).to_bytes(8, "little"))

    return run


def header_length_short(path: Path) -> None:
    n, _ = header_of(path)
    patch_bytes(path, 0, (n - 10).to_bytes(8, "little"))


CORRUPTIONS = {
    "flipped data byte": (flip_data_byte, "checksum"),
    "manifest digit edited": (edit_manifest_digit, "checksum"),
    "truncated by one byte": (truncate_by(1), "bytes"),
    "truncated by half the data": (truncate_by(100), "bytes"),
    "truncated to the header": (truncate_to_header, "bytes"),
    "truncated to 5 bytes": (truncate_to(5), "shorter"),
    "truncated to nothing": (truncate_to(0), "shorter"),
    "garbage header length": (header_length(0xFFFF_FFFF_FFFF_FF00), "header length"),
    "zero header length": (header_length(0), "header length"),
    "header length too short": (header_length_short, "unreadable header"),
}


@pytest.mark.parametrize("name", list(CORRUPTIONS))
def test_read_file_detects_corruption(written, name):
    path, _, _ = written
    corrupt, message = CORRUPTIONS[name]
    store.read_file(path)  # valid before (and its checksum is now memoised)
    corrupt(path)
    with pytest.raises(CorruptEntry, match=message):
        store.read_file(path)
    # a fresh process (empty memo) sees the same
    store._verified.clear()
    with pytest.raises(CorruptEntry, match=message):
        store.read_file(path)


def test_checksum_is_checked_again_with_an_empty_memo_even_if_mtime_is_restored(written):
    path, _, _ = written
    before = path.stat()
    flip_data_byte(path)
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))  # the tamper hides its mtime
    store._verified.clear()  # another process: nothing memoised
    with pytest.raises(CorruptEntry, match="checksum"):
        store.read_file(path)


@pytest.mark.parametrize("edit", ["dtype I64->F64", "shape [6,8]->[8,6]"])
def test_tensor_table_tampering_is_detected(written, edit):
    path, _, _ = written
    _, header = header_of(path)
    header = copy.deepcopy(header)
    if edit.startswith("dtype"):
        header["pair_ids"]["dtype"] = "F64"  # one byte changed; same itemsize, so the layout checks pass
    else:
        header["activations"]["shape"] = [8, 6]
    rewrite_header(path, header)
    store._verified.clear()
    with pytest.raises(CorruptEntry):
        store.read_file(path)


def _header_as_string(header: dict, n: int):
    return "x" * (n - 20)


def _shape_not_a_list(header: dict, n: int):
    header["pair_ids"]["shape"] = 6
    return header


def _offsets_of_three(header: dict, n: int):
    b, e = header["pair_ids"]["data_offsets"]
    header["pair_ids"]["data_offsets"] = [b, b, e]
    return header


def _header_as_list(header: dict, n: int):
    return [1, 2]


def _entry_not_a_dict(header: dict, n: int):
    header["pair_ids"] = "zz"
    return header


@pytest.mark.parametrize("mangle", [
    pytest.param(_header_as_list, id="header is a list"),
    pytest.param(_entry_not_a_dict, id="tensor entry is a string"),
    pytest.param(_header_as_string, id="header is a string"),
    pytest.param(_shape_not_a_list, id="shape is an int"),
    pytest.param(_offsets_of_three, id="three data offsets"),
])
def test_structurally_malformed_header_is_a_corrupt_entry(mangle):
    key = "c" * 32
    identity = {"model": "tiny"}
    path = store.layer_path(key, 0)
    store.write_file(path, tensors(), manifest())
    n, header = header_of(path)
    rewrite_header(path, mangle(copy.deepcopy(header), n))
    store._verified.clear()
    with pytest.raises(CorruptEntry):
        store.read_file(path)
    assert store.read_layer(key, 0, identity) is None
    assert not path.exists()


# --------------------------------------------------------------------------- read_layer


def test_read_layer_returns_a_matching_file():
    key = store.entry_key({"x": 1})
    t = tensors()
    store.write_file(store.layer_path(key, 2), t, manifest(layer=2, model="m", position="last"))
    got = store.read_layer(key, 2, {"model": "m", "position": "last"})
    assert got is not None
    np.testing.assert_array_equal(got[0]["activations"], t["activations"])
    assert got[1]["layer"] == 2
    assert store.read_layer(key, 1, {"model": "m"}) is None  # absent layer: None, nothing created
    assert not store.layer_path(key, 1).exists()


@pytest.mark.parametrize("case", ["model differs", "position missing", "layer differs", "no activations tensor"])
def test_read_layer_deletes_a_mismatching_file(case):
    key = store.entry_key({"x": 2})
    path = store.layer_path(key, 1)
    identity = {"model": "m", "position": "last"}
    t = tensors()
    m = manifest(layer=1, model="m", position="last")
    if case == "model differs":
        m["model"] = "other"
    elif case == "position missing":
        del m["position"]
    elif case == "layer differs":
        m["layer"] = 0
    else:
        del t["activations"]
    store.write_file(path, t, m)
    store.read_file(path)  # the file itself is valid
    assert store.read_layer(key, 1, identity) is None
    assert not path.exists()


def test_read_layer_deletes_a_corrupt_file():
    key = store.entry_key({"x": 3})
    path = store.layer_path(key, 0)
    store.write_file(path, tensors(), manifest(layer=0))
    flip_data_byte(path)
    assert store.read_layer(key, 0, {"model": "tiny"}) is None
    assert not path.exists()


def small_frame() -> pd.DataFrame:
    return pd.DataFrame({"text": ["I loved it.", "Terrible, never again.", "Great value for money!", "It broke on day one.",
                                  "Five stars, would buy again.", "Meh."],
                         "label": [1, 0, 1, 0, 1, 0]})


def test_corrupt_layer_is_recomputed_by_the_next_get_activations(tiny_gpt2):
    ds = adapt_frame(small_frame(), name="small")
    calls = []

    def loader(resolved, device, dtype):
        calls.append(1)
        return load_model(resolved, device=device, dtype=dtype)

    first = get_activations(str(tiny_gpt2), ds, "all", "last", device="cpu", loader=loader)
    original = {layer: np.array(first[layer]) for layer in first.layer_list}
    key = first.manifest["key"]
    path = store.layer_path(key, 1)
    other = store.layer_path(key, 2)
    other_mtime = other.stat().st_mtime_ns
    flip_data_byte(path)

    identity = {k: first.manifest[k] for k in ("format", "model", "revision", "dataset_fingerprint", "position",
                                               "max_length", "dtype")}
    assert store.read_layer(key, 1, identity) is None
    assert not path.exists()

    again = get_activations(str(tiny_gpt2), ds, "all", "last", device="cpu", loader=loader)
    assert len(calls) == 2  # the missing layer needed the model once more
    assert path.exists()
    store._verified.clear()
    store.read_file(path)  # the recomputed file is valid
    for layer, arr in original.items():
        np.testing.assert_array_equal(np.asarray(again[layer]), arr)
    assert other.stat().st_mtime_ns == other_mtime  # the intact layer was not rewritten


# --------------------------------------------------------------------------- killed writer

WRITER = textwrap.dedent("""
    import sys
    import numpy as np
    from repmap_core.capture import store
    key, rows = sys.argv[1], int(sys.argv[2])
    base = np.arange(rows * 256, dtype=np.float32).reshape(rows, 256)
    print("ready", flush=True)
    i = 0
    while True:
        layer = i % 3
        store.write_file(store.layer_path(key, layer),
                         {"activations": base + i, "labels": np.full(rows, i % 2, np.int8)},
                         {"iteration": i, "layer": layer})
        i += 1
""")


MIN_KILLS = 20  # the acceptance: at least 20 kills, zero invalid reads


@pytest.mark.slow
def test_writer_killed_midway_leaves_no_bad_entry(monkeypatch, record_property):
    key = store.entry_key({"killed": "writer"})
    folder = store.entry_dir(key)
    rows = 32768  # 32 MiB per file: each write takes long enough to be killed inside
    base = np.arange(rows * 256, dtype=np.float32).reshape(rows, 256)
    rng = random.Random(1234)
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    kills = temps_seen = layers_seen = reads = 0
    invalid: list[str] = []  # every finished file that fails to read back as exactly what was written
    start = time.monotonic()
    while kills < MIN_KILLS or (kills < 2 * MIN_KILLS and (temps_seen == 0 or layers_seen == 0)):
        proc = subprocess.Popen([sys.executable, "-c", WRITER, key, str(rows)], env=env, cwd=ROOT,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            assert proc.stdout.readline().strip() == b"ready", proc.stderr.read().decode()
            time.sleep(rng.uniform(0.0, 0.5))
            proc.send_signal(signal.SIGKILL)
        finally:
            proc.kill()
            proc.wait()
        assert proc.returncode == -signal.SIGKILL
        kills += 1

        names = sorted(p.name for p in folder.iterdir()) if folder.exists() else []
        finals = [x for x in names if x.startswith("layer_")]
        temps = [x for x in names if x.startswith(".tmp-")]  # store.write_file's own temp (mkstemp)
        # safetensors' serialize_file writes to its own `.tmpXXXXXX` in the same folder and renames
        # it onto store's temp: a kill inside save_file leaves that one, which clean_temp_files also removes
        st_temps = [x for x in names if x.startswith(".tmp") and not x.startswith(".tmp-")]
        assert set(names) == set(finals) | set(temps) | set(st_temps), names  # nothing else is ever left
        assert all(x.endswith(".safetensors") for x in finals)
        for name in finals:
            reads += 1
            monkeypatch.setattr(store, "_verified", {})  # verify the checksum for real
            try:
                got, m = store.read_file(folder / name)
                ok = (name == f"layer_{m['layer']}.safetensors"
                      and np.array_equal(got["activations"], base + m["iteration"])
                      and np.array_equal(got["labels"], np.full(rows, m["iteration"] % 2, np.int8))
                      and store.read_layer(key, m["layer"], {"layer": m["layer"]}) is not None)  # not deleted as bad
            except (CorruptEntry, OSError, KeyError) as e:
                ok, m = False, {"error": repr(e)}
            if not ok:
                invalid.append(f"kill {kills}: {name} {m}")
        temps_seen += len(temps) + len(st_temps)
        layers_seen += len(finals)
        assert store.clean_temp_files(key) == len(temps) + len(st_temps)
        left = sorted(p.name for p in folder.iterdir()) if folder.exists() else []
        assert left == finals or invalid, (left, finals)  # the temps are gone, the finished files stay
    seconds = time.monotonic() - start
    summary = (f"killed writer: {kills} kills, {reads} reads of finished files, {temps_seen} temp files cleaned, "
               f"{len(invalid)} invalid reads, {seconds:.1f} s")
    print(summary)
    record_property("kills", kills)
    record_property("invalid_reads", len(invalid))
    assert not invalid, f"{summary}: {invalid[:5]}"
    assert kills >= MIN_KILLS
    assert temps_seen >= 1  # at least one kill landed inside a write (else the test proved nothing)
    assert layers_seen >= 1
    assert seconds < 90


SLOW_WRITER = textwrap.dedent("""
    import sys
    import numpy as np
    from repmap_core.capture import store
    key = sys.argv[1]
    big = np.ones((65536, 256), np.float32)  # 64 MiB: the write takes a while
    print("ready", flush=True)
    while True:
        store.write_file(store.layer_path(key, 0), {"activations": big}, {"layer": 0})
""")


def test_clean_temp_files_removes_what_a_writer_killed_inside_save_file_leaves():
    key = store.entry_key({"killed": "inside save_file"})
    folder = store.entry_dir(key)
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.Popen([sys.executable, "-c", SLOW_WRITER, key], env=env, cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    caught = None
    try:
        assert proc.stdout.readline().strip() == b"ready"
        deadline = time.monotonic() + 10
        while caught is None and time.monotonic() < deadline:
            if folder.exists():
                # a temp of safetensors' own (no hyphen) that is still being written
                caught = next((p for p in folder.iterdir() if p.name.startswith(".tmp")
                               and not p.name.startswith(".tmp-")), None)
            if caught is not None:
                proc.send_signal(signal.SIGKILL)
            time.sleep(0.0005)
    finally:
        proc.kill()
        proc.wait()
    if caught is None or not caught.exists():
        pytest.skip("could not kill the writer inside save_file")
    store.clean_temp_files(key)
    assert not [p.name for p in folder.iterdir() if p.name.startswith(".tmp")]


# --------------------------------------------------------------------------- two processes, one key

COMPUTER = textwrap.dedent("""
    import json, os, sys, time
    from pathlib import Path
    import numpy as np
    import pandas as pd
    from repmap_core.capture import store
    from repmap_core.capture.activations import get_activations
    from repmap_core.data.load import adapt_frame
    from repmap_core.capture.models import load_model

    model, work, tag = sys.argv[1], Path(sys.argv[2]), sys.argv[3]
    reads = [0]
    real_read_layer = store.read_layer

    def counting_read_layer(*args, **kwargs):
        reads[0] += 1
        return real_read_layer(*args, **kwargs)

    store.read_layer = counting_read_layer

    def loader(resolved, device, dtype):
        (work / f"loaded_{tag}").write_text(str(os.getpid()))
        time.sleep(0.5)  # hold the lock a while, so the other process surely waits on it
        return load_model(resolved, device=device, dtype=dtype)

    frame = pd.DataFrame(json.loads(sys.argv[4]))
    ds = adapt_frame(frame, name="two-processes")
    (work / f"ready_{tag}").touch()
    while not (work / "go").exists():
        time.sleep(0.005)
    aset = get_activations(model, ds, "all", "last", device="cpu", loader=loader)
    for layer in aset.layer_list:
        np.save(work / f"{tag}_layer_{layer}.npy", np.asarray(aset[layer]))
    np.save(work / f"{tag}_labels.npy", np.asarray(aset.labels))
    (work / f"{tag}.json").write_text(json.dumps({"reads": reads[0], "key": aset.manifest["key"]}))
""")


@pytest.mark.slow
def test_two_processes_computing_one_key_make_one_entry(tiny_gpt2, tmp_path, cache_dir):
    work = tmp_path / "work"
    work.mkdir()
    env = dict(os.environ, PYTHONPATH=str(ROOT), REPMAP_CACHE=str(cache_dir), HF_HUB_OFFLINE="1",
               TRANSFORMERS_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    frame = small_frame().to_dict(orient="list")
    procs = [subprocess.Popen([sys.executable, "-c", COMPUTER, str(tiny_gpt2), str(work), tag, json.dumps(frame)],
                              env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE) for tag in "ab"]
    try:
        deadline = time.monotonic() + 60
        while not all((work / f"ready_{t}").exists() for t in "ab"):
            assert all(p.poll() is None for p in procs), [p.communicate()[1].decode()[-2000:] for p in procs]
            assert time.monotonic() < deadline
            time.sleep(0.01)
        (work / "go").touch()  # both start get_activations at the same moment
        outs = [p.communicate(timeout=60) for p in procs]
    finally:
        for p in procs:
            p.kill()
            p.wait()
    for p, (_, err) in zip(procs, outs):
        assert p.returncode == 0, err.decode()[-3000:]

    loaded = sorted(p.name for p in work.glob("loaded_*"))
    assert len(loaded) == 1, loaded  # exactly one process loaded the model and computed
    computer = loaded[0][-1]
    waiter = "b" if computer == "a" else "a"
    stats = {t: json.loads((work / f"{t}.json").read_text()) for t in "ab"}
    assert stats["a"]["key"] == stats["b"]["key"]
    # the waiter missed every layer outside the lock, waited, and then read them all under it (3 + 3)
    assert stats[waiter]["reads"] == 6

    entries = [d for d in (cache_dir / "activations").iterdir() if d.is_dir()]
    assert [d.name for d in entries] == [stats["a"]["key"]]
    assert sorted(p.name for p in entries[0].iterdir()) == [f"layer_{i}.safetensors" for i in range(3)]
    for layer in range(3):
        a = np.load(work / f"a_layer_{layer}.npy", allow_pickle=False)
        b = np.load(work / f"b_layer_{layer}.npy", allow_pickle=False)
        assert a.shape == (6, 32)
        np.testing.assert_array_equal(a, b)
        store._verified.clear()
        got, _ = store.read_file(store.layer_path(stats["a"]["key"], layer))
        np.testing.assert_array_equal(got["activations"], a)
    np.testing.assert_array_equal(np.load(work / "a_labels.npy"), np.load(work / "b_labels.npy"))


# --------------------------------------------------------------------------- lock re-entrancy

NESTED = textwrap.dedent("""
    import sys
    import numpy as np
    from repmap_core.capture import store
    key = "d" * 32
    path = store.layer_path(key, 0)
    store.write_file(path, {"activations": np.zeros((2, 2), np.float32)}, {"layer": 0, "model": "m"})
    with store.entry_lock(key):  # as get_activations does when it re-reads after waiting for the lock
        result = store.read_layer(key, 0, {"model": "other"})
    print("returned", result is None, path.exists(), flush=True)
""")


def test_read_layer_under_the_entry_lock_does_not_deadlock(tmp_path):
    env = dict(os.environ, PYTHONPATH=str(ROOT), REPMAP_CACHE=str(tmp_path / "nested-cache"))
    try:
        out = subprocess.run([sys.executable, "-c", NESTED], env=env, cwd=ROOT, capture_output=True, timeout=5)
    except subprocess.TimeoutExpired:
        pytest.fail("read_layer under entry_lock hung (it waits on its own lock)")
    assert out.returncode == 0, out.stderr.decode()
    assert out.stdout.decode().split() == ["returned", "True", "False"]


# --------------------------------------------------------------------------- keys, listing, deleting


def test_entry_key_is_deterministic_and_order_free():
    a = {"model": "gpt2", "revision": "abc", "position": "last", "max_length": 512, "dtype": "float32"}
    b = dict(reversed(list(a.items())))
    assert list(a) != list(b)
    assert store.entry_key(a) == store.entry_key(b) == store.entry_key(json.loads(json.dumps(b)))
    key = store.entry_key(a)
    assert len(key) == 32 and all(c in "0123456789abcdef" for c in key)
    for change in ({"position": "mean"}, {"max_length": 513}, {"dtype": "bfloat16"}, {"revision": "abd"}):
        assert store.entry_key(dict(a, **change)) != key
    assert store.entry_key({k: v for k, v in a.items() if k != "dtype"}) != key
    assert store.entry_key({"max_length": 512}) != store.entry_key({"max_length": "512"})


@pytest.mark.parametrize("bad", ["../../etc/passwd", "", "A" * 32, "a" * 31, "a" * 33, "g" * 32, "../" + "a" * 29,
                                 "a" * 31 + "/"])
def test_entry_dir_rejects_non_keys(bad, cache_dir):
    with pytest.raises(ValueError, match="not a cache key"):
        store.entry_dir(bad)
    with pytest.raises(ValueError):
        store.layer_path(bad, 0)
    assert store.entry_dir("0123456789abcdef" * 2) == cache_dir / "activations" / ("0123456789abcdef" * 2)


def test_delete_entry_with_a_path_key_touches_nothing_outside_the_cache(tmp_path, cache_dir):
    before = {p for p in tmp_path.rglob("*")}
    with pytest.raises(ValueError):
        store.delete_entry("../../escaped")
    created = {p for p in tmp_path.rglob("*")} - before
    outside = [p for p in created if p != cache_dir and cache_dir not in p.parents]
    assert not outside, outside


def write_entry(identity: dict, layers, rows: int = 6, d: int = 8, created: str = "2024-01-01T00:00:00") -> str:
    key = store.entry_key(identity)
    for layer in layers:
        m = dict(identity, key=key, layer=layer, n_rows=rows, d_model=d, dataset_spec="builtin:sentiment",
                 created=created)
        store.write_file(store.layer_path(key, layer), tensors(rows, d), m)
    return key


def test_list_delete_and_size(cache_dir):
    assert store.list_entries() == []
    assert store.cache_size_bytes() == 0
    old = write_entry({"model": "old", "position": "last"}, [0, 2], created="2024-01-01T00:00:00")
    new = write_entry({"model": "new", "position": "mean"}, [1], rows=4, d=16, created="2025-06-01T00:00:00")
    entries = store.list_entries()
    assert [e.key for e in entries] == [new, old]  # newest first
    e_new, e_old = entries
    assert (e_old.model, e_old.position, e_old.layers, e_old.n_rows, e_old.d_model) == ("old", "last", (0, 2), 6, 8)
    assert (e_new.model, e_new.position, e_new.layers, e_new.n_rows, e_new.d_model) == ("new", "mean", (1,), 4, 16)
    assert e_old.dataset == "builtin:sentiment"
    assert e_old.created == "2024-01-01T00:00:00"
    assert e_old.bytes == sum(p.stat().st_size for p in store.entry_dir(old).glob("layer_*.safetensors"))
    all_files = [p for p in cache_dir.rglob("*") if p.is_file()]
    assert store.cache_size_bytes() == sum(p.stat().st_size for p in all_files) > e_old.bytes + e_new.bytes - 1

    # a corrupt file's header does not break the listing; an entry with no readable file is skipped
    junk = store.entry_dir(store.entry_key({"junk": 1}))
    junk.mkdir(parents=True)
    (junk / "layer_0.safetensors").write_bytes(b"\xff" * 16)
    assert [e.key for e in store.list_entries()] == [new, old]

    total = store.cache_size_bytes()
    store.delete_entry(old)
    assert not store.entry_dir(old).exists()
    assert [e.key for e in store.list_entries()] == [new]
    assert store.cache_size_bytes() == total - e_old.bytes  # lock files are empty
    store.delete_entry(old)  # deleting again is harmless
    assert store.cache_size_bytes() == total - e_old.bytes
    store.delete_entry(new)
    assert store.list_entries() == []
    assert store.cache_size_bytes() == 16  # only the junk file is left
    assert {p.name for p in (cache_dir / "activations").iterdir() if p.is_dir()} == {junk.name}


def test_clean_temp_files_removes_only_temps():
    key = write_entry({"model": "t"}, [0])
    folder = store.entry_dir(key)
    (folder / ".tmp-abc.safetensors").write_bytes(b"partial")
    (folder / ".tmp-def.safetensors").write_bytes(b"")
    assert store.clean_temp_files(key) == 2
    assert sorted(p.name for p in folder.iterdir()) == ["layer_0.safetensors"]
    assert store.clean_temp_files(key) == 0
    assert store.clean_temp_files(store.entry_key({"absent": 1})) == 0


def test_entries_follow_the_cache_root_of_the_environment(cache_dir, monkeypatch, tmp_path):
    assert store.entry_dir("a" * 32) == cache_dir / "activations" / ("a" * 32)
    monkeypatch.setenv("REPMAP_CACHE", str(tmp_path / "elsewhere"))
    assert store.layer_path("a" * 32, 3) == tmp_path / "elsewhere" / "activations" / ("a" * 32) / "layer_3.safetensors"



@pytest.mark.parametrize("manifest", ['[1, 2]', '"text"', '{"layer": "one"}'])
def test_a_cache_file_whose_manifest_is_of_another_type_is_not_listed(manifest, cache_dir):
    """Issue 21, item 12: an entry holding valid JSON of the wrong type is skipped, not a crash of the listing."""
    key = "ab" * 16
    good = store.layer_path(key, 0)
    store.write_file(good, {"activations": np.zeros((2, 3), np.float32)}, {"layer": 0, "model": "m"})
    bad = store.layer_path(key, 1)
    store.write_file(bad, {"activations": np.zeros((2, 3), np.float32)}, {"layer": 1})
    raw = bad.read_bytes()
    n = int.from_bytes(raw[:8], "little")
    header = json.loads(raw[8:8 + n])
    header["__metadata__"]["manifest"] = manifest
    text = json.dumps(header).encode()
    bad.write_bytes(len(text).to_bytes(8, "little") + text + raw[8 + n:])
    [entry] = store.list_entries()
    assert entry.layers == (0,)
