"""A crafted bundle gets one sentence and changes nothing (issue 21, items 8 and 10): members capped by their unpacked
size before and while reading, JSON depth and counts checked before parsing, and every value's type and shape
checked before any of it reaches a session, the CLI's report or the pages."""
from __future__ import annotations

import json
import re

import numpy as np
import pytest

from repmap_core.errors import RepmapError
from repmap_core.share import bundle_checks
from repmap_core.share.bundle import bundle_bytes, load_bundle
from tests.share.test_bundle import _members, _one_sentence, _share_page, _with_doc, _zip, synthetic_states


@pytest.fixture(scope="module")
def states() -> dict:
    return synthetic_states()


@pytest.fixture(scope="module")
def good(states) -> bytes:
    keys = ("explorer.result", "shift.result", "within.result", "across.result", "across.selected", "across.layer_s")
    return bundle_bytes({k: states[k] for k in keys}, {"explorer.method": "pca", "explorer.seed": 3})


def _json(data: bytes, text: bytes) -> bytes:
    return _zip(dict(_members(data), **{"bundle.json": text}))


def _arrays(data: bytes, change) -> bytes:
    """The bundle with its arrays edited by `change(arrays, declared)` (both kept consistent by the caller)."""
    from safetensors.numpy import load, save

    members = _members(data)
    doc = json.loads(members["bundle.json"])
    arrays = dict(load(members["arrays.safetensors"]))
    change(arrays, doc)
    doc["arrays"] = {k: {"dtype": str(a.dtype), "shape": list(a.shape)} for k, a in arrays.items()}
    return _zip({"bundle.json": json.dumps(doc).encode(), "arrays.safetensors": save(arrays)})


def _array_of(doc: dict, *path) -> str:
    node = doc["states"]
    for step in path:
        node = node[step] if not isinstance(step, tuple) else dict((k["__dict__"] if isinstance(k, dict) else k)
                                                                   for k in node["__dict__"])[step[0]]
    return node["__array__"]


def _layer0(doc):
    return _array_of(doc, "explorer.result", "fields", "aset", "fields", "layers", (0,))


def _labels(doc):
    return _array_of(doc, "explorer.result", "fields", "aset", "fields", "labels")


def _fields(doc):
    return doc["states"]["explorer.result"]["fields"]


def _nest(depth: int, inner: str = "0") -> bytes:
    return ("[" * depth + inner + "]" * depth).encode()


DEEP = {
    "5,000 nested brackets": lambda good: _json(good, b'{"format": "repmap.bundle/1", "states": ' + _nest(5000) + b"}"),
    "900 nested lists in a setting": lambda good: _with_doc(good, lambda d: d["settings"]["__dict__"].append(
        ["explorer.shown", json.loads(_nest(900))])),
    "nested objects": lambda good: _json(good, b'{"format": "repmap.bundle/1", "x": ' + b'{"a":' * 200 + b"1" + b"}" * 201),
    "brackets hidden in strings do not count": None,  # a positive control, below
}
MANY = {
    "a list of 2.5 million numbers": lambda good: _with_doc(good, lambda d: d.update(junk=[0] * 2_500_000)),
    "a list of 2.1 million strings": lambda good: _with_doc(good, lambda d: d.update(junk=["x"] * 2_100_000)),
}


@pytest.mark.parametrize("case", [k for k, v in DEEP.items() if v])
def test_json_nested_too_deep_is_refused_before_parsing(good, case, monkeypatch):
    data, parsed = DEEP[case](good), []
    monkeypatch.setattr(json, "loads", lambda *a, **k: parsed.append(1))
    with pytest.raises(RepmapError, match="nests values more than 64 deep") as e:
        load_bundle(data)
    _one_sentence(str(e.value))
    assert parsed == []


def test_brackets_inside_strings_are_text_not_nesting():
    bundle_checks.check_json(json.dumps({"text": "[" * 5000 + "\\\"{" * 300}).encode())  # no error


@pytest.mark.parametrize("case", list(MANY))
def test_json_with_too_many_values_is_refused_before_parsing(good, case, monkeypatch):
    data = MANY[case](good)
    assert len(data) < 1_000_000  # a small zip
    parsed = []
    monkeypatch.setattr(json, "loads", lambda *a, **k: parsed.append(1))
    with pytest.raises(RepmapError, match="holds more than 2,000,000 values") as e:
        load_bundle(data)
    _one_sentence(str(e.value))
    assert parsed == []


