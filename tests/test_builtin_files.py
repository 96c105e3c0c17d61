"""The ``files`` source and the ``file`` loader, and a whole run over a directory of files."""

from __future__ import annotations

import contextlib
import io
import json
import os
import threading
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from igata_core.builtins.files import FileLoader, FilesSource, path_of
from igata_core.components import RecordError
from igata_core.inputs import scheme_of
from igata_core.plugins import build_registry
from igata_core.predictor import PredictorBase
from igata_core.testing import run_pipeline


def touch(path: Path, data: bytes = b"x") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def paths_of(source: FilesSource) -> list[str]:
    return [envelope.ref for envelope in source.envelopes()]


def source_over(*inputs: object, **options: object) -> FilesSource:
    source = FilesSource({"inputs": [str(i) for i in inputs], **options})
    source.open()
    return source


# -- path_of: plain paths and file:// URIs -------------------------------------------------------


def test_plain_paths_are_paths():
    assert path_of("/data/in/a%20b.png") == Path("/data/in/a%20b.png")
    assert path_of("rel/x.png") == Path("rel/x.png")


@pytest.mark.parametrize(
    ("uri", "expected"),
    [
        ("file:///data/in/a%20b.png", "/data/in/a b.png"),
        ("file://localhost/data/x.png", "/data/x.png"),
        ("FILE://LOCALHOST/data/x.png", "/data/x.png"),
        ("file:///data/%E6%97%A5%E6%9C%AC.png", "/data/日本.png"),
        ("file:///data/100%25.png", "/data/100%.png"),
        ("file:///data/q%3F%23.png", "/data/q?#.png"),
    ],
)
def test_file_uris_are_decoded(uri, expected):
    assert path_of(uri) == Path(expected)


def test_a_file_uri_of_a_non_utf8_name_round_trips(tmp_path):
    name = os.fsdecode(b"caf\xe9.png")  # latin-1 bytes, not UTF-8
    path = touch(tmp_path / name)
    assert path_of(path.as_uri()) == path


@pytest.mark.parametrize("uri", ["file://server/share/x.png", "file://169.254.169.254/x"])
def test_file_uris_naming_another_host_are_refused(uri):
    with pytest.raises(RecordError, match=r"names the host .*only local files"):
        path_of(uri)


# -- the files source --------------------------------------------------------------------------


def test_a_file_a_directory_and_a_glob(tmp_path):
    single = touch(tmp_path / "single.png")
    touch(tmp_path / "tree" / "b.png")
    touch(tmp_path / "tree" / "a.jpg")
    touch(tmp_path / "tree" / "sub" / "c.png")
    touch(tmp_path / "globbed" / "x1.png")
    touch(tmp_path / "globbed" / "x2.png")
    touch(tmp_path / "globbed" / "y.png")
    source = source_over(single, tmp_path / "tree", tmp_path / "globbed" / "x*.png")
    assert paths_of(source) == [
        str(single),
        str(tmp_path / "tree" / "a.jpg"),
        str(tmp_path / "tree" / "b.png"),
        str(tmp_path / "tree" / "sub" / "c.png"),
        str(tmp_path / "globbed" / "x1.png"),
        str(tmp_path / "globbed" / "x2.png"),
    ]


def test_directories_are_read_recursively_in_a_stable_sorted_order(tmp_path):
    names = ["z.png", "b/2.png", "b/10.png", "a/x/deep.png", "a/1.png", "A.png", "c.PNG"]
    for name in names:
        touch(tmp_path / name)
    first = paths_of(source_over(tmp_path))
    relative = [os.path.relpath(p, tmp_path) for p in first]
    # Files of a directory (sorted) before its subdirectories (sorted), at every level.
    assert relative == ["A.png", "c.PNG", "z.png", "a/1.png", "a/x/deep.png", "b/10.png", "b/2.png"]
    assert paths_of(source_over(tmp_path)) == first


def test_recursive_globs(tmp_path):
    for name in ["top.png", "a/one.png", "a/b/two.png", "a/b/skip.txt", ".hidden/no.png"]:
        touch(tmp_path / name)
    found = paths_of(source_over(tmp_path / "**" / "*.png"))
    assert [os.path.relpath(p, tmp_path) for p in found] == ["top.png", "a/one.png", "a/b/two.png"]


def test_a_relative_glob(tmp_path, monkeypatch):
    touch(tmp_path / "d" / "1.png")
    touch(tmp_path / "d" / "2.png")
    monkeypatch.chdir(tmp_path)
    assert paths_of(source_over("d/*.png")) == ["d/1.png", "d/2.png"]


