"""igata_core.inputs: the loader by URI scheme, then the decoder by extension (or by name)."""

from __future__ import annotations

import gzip
import io
import threading
from typing import Any, ClassVar

import numpy as np
import pytest
from PIL import Image

from igata_core.builtins.decoders import CsvDecoder, ImageDecoder, JsonDecoder, RawDecoder
from igata_core.builtins.files import FileLoader
from igata_core.components import Decoder, Item, Loaded, Loader, RecordError, RunContext
from igata_core.inputs import ComponentPool, Fetched, InputReader, StageError, scheme_of


class MemoryLoader(Loader):
    """``mem://store/name`` -> bytes from a dict, with loader meta."""

    name = "mem"
    schemes = ("mem",)
    objects: ClassVar[dict[str, bytes]] = {}

    def load(self, uri: str) -> Loaded:
        key = uri.removeprefix("mem://store/")
        if key not in self.objects:
            raise RecordError(f"{uri}: no such object")
        return Loaded(self.objects[key], {"size": len(self.objects[key]), "origin": "loader"})


class MetaJsonDecoder(Decoder):
    """Claims a longer suffix than the json decoder's."""

    name = "meta-json"
    extensions = (".meta.json",)

    def decode(self, data: bytes, ref: str) -> Any:
        return ("meta-json", data)


class OSErrorDecoder(Decoder):
    """A third-party decoder that reports bad data as OSError (as Pillow does)."""

    name = "oserror"
    extensions = (".broken",)

    def decode(self, data: bytes, ref: str) -> Any:
        raise OSError("cannot identify this data")


DECODERS = {
    "image": ImageDecoder,
    "csv": CsvDecoder,
    "json": JsonDecoder,
    "raw": RawDecoder,
    "meta-json": MetaJsonDecoder,
    "oserror": OSErrorDecoder,
}


def make_reader(default_decoder: str | None = None, **objects: bytes) -> InputReader:
    MemoryLoader.objects = dict(objects)
    context = RunContext()
    loaders = ComponentPool({"file": FileLoader, "mem": MemoryLoader}, lambda c: c({}, context))
    decoders = ComponentPool(DECODERS, lambda c: c({}, context))
    # The meta-json decoder is listed after json, so order alone would pick json.
    extensions = {ext: name for name, cls in DECODERS.items() for ext in cls.extensions}
    return InputReader(loaders, decoders, extensions, default_decoder=default_decoder)


def png(colour: tuple[int, int, int] = (1, 2, 3)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (3, 2), colour).save(buffer, "PNG")
    return buffer.getvalue()


def stage_error(reader: InputReader, item: Item) -> StageError:
    with pytest.raises(StageError) as raised:
        reader.read(item)
    return raised.value


# -- choosing the loader ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("uri", "scheme"),
    [
        ("/data/x.png", "file"),
        ("rel/x.png", "file"),
        ("file:///data/x.png", "file"),
        ("S3://bucket/key.png", "s3"),
        ("C:\\data\\x.png", "file"),
        ("mem://store/x", "mem"),
    ],
)
def test_scheme_of(uri, scheme):
    assert scheme_of(uri) == scheme


def test_plain_paths_and_file_uris_use_the_file_loader(tmp_path):
    (tmp_path / "a b.json").write_text('{"v": 1}')
    reader = make_reader()
    assert reader.read(Item("i", uri=str(tmp_path / "a b.json")))[0] == {"v": 1}
    assert reader.read(Item("i", uri=(tmp_path / "a b.json").as_uri()))[0] == {"v": 1}


def test_an_unknown_scheme_is_a_load_error_with_a_hint():
    error = stage_error(make_reader(), Item("i", uri="s3://bucket/x.png"))
    assert error.stage == "load"
    assert "no loader for scheme 's3' (pip install igata-s3); loaders: file, mem" in str(error)


def test_a_loader_failure_is_a_load_error():
    error = stage_error(make_reader(), Item("i", uri="mem://store/absent.png"))
    assert error.stage == "load"
    assert isinstance(error.cause, RecordError)
    assert str(error) == "mem://store/absent.png: no such object"


