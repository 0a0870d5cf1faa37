""".imnn files that cannot lie: the manifest's checksum, the manifest checked
against the arrays, bounded members, leftover temporaries removed, and
property-based edits, truncations and bit flips that always end in a clear
DamagedFileError (or load the same fit)."""
import hashlib
import json
import os
import subprocess
import sys
import time
import tracemalloc
import zipfile
import zlib

import jax
import numpy as np
import optax
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

import imnn
from imnn import _archive, persistence
from imnn.persistence import DamagedFileError

from conftest import INPUT_SHAPE, exact_data, mlp, θ_FID

pytestmark = pytest.mark.xdist_group("persistence_files")  # one worker: one module fixture

D = exact_data(jax.random.PRNGKey(9), 4, 1)[0]


@pytest.fixture(scope="module")
def good(tmp_path_factory):
    """A small fit on the NumPy reference (validation history included), its
    file, and its estimates of D."""
    fid, der = exact_data(jax.random.PRNGKey(1), 20, 20)
    val = exact_data(jax.random.PRNGKey(2), 20, 20)
    fitter = imnn.GradientIMNN(20, 20, 2, 2, INPUT_SHAPE, θ_FID, mlp(16, depth=1),
                               optax.adam(1e-2), jax.random.PRNGKey(0), fid, der, *val,
                               backend="numpy").fit(10.0, 0.1, min_iterations=0,
                                                    max_iterations=3)
    path = imnn.save(fitter, tmp_path_factory.mktemp("good") / "good.imnn",
                     {"config": {"simulator": "no_such_module_anywhere:simulate"}})
    return path, fitter.get_estimate(D)


def members(path) -> dict:
    with zipfile.ZipFile(path) as archive:
        return {name: archive.read(name) for name in archive.namelist()}


def rewrite(source, target, edit=None, replace=None, checksum=True):
    """Copy an .imnn file, editing its manifest (``edit(manifest)``) and replacing
    members (``replace``: name -> bytes, None to drop); with ``checksum`` the
    manifest's checksum is recomputed, so only the loader's own checks are left."""
    files = members(source)
    manifest = json.loads(files["manifest.json"])
    if edit is not None:
        edit(manifest)
    files.update(replace or {})
    text = json.dumps(manifest, ensure_ascii=False).encode()
    files["manifest.json"] = text
    if checksum:
        files["manifest.sha256"] = hashlib.sha256(text).hexdigest().encode()
    with zipfile.ZipFile(target, "w") as archive:
        for name, data in files.items():
            if data is not None:
                archive.writestr(name, data)
    return target


def test_an_edited_manifest_fails_its_checksum(good, tmp_path):
    path, _ = good

    def forty_more(m):
        m["fit_iteration"] += 40

    edited = rewrite(path, tmp_path / "edited.imnn", forty_more, checksum=False)
    with pytest.raises(DamagedFileError, match=r"manifest.json does not match its checksum"):
        persistence.read(edited)
    dropped = rewrite(path, tmp_path / "dropped.imnn", replace={"manifest.sha256": None},
                      checksum=False)
    with pytest.raises(DamagedFileError, match=r"member 'manifest.sha256' is missing"):
        persistence.read(dropped)


def _set(key, value):
    def edit(m):
        m[key] = value
    return edit


def _dense_17(m):
    m["model"][0]["features"] = 17


def _drop_array(name):
    def edit(m):
        del m["arrays"][name]
    return edit


def _rename_weights(m):
    m["arrays"]["weights/0"] = m["arrays"].pop("w/0")


def _forty_more(m):
    m["fit_iteration"] += 40