def test_default_extensions_leave_out_other_files(tmp_path):
    for name in ["a.png", "b.txt", "c.csv.gz", "d.json", "e.tsv", "f.jpeg", "g.PNG", "h.py"]:
        touch(tmp_path / name)
    assert [Path(p).name for p in paths_of(source_over(tmp_path))] == [
        "a.png", "c.csv.gz", "d.json", "e.tsv", "f.jpeg", "g.PNG",
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("extensions", "expected"),
    [
        (["png"], ["a.png", "c.PNG"]),
        ([".TXT", ".png"], ["a.png", "b.txt", "c.PNG"]),
        (["*"], ["a.png", "b.txt", "c.PNG", "d"]),
    ],
)
def test_the_extensions_option(tmp_path, extensions, expected):
    for name in ["a.png", "b.txt", "c.PNG", "d"]:
        touch(tmp_path / name)
    found = paths_of(source_over(tmp_path, extensions=extensions))
    assert [Path(p).name for p in found] == expected


def test_the_extensions_option_applies_to_globs(tmp_path):
    touch(tmp_path / "a.png")
    touch(tmp_path / "a.txt")
    assert [Path(p).name for p in paths_of(source_over(tmp_path / "a.*"))] == ["a.png"]


def test_a_file_named_explicitly_is_read_whatever_its_extension(tmp_path):
    named = touch(tmp_path / "model-input.bin")
    assert paths_of(source_over(named)) == [str(named)]


def test_hidden_entries_of_a_directory_are_skipped(tmp_path):
    touch(tmp_path / "seen.png")
    touch(tmp_path / ".out.jsonl.1a2b.partial")
    touch(tmp_path / "._seen.png")  # macOS resource fork, not an image
    touch(tmp_path / ".git" / "x.png")
    found = paths_of(source_over(tmp_path, extensions=["*"]))
    assert found == [str(tmp_path / "seen.png")]


def test_a_directory_given_as_a_file_uri(tmp_path):
    touch(tmp_path / "with space" / "a b.png")
    found = paths_of(source_over((tmp_path / "with space").as_uri()))
    assert found == [str(tmp_path / "with space" / "a b.png")]


def test_envelope_identity_meta_and_uri(tmp_path, monkeypatch):
    path = touch(tmp_path / "in" / "a b.png")
    monkeypatch.chdir(tmp_path)
    (envelope,) = source_over("in/a b.png").envelopes()
    (item,) = envelope.items
    assert envelope.ref == "in/a b.png"
    assert item.identity == path.as_uri() == f"file://{tmp_path}/in/a%20b.png"
    assert item.meta == {"path": "in/a b.png"}
    assert item.uri == "in/a b.png"
    assert item.error is None


def test_identity_does_not_depend_on_how_the_path_was_given(tmp_path, monkeypatch):
    path = touch(tmp_path / "d" / "x.png")
    monkeypatch.chdir(tmp_path / "d")
    given = ["x.png", str(path), "../d/./x.png", path.as_uri(), str(tmp_path / "d")]
    identities = {env.items[0].identity for env in source_over(*given).envelopes()}
    assert identities == {path.as_uri()}


def test_a_relative_name_with_a_colon_is_not_taken_for_a_uri(tmp_path, monkeypatch):
    touch(tmp_path / "img:1.png", b"data")
    monkeypatch.chdir(tmp_path)
    (envelope,) = source_over("img:1.png").envelopes()
    uri = envelope.items[0].uri
    assert scheme_of(uri) == "file"
    assert FileLoader().load(uri).data == b"data"
    assert envelope.items[0].meta == {"path": "img:1.png"}


def test_a_missing_path_is_that_inputs_error(tmp_path):
    present = touch(tmp_path / "present.png")
    missing = tmp_path / "missing.png"
    envelopes = list(source_over(missing, present).envelopes())
    assert [e.ref for e in envelopes] == [str(missing), str(present)]
    with pytest.raises(RecordError, match=r"missing\.png: no such file"):
        FileLoader().load(envelopes[0].items[0].uri)


def test_a_glob_matching_nothing_is_that_inputs_error(tmp_path):
    present = touch(tmp_path / "present.png")
    pattern = str(tmp_path / "nothing-*.png")
    envelopes = list(source_over(pattern, present).envelopes())
    assert len(envelopes) == 2
    assert envelopes[0].items[0].error == f"{pattern}: no files match this pattern"
    assert envelopes[1].items[0].error is None


def test_a_file_uri_naming_another_host_is_that_inputs_error(tmp_path):
    present = touch(tmp_path / "present.png")
    envelopes = list(source_over("file://server/x.png", present).envelopes())
    assert envelopes[0].ref == "file://server/x.png"
    assert "names the host 'server'" in envelopes[0].items[0].error
    assert envelopes[1].ref == str(present)