def test_an_item_without_uri_or_data_is_a_load_error():
    error = stage_error(make_reader(), Item("i"))
    assert error.stage == "load"
    assert "names no input" in str(error)


def test_data_given_by_the_source_is_used_as_is():
    data = object()
    assert make_reader().read(Item("i", data=data, meta={"k": 1})) == (data, {"k": 1})


def test_loader_meta_is_merged_under_item_meta():
    reader = make_reader(**{"x.json": b"[1]"})
    value, meta = reader.read(
        Item("i", uri="mem://store/x.json", meta={"origin": "request", "r": 1})
    )
    assert value == [1]
    assert meta == {"size": 3, "origin": "request", "r": 1}


# -- choosing the decoder --------------------------------------------------------------------------


def test_decoders_are_chosen_by_extension_case_insensitively():
    reader = make_reader(**{"a.PNG": png(), "b.csv": b"x,y\n1,2\n", "c.Json": b'{"k": 2}'})
    image, _ = reader.read(Item("a", uri="mem://store/a.PNG"))
    assert isinstance(image, np.ndarray) and image.shape == (2, 3, 3)
    assert reader.read(Item("b", uri="mem://store/b.csv"))[0] == [{"x": "1", "y": "2"}]
    assert reader.read(Item("c", uri="mem://store/c.Json"))[0] == {"k": 2}


def test_the_longest_matching_suffix_wins():
    reader = make_reader(**{"x.meta.json": b"{}", "x.json": b"{}"})
    assert reader.read(Item("a", uri="mem://store/x.meta.json"))[0] == ("meta-json", b"{}")
    assert reader.read(Item("b", uri="mem://store/x.json"))[0] == {}


def test_the_extension_is_taken_from_the_uri_path_not_its_query():
    reader = make_reader()
    reader.loaders = ComponentPool({"mem": _QueryLoader}, lambda c: c({}))
    assert reader.read(Item("a", uri="mem://store/x.json?version=3"))[0] == {"q": True}


class _QueryLoader(Loader):
    name = "mem"
    schemes = ("mem",)

    def load(self, uri: str) -> Loaded:
        return Loaded(b'{"q": true}')


def test_an_unknown_extension_is_a_decode_error_listing_the_decoders():
    error = stage_error(make_reader(**{"x.xyz": b"?"}), Item("i", uri="mem://store/x.xyz"))
    assert error.stage == "decode"
    assert str(error) == (
        "mem://store/x.xyz: no decoder for this file type; choose one with --decoder "
        "(csv, image, json, meta-json, oserror, raw)"
    )


def test_the_items_decoder_overrides_the_extension():
    reader = make_reader(**{"x.png": b"not really a png"})
    assert reader.read(Item("i", uri="mem://store/x.png", decoder="raw"))[0] == b"not really a png"


def test_the_runs_decoder_overrides_the_extension():
    reader = make_reader(default_decoder="json", **{"x.bin": b"[3]"})
    assert reader.read(Item("i", uri="mem://store/x.bin"))[0] == [3]


def test_the_items_decoder_wins_over_the_runs():
    reader = make_reader(default_decoder="json", **{"x.bin": b"[3]"})
    assert reader.read(Item("i", uri="mem://store/x.bin", decoder="raw"))[0] == b"[3]"


def test_an_unknown_decoder_name_is_a_decode_error():
    error = stage_error(make_reader(**{"x": b""}), Item("i", uri="mem://store/x", decoder="nope"))
    assert error.stage == "decode"
    assert "unknown decoder 'nope'" in str(error)


def test_a_decoder_failure_is_a_decode_error_keeping_its_cause():
    error = stage_error(make_reader(**{"x.json": b"{"}), Item("i", uri="mem://store/x.json"))
    assert error.stage == "decode"
    assert isinstance(error.cause, RecordError)
    assert str(error).startswith("mem://store/x.json: invalid JSON")