# Consistent lies: the checksum is recomputed, so only the cross-checks can catch them.
LIES = [
    (_forty_more, r"manifest key 'fit_iteration' \(43\) exceeds the 3 iterations"),
    (_dense_17, r"array 'w/0' \(weight \[0\]\[0\] of layer 0, .*'features': 17.*\) has shape "
                r"\(10, 16\), manifest keys 'model' and 'input_shape' give \(10, 17\)"),
    (_set("n_params", 3), r"array 'θ_fid' has shape \(2,\), the manifest gives \(3,\) "
                          r"\(manifest key 'n_params'\)"),
    (_set("n_summaries", 3), r"array 'statistics/C' has shape \(2, 2\), the manifest gives "
                             r"\(3, 3\) \(manifest key 'n_summaries'\)"),
    (_set("input_shape", [12]), r"manifest keys 'model' and 'input_shape' give \(12, 16\)"),
    (_set("input_shape", [2, 5]), r"layer 0 .* does not take the output \(2, 5\)"),
    (_drop_array("θ_fid"), r"array 'θ_fid' is missing"),
    (_rename_weights, r"array 'w/0' is missing"),
    (_set("n_summaries", None), r"manifest key 'n_summaries' must be a positive integer"),
    (lambda m: m.pop("patience_counter"), r"manifest key 'patience_counter' is missing"),
    (lambda m: m["arrays"]["θ_fid"].update(shape=[300]),
     r"member 'arrays/0.npy' declares 144 bytes, but array 'θ_fid' of shape \(300,\) and "
     r"dtype <f8 takes 2400 bytes"),
    (lambda m: m["arrays"]["θ_fid"].update(shape=[3]),
     r"array 'θ_fid' \(arrays/0.npy\) holds shape \(2,\) and dtype <f8, its manifest entry "
     r"says \(3,\)"),
    (lambda m: m["arrays"]["θ_fid"].update(dtype="<i8"),
     r"array 'θ_fid' \(arrays/0.npy\) holds shape \(2,\) and dtype <f8, its manifest entry "
     r"says \(2,\) and <i8"),
    (lambda m: m["arrays"]["θ_fid"].update(dtype="|O"), r"arrays\['θ_fid'\].dtype must be a "
                                                         r"numeric NumPy dtype"),
    (lambda m: m["arrays"]["θ_fid"].update(member="arrays/1.npy"),
     r"arrays\['w/0'\].member 'arrays/1.npy' is already the member of array 'θ_fid'"),
    (lambda m: m["arrays"]["θ_fid"].update(member="../θ.npy"),
     r"arrays\['θ_fid'\].member must name an arrays/ member, got '../θ.npy'"),
    (_set("weights", {"w": "best_w", "best_w": "w", "final_w": "final_w"}),
     r"manifest key 'weights' must be a table"),
    (_set("model_kind", "equinox"), r"manifest key 'model' must hold the layer tables of an "
                                    r"imnn.nn model and only of one"),
    (_set("model", [{"type": "Dense", "features": 16}, {"type": "Pickle"}]),
     r"manifest key 'model'\[1\].type must be one of"),
    (_set("format", "zip"), r"is not an .imnn file"),
    (_set("version", 3), r"has format version 3, this imnn reads versions 1, 2"),
]


@pytest.mark.parametrize("edit, message", LIES, ids=[m[:40] for _, m in LIES])
def test_a_manifest_that_disagrees_with_its_arrays_is_refused(good, tmp_path, edit, message):
    path, _ = good
    lie = rewrite(path, tmp_path / "lie.imnn", edit)
    with pytest.raises(DamagedFileError, match=message):
        imnn.load(lie, backend="numpy")


def test_a_member_larger_than_its_array_is_refused(good, tmp_path):
    path, _ = good
    padded = members(path)["arrays/0.npy"] + b"\0" * 8192

    def new_checksum(m):
        m["arrays"]["θ_fid"]["sha256"] = hashlib.sha256(padded).hexdigest()

    bigger = rewrite(path, tmp_path / "bigger.imnn", new_checksum, {"arrays/0.npy": padded})
    with pytest.raises(DamagedFileError, match=r"member 'arrays/0.npy' declares 8336 bytes, "
                                               r"but array 'θ_fid' of shape \(2,\)"):
        persistence.read(bigger)


def test_an_inflating_manifest_is_refused_at_once(good, tmp_path):
    # A 40 MB manifest deflated to ~40 kB: refused from its declared size, unread.
    path, _ = good
    bomb = tmp_path / "bomb.imnn"
    with zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as archive:
        archive.writestr("manifest.json", b'{"format": "imnn", "pad": "' + b" " * 40_000_000)
    assert bomb.stat().st_size < 200_000
    tracemalloc.start()
    start = time.process_time()
    with pytest.raises(DamagedFileError, match=r"member 'manifest.json' declares 40000027 "
                                               r"bytes, more than the 16777216"):
        persistence.read(bomb)
    seconds = time.process_time() - start
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert seconds < 0.5 and peak < 2_000_000


def test_reading_imports_nothing_the_file_names(good):
    path, _ = good
    saved = persistence.read(path)
    assert saved.metadata["config"]["simulator"] == "no_such_module_anywhere:simulate"
    assert "no_such_module_anywhere" not in sys.modules