def test_each_member_is_capped_by_its_unpacked_size_before_it_is_read(good, monkeypatch):
    import zipfile

    monkeypatch.setattr(bundle_checks, "MAX_JSON_BYTES", 2_000_000)
    big = _json(good, b'{"format": "repmap.bundle/1"}' + b" " * 3_000_000)
    opened = []
    real_open = zipfile.ZipFile.open
    monkeypatch.setattr(zipfile.ZipFile, "open", lambda self, name, *a, **k: opened.append(name) or real_open(self, name, *a, **k))
    with pytest.raises(RepmapError, match="bundle.json would unpack to 3.0 MB, over the limit of 2.0 MB") as e:
        load_bundle(big)
    _one_sentence(str(e.value))
    assert not any(getattr(o, "filename", o) == "bundle.json" for o in opened)
    monkeypatch.setattr(bundle_checks, "MAX_JSON_BYTES", 10**9)
    size = len(_members(good)["arrays.safetensors"])
    monkeypatch.setattr(zipfile.ZipFile, "open", real_open)
    with pytest.raises(RepmapError, match="over the limit"):  # the arrays, or the whole, over the bundle's limit
        load_bundle(good, max_bytes=size - 1)


def test_a_member_that_inflates_past_what_it_declares_is_damaged(good):
    raw = bytearray(_zip(_members(good)))
    entry = raw.find(b"PK\x01\x02")  # bundle.json's central directory entry: it is the first member
    declared = int.from_bytes(raw[entry + 24:entry + 28], "little")
    raw[entry + 24:entry + 28] = (declared // 2).to_bytes(4, "little")  # it now claims half its real size
    with pytest.raises(RepmapError, match="not a zip file|is damaged") as e:
        load_bundle(bytes(raw))
    _one_sentence(str(e.value))


BAD_VALUES = {
    # meta
    "max_rows a word": (lambda d: d.update(max_rows="lots"), "max_rows is 'lots', not a whole number of at least 2"),
    "max_rows one": (lambda d: d.update(max_rows=1), "max_rows is 1"),
    "seed a script": (lambda d: d.update(seed="<img src=x onerror=alert(1)>"), "seed is '<img src=x"),
    "seed negative": (lambda d: d.update(seed=-1), "seed is -1"),
    "created an object": (lambda d: d.update(created={"a": 1}), "created is not a short text"),
    "repmap a number": (lambda d: d.update(repmap=5), "repmap is not a short text"),
    "views a string": (lambda d: d.update(views="explorer"), "list of views is not a list of names"),
    "format a list": (lambda d: d.update(format=["repmap.bundle/1"]), "format is not one repmap reads"),
    "array description not an object": (lambda d: d["arrays"].update(a0=5), "do not match its description"),
    # fields of the wrong type
    "request a number": (lambda d: _fields(d).update(request=5), "ExplorerResult.request"),
    "rows a string": (lambda d: _fields(d).update(rows="x"), "ExplorerResult.rows"),
    "a text a number": (lambda d: _fields(d)["dataset"]["fields"]["texts"].__setitem__(0, 7), "TextDataset.texts[0]"),
    "a layer a word": (lambda d: _fields(d)["rows"][0]["fields"].update(layer="a"), "LayerSeparation.layer"),
    "an accuracy a list": (lambda d: _fields(d)["rows"][0]["fields"].update(probe_cv_acc=[1]), "LayerSeparation.probe_cv_acc"),
    "an unknown field": (lambda d: _fields(d)["rows"][0]["fields"].update(evil=1), "LayerSeparation.evil"),
    "n_layers a word": (lambda d: _fields(d)["aset"]["fields"]["manifest"]["__dict__"].append(["n_layers", "two"]),
                        "arrays do not match the manifest"),
    "class name a list": (lambda d: _fields(d)["rows"][0].update({"__class__": ["x"]}), "names a class"),
    # states that contradict each other
    "selection outside the rows": (lambda d: d["states"].update({"across.selected": [1, 10_000]}), "across.selected"),
    "selection of words": (lambda d: d["states"].update({"across.selected": ["a"]}), "across.selected"),
    "layer not computed": (lambda d: d["states"].update({"across.layer_s": 99}), "across.layer_s"),
    "a state of the wrong class": (lambda d: d["states"].update({"within.result": d["states"]["explorer.result"]}),
                                   "within.result"),
    "a view's result a list": (lambda d: d["states"].update({"explorer.result": [1, 2]}), "explorer.result"),
    # settings of the wrong type
    "seed setting a word": (lambda d: d["settings"]["__dict__"].append(["explorer.seed", "abc"]),
                            "setting explorer.seed is 'abc', not a int"),
    "layers shown nested": (lambda d: d["settings"]["__dict__"].append(["explorer.shown", {"__tuple__": [[1]]}]),
                            "setting explorer.shown"),
    "a toggle a word": (lambda d: d["settings"]["__dict__"].append(["steer.bias", "yes"]), "setting steer.bias"),
    "a fraction infinite": (lambda d: d["settings"]["__dict__"].append(["within.test_frac", {"__float__": "inf"}]),
                            "setting within.test_frac"),
}
SHAPES = {
    "a layer with fewer rows": (lambda a, d: a.__setitem__(_layer0(d), a[_layer0(d)][:100]), "hold 120 rows of one width"),
    "a layer of another width": (lambda a, d: a.__setitem__(_layer0(d), a[_layer0(d)][:, :8]), "of one width"),
    "a layer of one dimension": (lambda a, d: a.__setitem__(_layer0(d), a[_layer0(d)][:, 0].copy()), "of one width"),
    "labels shortened": (lambda a, d: a.__setitem__(_labels(d), a[_labels(d)][:60]), "labels and pair ids"),
    "every array shortened alike": (lambda a, d: [a.__setitem__(k, v[:100]) for k, v in list(a.items())
                                                  if v.ndim and len(v) == 120], "do not match its 120 texts"),
    "complex activations": (lambda a, d: a.__setitem__(_layer0(d), a[_layer0(d)].astype(np.int32)), "of one width"),
}


@pytest.mark.parametrize("case", list(BAD_VALUES))
def test_ill_typed_or_inconsistent_values_are_one_sentence(good, case):
    change, expected = BAD_VALUES[case]
    with pytest.raises(RepmapError) as e:
        load_bundle(_with_doc(good, change))
    assert expected in str(e.value), str(e.value)
    _one_sentence(str(e.value))


@pytest.mark.parametrize("case", list(SHAPES))
def test_arrays_changed_consistently_with_their_description_are_still_refused(good, case):
    """Item 10: a bundle whose array shape was changed along with its description imported "successfully" and
    then crashed the explorer; the arrays are now checked against the manifest and each other."""
    change, expected = SHAPES[case]
    with pytest.raises(RepmapError) as e:
        load_bundle(_arrays(good, change))
    assert expected in str(e.value), str(e.value)
    _one_sentence(str(e.value))


def test_the_good_bundle_still_loads(good, states):
    back = load_bundle(good)
    assert back.settings == {"explorer.method": "pca", "explorer.seed": 3}
    assert back.states["explorer.result"].aset.n == states["explorer.result"].aset.n


CLI_BAD = {"deep": lambda g: DEEP["5,000 nested brackets"](g), "many": MANY["a list of 2.5 million numbers"],
           "max_rows": lambda g: _with_doc(g, BAD_VALUES["max_rows a word"][0]),
           "seed script": lambda g: _with_doc(g, BAD_VALUES["seed a script"][0]),
           "shape": lambda g: _arrays(g, SHAPES["every array shortened alike"][0]),
           "settings nest": lambda g: _with_doc(g, lambda d: d["settings"]["__dict__"].append(
               ["explorer.shown", json.loads(_nest(900))]))}


@pytest.mark.parametrize("command", ["report", "bundle"])
def test_the_cli_answers_each_crafted_bundle_with_exit_2_and_one_line(good, command, tmp_path, capsys):
    from repmap_core.__main__ import main

    for name, make in CLI_BAD.items():
        path = tmp_path / f"{name}.zip"
        path.write_bytes(make(good))
        out = tmp_path / f"{name}.html"
        args = [command, "--bundle", str(path), "--json"] + (["--out", str(out)] if command == "report" else [])
        code = main(args)
        captured = capsys.readouterr()
        assert code == 2 and captured.out == "", (name, captured)
        assert len(captured.err.splitlines()) == 1 and captured.err.startswith("error: "), (name, captured.err)
        assert not out.exists()


@pytest.mark.slow
def test_the_share_page_refuses_a_crafted_bundle_before_the_session_changes(good, states):
    """In the app: one sentence per crafted file, and the views already in the session stay as they were."""
    page = _share_page({"across.result": states["across.result"], "explorer.method": "umap"})
    for name, make in CLI_BAD.items():
        page.file_uploader(key="share.upload").upload(f"{name}.zip", make(good), "application/zip").run()
        assert not page.exception, (name, [e.value for e in page.exception])
        assert len(page.error) == 1, (name, [e.value for e in page.error])
        assert page.session_state["across.result"] is states["across.result"]
        assert page.session_state["explorer.method"] == "umap"
        assert "explorer.result" not in page.session_state or page.session_state["explorer.result"] is None
        assert "share.imported" not in page.session_state


MARKDOWN = ["**[Sign in](https://evil.example)**", "![p](https://evil.example/p.png)", "<img src=https://evil.example/q.png>",
            "[x]: https://evil.example", "https://evil.example/bare"]


@pytest.mark.slow
def test_the_share_page_shows_every_bundle_string_as_text(states):
    """Item 4: a bundle whose `repmap` / `created` held markdown put a live link and an external image on the
    Share page. Every bundle string now goes through the escaping link values get."""
    good = bundle_bytes({"explorer.result": states["explorer.result"]})
    page = _share_page({})
    for i, payload in enumerate(MARKDOWN):
        crafted = _with_doc(good, lambda d, p=payload: d.update(repmap=p, created=p))
        page.file_uploader(key="share.upload").upload(f"b{i}.zip", crafted, "application/zip").run()
        assert not page.exception and not page.error, [e.value for e in page.error]
        shown = page.success[0].value
        assert "Imported" in shown
        # every markdown-active character escaped (so no link, image, tag or bold), and no bare address left
        assert re.search(r"(?<!\\)[\[\]<>*`]", shown) is None and "https://" not in shown, (payload, shown)