def test_fetch_loads_now_and_decodes_when_called():
    # The engine loads a run of items, then decodes them: fetch() is the load alone.
    reader = make_reader(**{"x.json": b"{", "y.json": b'{"v": 1}'})
    loads: list[str] = []
    original = MemoryLoader.load

    def noting(self: MemoryLoader, uri: str) -> Loaded:
        loads.append(uri)
        return original(self, uri)

    MemoryLoader.load = noting  # type: ignore[method-assign]
    try:
        bad = reader.fetch(Item("i", uri="mem://store/x.json"))
        good = reader.fetch(Item("j", uri="mem://store/y.json", meta={"k": 1}))
        assert loads == ["mem://store/x.json", "mem://store/y.json"]
        with pytest.raises(StageError) as raised:  # decoding fails only when called
            bad()
        assert raised.value.stage == "decode"
        assert good.size == 8
        assert good() == ({"v": 1}, {"size": 8, "origin": "loader", "k": 1})
        assert good._loaded is None  # the loaded bytes go once decoded
        # Every kind of bytes a loader may give counts towards a run's bound.
        assert Fetched(reader, Item("m", uri="x"), Loaded(memoryview(b"abc"))).size == 3
        with pytest.raises(StageError) as raised:  # a load failure is raised by fetch itself
            reader.fetch(Item("k", uri="mem://store/gone.json"))
        assert raised.value.stage == "load"
    finally:
        MemoryLoader.load = original  # type: ignore[method-assign]


def test_a_decode_process_loads_in_runs_bounded_by_bytes(monkeypatch):
    from igata_core import decode_processes

    monkeypatch.setattr(decode_processes, "FETCH_RUN_BYTES", 10)
    reader = make_reader(**{"a": b"1234", "b": b"1234", "c": b"1234", "d": b"1234"})
    items = [Item(k, uri=f"mem://store/{k}", decoder="raw") for k in "abxcd"]
    runs = list(decode_processes._fetched_runs(reader, items))
    # 4 + 4 + 0 (x: a load failure, nothing held) + 4 = 12 >= 10: the first run ends at c.
    assert [len(run) for run in runs] == [4, 1]
    assert [run[0]()[0] for run in runs] == [b"1234", b"1234"]
    with pytest.raises(StageError) as raised:
        runs[0][2]()
    assert raised.value.stage == "load"
    assert reader.fetch(items[0]).size == 4


# -- gzip ------------------------------------------------------------------------------------------


def test_csv_gz_is_gunzipped_then_decoded_as_csv():
    reader = make_reader(**{"t.csv.gz": gzip.compress("a,b\n1,é\n".encode())})
    assert reader.read(Item("i", uri="mem://store/t.csv.gz"))[0] == [{"a": "1", "b": "é"}]


def test_tsv_gz_keeps_its_tab_delimiter():
    reader = make_reader(**{"t.TSV.GZ": gzip.compress(b"a\tb\n1,5\t2\n")})
    assert reader.read(Item("i", uri="mem://store/t.TSV.GZ"))[0] == [{"a": "1,5", "b": "2"}]


def test_json_gz_and_a_gzipped_image():
    reader = make_reader(
        **{"j.json.gz": gzip.compress(b"[1, 2]"), "p.png.gz": gzip.compress(png())}
    )
    assert reader.read(Item("j", uri="mem://store/j.json.gz"))[0] == [1, 2]
    assert reader.read(Item("p", uri="mem://store/p.png.gz"))[0].shape == (2, 3, 3)


def test_gz_files_on_disk(tmp_path):
    path = tmp_path / "rows.csv.gz"
    path.write_bytes(gzip.compress(b"k\nv\n"))
    assert make_reader().read(Item("i", uri=str(path)))[0] == [{"k": "v"}]


@pytest.mark.parametrize(
    "data",
    [b"plain text, not gzip", gzip.compress(b"a,b\n1,2\n")[:-12]],
    ids=["not-gzip", "truncated"],
)
def test_bad_gzip_is_a_decode_error(data):
    error = stage_error(make_reader(**{"t.csv.gz": data}), Item("i", uri="mem://store/t.csv.gz"))
    assert error.stage == "decode"
    assert str(error).startswith("mem://store/t.csv.gz: not valid gzip data")