def _dead_pid():
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_leftover_temporaries_are_removed_on_the_next_write(good, tmp_path):
    path, _ = good
    host = _archive._HOST
    dead, alive = _dead_pid(), os.getppid()
    names = {
        "dead": f".checkpoint.imnn.{host}-{dead}-abcdefgh.tmp",
        "dead, other file": f".config.toml.{host}-{dead}-ijklmnop.tmp",
        "alive": f".checkpoint.imnn.{host}-{alive}-qrstuvwx.tmp",
        "mine, finished": f".checkpoint.imnn.{host}-{os.getpid()}-abc_1234.tmp",
        "other host, recent": f".checkpoint.imnn.00000000-{dead}-yz012345.tmp",
        "other host, old": f".checkpoint.imnn.00000000-{dead}-678_9abc.tmp",
        "imnn 1.0, old": ".checkpoint.imnn.k2j4h5g6.tmp",
        "imnn 1.0, recent": ".checkpoint.imnn.a1b2c3d4.tmp",
        "imnn 1.0, other name, old": ".other.imnn.q1w2e3r4.tmp",
        "not ours": ".checkpoint.imnn.notours.tmp",
    }
    for label, name in names.items():
        (tmp_path / name).write_bytes(b"half")
        if "old" in label:
            old = time.time() - _archive.STALE_SECONDS - 60
            os.utime(tmp_path / name, (old, old))
    removed = {"dead", "dead, other file", "mine, finished", "other host, old", "imnn 1.0, old"}
    assert [p.name for p in persistence.leftover_temporaries(tmp_path, "checkpoint.imnn")] == \
        sorted(names[label] for label in removed)
    imnn.save(imnn.load(path, backend="numpy"), tmp_path / "checkpoint.imnn")
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [names[label] for label in names if label not in removed] + ["checkpoint.imnn"])


def test_a_write_in_progress_is_not_a_leftover(tmp_path):
    seen = []

    def write(file):
        file.write(b"some")
        seen.extend(persistence.leftover_temporaries(tmp_path, "file.bin"))
        seen.append(len(list(tmp_path.glob(".file.bin.*.tmp"))))

    persistence.write_atomically(tmp_path / "file.bin", write)
    assert seen == [1] and (tmp_path / "file.bin").read_bytes() == b"some"


# --- property-based: random edits, truncations and bit flips --------------------------------

def _json_paths(value, prefix=()):
    yield prefix
    if isinstance(value, dict):
        for key, item in value.items():
            yield from _json_paths(item, prefix + (key,))
    elif isinstance(value, list):
        for i, item in enumerate(value):
            yield from _json_paths(item, prefix + (i,))


JSON = st.recursive(st.none() | st.booleans() | st.integers(-10**20, 10**20)
                    | st.floats(allow_nan=False) | st.text(max_size=8),
                    lambda inner: st.lists(inner, max_size=3)
                    | st.dictionaries(st.text(max_size=5), inner, max_size=3), max_leaves=6)


@st.composite
def manifest_edits(draw, manifest):
    paths = [p for p in _json_paths(manifest) if p]
    where = draw(st.sampled_from(paths))
    old = manifest
    for key in where[:-1]:
        old = old[key]
    old = old[where[-1]]
    kinds = ["delete", "replace"]
    if isinstance(old, int) and not isinstance(old, bool):
        kinds += ["shift"] * 3
    if isinstance(old, str):
        kinds += ["string"] * 2
    if isinstance(old, list):
        kinds += ["append", "drop"]
    kind = draw(st.sampled_from(kinds))
    if kind == "shift":
        value = old + draw(st.sampled_from([-1, 1, 2, -2, 40, 10**9]))
    elif kind == "string":
        value = draw(st.sampled_from([old[:-1], old + "0", old.upper(), "", "<f4", "arrays/1.npy"]))
    elif kind == "append":
        value = old + [draw(JSON)]
    elif kind == "drop":
        value = old[:-1]
    else:
        value = draw(JSON)
    return where, kind, value


def _apply(manifest, where, kind, value):
    parent = manifest
    for key in where[:-1]:
        parent = parent[key]
    if kind == "delete":
        del parent[where[-1]]
    else:
        parent[where[-1]] = value