def test_a_directory_that_cannot_be_listed_is_reported(tmp_path, monkeypatch):
    touch(tmp_path / "a" / "ok.png")
    touch(tmp_path / "b" / "hidden-from-us.png")
    touch(tmp_path / "c" / "ok.png")
    real_scandir = os.scandir

    def scandir(path="."):
        if os.fspath(path) == str(tmp_path / "b"):
            raise PermissionError(13, "Permission denied", os.fspath(path))
        return real_scandir(path)

    monkeypatch.setattr(os, "scandir", scandir)
    envelopes = list(source_over(tmp_path).envelopes())
    assert [e.ref for e in envelopes] == [
        str(tmp_path / "a" / "ok.png"),
        str(tmp_path / "b"),
        str(tmp_path / "c" / "ok.png"),
    ]
    assert envelopes[1].items[0].error == (
        f"{tmp_path / 'b'}: cannot list this directory: Permission denied"
    )


def test_directories_are_walked_lazily(tmp_path):
    # If the whole tree were listed before the first envelope, a file created after it
    # in a later directory would be missed.
    touch(tmp_path / "a" / "1.png")
    (tmp_path / "b").mkdir()
    envelopes = source_over(tmp_path).envelopes()
    assert next(envelopes).ref == str(tmp_path / "a" / "1.png")
    touch(tmp_path / "b" / "2.png")
    assert [e.ref for e in envelopes] == [str(tmp_path / "b" / "2.png")]


def test_globs_are_matched_lazily(tmp_path):
    touch(tmp_path / "a" / "1.png")
    (tmp_path / "b").mkdir()
    envelopes = source_over(tmp_path / "**" / "*.png").envelopes()
    assert next(envelopes).ref == str(tmp_path / "a" / "1.png")
    touch(tmp_path / "b" / "2.png")
    assert [e.ref for e in envelopes] == [str(tmp_path / "b" / "2.png")]


def test_total_counts_what_envelopes_yields(tmp_path):
    for i in range(5):
        touch(tmp_path / "d" / f"{i}.png")
    touch(tmp_path / "d" / "skip.txt")
    source = source_over(tmp_path / "d", tmp_path / "missing.png", tmp_path / "none-*.png")
    assert source.total() == 7 == len(list(source.envelopes()))


def test_stop_ends_iteration(tmp_path):
    for i in range(10):
        touch(tmp_path / f"{i}.png")
    source = source_over(tmp_path)
    envelopes = source.envelopes()
    next(envelopes)
    source.stop()
    assert list(envelopes) == []


# -- the file loader ------------------------------------------------------------------------------


def test_loads_plain_paths_and_file_uris(tmp_path):
    path = touch(tmp_path / "a b%20c.png", b"\x89PNG...")
    loader = FileLoader()
    assert loader.load(str(path)).data == b"\x89PNG..."
    loaded = loader.load(path.as_uri())
    assert loaded.data == b"\x89PNG..."
    assert loaded.meta == {"size": 7}


def test_max_object_bytes(tmp_path):
    path = touch(tmp_path / "x.bin", b"12345")
    assert FileLoader({"max_object_bytes": 5}).load(str(path)).data == b"12345"
    with pytest.raises(RecordError, match=r"x\.bin: larger than max_object_bytes \(4 bytes\)"):
        FileLoader({"max_object_bytes": 4}).load(str(path))


def test_a_large_file_is_refused_without_reading_it_whole(tmp_path, monkeypatch):
    path = touch(tmp_path / "big.bin", b"x" * 100_000)
    asked: list[int] = []
    real_read = os.read

    def spying_read(fd, size):
        asked.append(size)
        return real_read(fd, size)

    monkeypatch.setattr(os, "read", spying_read)
    with pytest.raises(RecordError, match="larger than max_object_bytes"):
        FileLoader({"max_object_bytes": 1000}).load(str(path))
    assert asked and all(0 < size <= 1001 for size in asked)


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs named pipes")
@pytest.mark.parametrize(("limit", "refused"), [(100, False), (4, True)])
def test_a_pipe_is_read_up_to_the_limit(tmp_path, limit, refused):
    fifo = tmp_path / "stream.bin"
    os.mkfifo(fifo)

    def feed() -> None:
        with contextlib.suppress(BrokenPipeError), fifo.open("wb") as handle:
            handle.write(b"0123456789")

    writer = threading.Thread(target=feed)
    writer.start()
    try:
        if refused:
            with pytest.raises(RecordError, match="larger than max_object_bytes"):
                FileLoader({"max_object_bytes": limit}).load(str(fifo))
        else:
            assert FileLoader({"max_object_bytes": limit}).load(str(fifo)).data == b"0123456789"
    finally:
        writer.join(5)


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda d: d / "absent.png", "absent.png: no such file"),
        (lambda d: d, "is a directory, not a file"),
        (lambda d: touch(d / "file.png") / "inner.png", "a parent is not a directory"),
    ],
    ids=["missing", "directory", "parent-is-a-file"],
)
def test_clear_errors(tmp_path, make, message):
    with pytest.raises(RecordError, match=message):
        FileLoader().load(str(make(tmp_path)))