def test_forced_decoder_still_gets_gunzipped_data():
    reader = make_reader(**{"x.gz": gzip.compress(b"inner")})
    assert reader.read(Item("i", uri="mem://store/x.gz", decoder="raw"))[0] == b"inner"


def test_gz_without_an_inner_extension_needs_a_decoder():
    error = stage_error(
        make_reader(**{"x.gz": gzip.compress(b"1")}), Item("i", uri="mem://store/x.gz")
    )
    assert error.stage == "decode"
    assert "no decoder for this file type" in str(error)


def test_a_decoders_oserror_is_not_reported_as_bad_gzip():
    error = stage_error(make_reader(**{"x.broken": b"?"}), Item("i", uri="mem://store/x.broken"))
    assert error.stage == "decode"
    assert "gzip" not in str(error)


# -- several inputs per item -----------------------------------------------------------------------


def test_a_dict_uri_gives_a_dict_of_decoded_inputs():
    reader = make_reader(**{"img.png": png((9, 9, 9)), "mask.png": png((0, 0, 0)), "m.json": b"{}"})
    uri = {
        "image": "mem://store/img.png",
        "mask": "mem://store/mask.png",
        "info": "mem://store/m.json",
    }
    value, meta = reader.read(Item("i", uri=uri, meta={"request_id": "r1"}))
    assert sorted(value) == ["image", "info", "mask"]
    assert int(value["image"][0, 0, 0]) == 9 and int(value["mask"][0, 0, 0]) == 0
    assert value["info"] == {}
    assert meta == {"request_id": "r1"}


def test_a_dict_uri_fails_as_a_whole_when_one_field_fails():
    reader = make_reader(**{"img.png": png()})
    error = stage_error(
        reader, Item("i", uri={"a": "mem://store/img.png", "b": "mem://store/gone.png"})
    )
    assert error.stage == "load"
    assert "mem://store/gone.png" in str(error)


def test_a_dict_uri_with_a_forced_decoder():
    reader = make_reader(**{"a.png": b"A", "b.png": b"B"})
    value, _ = reader.read(
        Item("i", uri={"x": "mem://store/a.png", "y": "mem://store/b.png"}, decoder="raw")
    )
    assert value == {"x": b"A", "y": b"B"}


# -- the pools -------------------------------------------------------------------------------------


def test_component_pool_creates_one_instance_per_class_on_first_use():
    created: list[type] = []

    def factory(cls: type) -> Any:
        created.append(cls)
        return cls({})

    pool = ComponentPool({"json": JsonDecoder, "j": JsonDecoder, "raw": RawDecoder}, factory)
    assert created == []
    assert pool.get("unknown") is None
    barrier = threading.Barrier(8)
    got: list[Any] = []

    def use() -> None:
        barrier.wait()
        got.append(pool.get("json"))
        got.append(pool.get("j"))

    threads = [threading.Thread(target=use) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert created == [JsonDecoder]
    assert len({id(instance) for instance in got}) == 1
    assert pool.keys() == ["j", "json", "raw"]
    assert pool.created() == [got[0]]


def test_a_gzip_bomb_is_refused_as_a_decode_error():
    reader = make_reader(**{"bomb.json.gz": gzip.compress(b" " * 100_000 + b"1")})
    reader.max_decompressed_bytes = 10_000
    error = stage_error(reader, Item("i", uri="mem://store/bomb.json.gz"))
    assert error.stage == "decode"
    assert "decompresses to more than 10000 bytes" in str(error)


def test_concatenated_gzip_members_are_all_read():
    data = gzip.compress(b'{"a": ') + gzip.compress(b"1}")
    reader = make_reader(**{"two.json.gz": data})
    assert reader.read(Item("i", uri="mem://store/two.json.gz"))[0] == {"a": 1}