def _load_or_refuse(path, good_path, named):
    """Load and estimate: either a clear refusal naming one of ``named``, or
    finite estimates."""
    try:
        fitted = imnn.load(path, backend="numpy")
        estimate = fitted.get_estimate(D)
    except DamagedFileError as error:
        message = str(error)
        assert str(path) in message
        assert any(str(name) in message for name in named), message
        return None
    except (ValueError, TypeError) as error:
        assert any(str(name) in str(error) for name in named), str(error)
        return None
    assert np.all(np.isfinite(estimate))
    return estimate


PROPERTIES = settings(max_examples=50, deadline=None,
                      suppress_health_check=[HealthCheck.function_scoped_fixture,
                                             HealthCheck.too_slow])


@PROPERTIES
@given(data=st.data())
def test_random_manifest_edits_are_refused_by_name_or_harmless(good, tmp_path, data):
    path, expected = good
    manifest = json.loads(members(path)["manifest.json"])
    where, kind, value = data.draw(manifest_edits(manifest))
    edited = rewrite(path, tmp_path / "edited.imnn", lambda m: _apply(m, where, kind, value))
    # The message names the key edited, the array whose entry was edited, or a key or
    # array that the edit contradicts.
    named = [where[0], "manifest", "array", "member"] + (
        [where[1]] if where[0] == "arrays" and len(where) > 1 else [])
    estimate = _load_or_refuse(edited, path, named)
    if estimate is not None and where[0] not in ("weights", "backend"):
        np.testing.assert_allclose(estimate, expected, rtol=1e-12)
    unchecked = rewrite(path, tmp_path / "unchecked.imnn",
                        lambda m: _apply(m, where, kind, value), checksum=False)
    if json.loads(members(unchecked)["manifest.json"]) != manifest:
        with pytest.raises(DamagedFileError, match="manifest.json does not match its checksum"):
            persistence.read(unchecked)


@PROPERTIES
@given(cut=st.floats(0.0, 1.0, exclude_max=True))
def test_truncated_files_are_refused(good, tmp_path, cut):
    path, _ = good
    data = path.read_bytes()
    truncated = tmp_path / "truncated.imnn"
    truncated.write_bytes(data[:int(cut * len(data))])
    with pytest.raises(DamagedFileError, match="truncated.imnn is"):
        persistence.read(truncated)


@PROPERTIES
@given(position=st.floats(0.0, 1.0, exclude_max=True), bit=st.integers(0, 7))
def test_bit_flips_are_refused_or_change_nothing(good, tmp_path, position, bit):
    path, expected = good
    data = bytearray(path.read_bytes())
    data[int(position * len(data))] ^= 1 << bit
    flipped = tmp_path / "flipped.imnn"
    flipped.write_bytes(bytes(data))
    estimate = _load_or_refuse(flipped, path, ["flipped.imnn"])
    if estimate is not None:  # a flip in what zip readers ignore (times, attributes)
        np.testing.assert_array_equal(estimate, expected)


def test_compressed_members_with_a_bad_stream_are_damage(good, tmp_path):
    path, _ = good
    files = members(path)
    target = tmp_path / "deflated.imnn"
    with zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in files.items():
            archive.writestr(name, data)
    np.testing.assert_array_equal(imnn.load(target, backend="numpy").get_estimate(D), good[1])
    raw = bytearray(target.read_bytes())
    start = raw.index(zlib.compress(files["manifest.json"])[2:12])  # inside the deflate stream
    raw[start + 3] ^= 0xFF
    target.write_bytes(bytes(raw))
    with pytest.raises(DamagedFileError, match="deflated.imnn is damaged"):
        persistence.read(target)


def test_metadata_that_json_cannot_hold_is_refused_before_writing(good, tmp_path):
    fitted = imnn.load(good[0], backend="numpy")
    for metadata, message in [([1, 2], "metadata must be a dict, got list"),
                              ({"array": np.zeros(2)}, "metadata must hold only what JSON can")]:
        with pytest.raises(TypeError, match=message):
            imnn.save(fitted, tmp_path / "meta.imnn", metadata)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("value", [[], {}, 3, None])
def test_a_layer_type_that_is_not_a_name_is_refused_by_name(good, tmp_path, value):
    """The case hypothesis found: ``model[1].type`` replaced by a list was a bare
    ``TypeError: unhashable type``; any non-string type names the key."""
    path, _ = good
    edited = rewrite(path, tmp_path / "edited.imnn",
                     lambda m: _apply(m, ("model", 1, "type"), "replace", value))
    assert _load_or_refuse(edited, path, ["[1].type"]) is None