def test_permission_denied_is_a_clear_error(tmp_path, monkeypatch):
    path = touch(tmp_path / "secret.png")

    def refuse(file, *args, **kwargs):
        raise PermissionError(13, "Permission denied", str(file))

    monkeypatch.setattr(os, "open", refuse)
    with pytest.raises(RecordError, match=r"secret\.png: permission denied"):
        FileLoader().load(str(path))


def test_a_file_uri_for_another_host_is_refused_by_the_loader():
    with pytest.raises(RecordError, match="only local files"):
        FileLoader().load("file://fileserver/etc/passwd")


# -- a whole run -----------------------------------------------------------------------------------


class ShapePredictor(PredictorBase):
    def predict(self, input_record, meta):
        return {"shape": list(input_record.shape), "mean": float(input_record.mean())}


def image_bytes(colour: tuple[int, int, int], fmt: str) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (6, 4), colour).save(buffer, fmt)
    return buffer.getvalue()


def test_a_directory_with_good_and_bad_inputs(tmp_path):
    images = tmp_path / "images"
    good = {
        "a.png": image_bytes((10, 20, 30), "PNG"),
        "b.jpg": image_bytes((200, 200, 200), "JPEG"),
        "c.gif": image_bytes((255, 0, 0), "GIF"),
        "sub/d.bmp": image_bytes((0, 0, 0), "BMP"),
        "sub/e.webp": image_bytes((1, 2, 3), "WEBP"),
        "sub/f.tiff": image_bytes((9, 9, 9), "TIFF"),
    }
    for name, data in good.items():
        touch(images / name, data)
    noise = np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(noise).save(buffer, "PNG")
    touch(images / "bad-truncated.png", buffer.getvalue()[: len(buffer.getvalue()) // 2])
    touch(images / "bad-empty.jpg", b"")
    touch(images / "bad-noise.png", np.random.default_rng(0).bytes(300))
    touch(images / "bad-text.json", b"{not json")
    missing = tmp_path / "missing.png"
    no_match = str(tmp_path / "nothing-*.png")
    unknown = touch(tmp_path / "notes.xyz", b"?")
    out = tmp_path / "out" / "results.jsonl"

    result = run_pipeline(
        "files",
        "jsonl",
        ShapePredictor,
        inputs=[str(images), str(missing), no_match, str(unknown)],
        sink_options={"path": str(out)},
        registry=build_registry(entry_points=False),
        concurrency=4,
        batch_size=4,
        flush_interval=0.05,
    )

    assert result.exit_code == 1
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert sorted(os.path.relpath(r["path"], images) for r in records) == sorted(good)
    assert all(r["shape"] == [4, 6, 3] for r in records)
    assert {r["igata_id"] for r in records} == {(images / n).as_uri() for n in good}
    errors = {Path(o.input).name: o for o in result.outcomes}
    assert sorted(errors) == sorted(
        ["bad-truncated.png", "bad-empty.jpg", "bad-noise.png", "bad-text.json",
         "missing.png", "nothing-*.png", "notes.xyz"]
    )  # fmt: skip
    expected = {
        "bad-truncated.png": ("decode", "corrupt or truncated image"),
        "bad-empty.jpg": ("decode", "empty file"),
        "bad-noise.png": ("decode", "not an image"),
        "bad-text.json": ("decode", "invalid JSON"),
        "missing.png": ("load", "no such file"),
        "nothing-*.png": ("parse", "no files match"),
        "notes.xyz": ("decode", "no decoder for this file type"),
    }
    for name, (stage, text) in expected.items():
        outcome = errors[name]
        assert (outcome.stage, name) == (stage, name)
        assert text in outcome.message and name in outcome.message, outcome.message
    assert result.summary["succeeded"] == len(good)
    assert result.summary["failed"] == len(expected)


@pytest.mark.parametrize(
    "name",
    ["a.png", "a b.png", "100%.png", "é.png", "日本.png", "x#y?.png", "semi;colon.png",
     "tilde~.png", os.fsdecode(b"raw-\xff.png")],
)  # fmt: skip
def test_file_uri_is_exactly_path_as_uri(tmp_path, name):
    # The files source's identities must not change with how they are computed.
    from igata_core.builtins.files import file_uri

    absolute = os.path.abspath(os.path.join(tmp_path, "sub dir", name))
    assert file_uri(absolute) == Path(absolute).as_uri()
