"""The digits example: model, PNG writer, predictor on engine-decoded images (the demos:
test_examples_demo.py)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from examples.digits import (
    MODEL_PATH_ENV,
    DigitsPredictor,
    ModelFileError,
    default_model_path,
    ensure_model,
    image_to_features,
    label_from_name,
    load_split,
    save_model,
    train_model,
    write_bad_inputs,
    write_test_pngs,
)
from igata_core import RecordError
from igata_core.builtins.decoders import ImageDecoder
from igata_core.testing import run_pipeline


@pytest.fixture(scope="module")
def split():
    return load_split()


@pytest.fixture(scope="module")
def model_path(split, tmp_path_factory):
    return save_model(train_model(split), tmp_path_factory.mktemp("model") / "digits.joblib")


@pytest.fixture(scope="module")
def predictor(model_path):
    predictor = DigitsPredictor(model_path)
    predictor.setup()
    return predictor


@pytest.fixture(scope="module")
def pngs(split, tmp_path_factory):
    return write_test_pngs(tmp_path_factory.mktemp("pngs"), split=split)


def decode(path: Path):
    """Bytes to array exactly as the engine does it for a .png input."""
    return ImageDecoder({}, None).decode(path.read_bytes(), str(path))


def test_model_is_accurate_on_the_fixed_test_split(split):
    model = train_model(split)
    features = split.test_images.reshape(len(split.test_images), -1)
    assert len(split.test_labels) == 450
    assert model.score(features, split.test_labels) > 0.95


def test_png_writer_names_files_by_index_and_label(split, tmp_path):
    written = write_test_pngs(tmp_path, 25, split=split, scale=5)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(p.name for p in written)
    assert len(written) == 25
    for index, (path, label) in enumerate(sorted(written.items())):
        assert path.name == f"digit-{index:05d}-label-{label}.png"
        assert label == split.test_labels[index]
        assert label_from_name(path) == label
        image = decode(path)
        assert image.shape == (40, 40, 3)
        # dark ink on white: ink 0 is white paper, ink 16 is black
        ink = split.test_images[index]
        assert image[0:5, 0:5].min() == image[0:5, 0:5].max()
        assert image[0, 0, 0] == round(255 - ink[0, 0] * 255 / 16)


def test_png_writer_refuses_counts_beyond_the_test_split(split, tmp_path):
    with pytest.raises(ValueError, match="between 0 and 450"):
        write_test_pngs(tmp_path, 451, split=split)


def test_label_from_name_ignores_other_files():
    assert label_from_name("digit-00042-label-7.png") == 7
    assert label_from_name("/x/digit-00001-label-0.png") == 0
    assert label_from_name("bad-corrupt.png") is None
    assert label_from_name("digit-00042-label-7.png.bak") is None


def test_bad_inputs_fail_to_decode_as_record_errors(tmp_path):
    corrupt, truncated = write_bad_inputs(tmp_path)
    with pytest.raises(RecordError, match="not an image"):
        decode(corrupt)
    with pytest.raises(RecordError, match="truncated"):
        decode(truncated)


def test_features_of_decoded_pngs_match_the_data_set(split, pngs, predictor):
    for path, label in list(pngs.items())[:60]:
        index = int(path.name.split("-")[1])
        features = predictor.preprocess_input(decode(path), {"path": str(path)})
        assert features.shape == (64,)
        # 0..16 through 8-bit gray and back loses at most half a gray level
        np.testing.assert_allclose(features, split.test_images[index].ravel(), atol=16 / 255)
        assert label == split.test_labels[index]


def test_predictor_classifies_decoded_pngs(pngs, predictor):
    paths = list(pngs)
    features = [predictor.preprocess_input(decode(p), {}) for p in paths]
    predictions = predictor.predict_batch(features, [{} for _ in paths])
    right = sum(pred["label"] == pngs[p] for p, pred in zip(paths, predictions, strict=True))
    assert right / len(paths) > 0.9


def test_predict_batch_equals_predict(pngs, predictor):
    paths = list(pngs)[:40]
    metas = [{"path": str(p)} for p in paths]
    features = [predictor.preprocess_input(decode(p), m) for p, m in zip(paths, metas, strict=True)]
    batch = predictor.predict_batch(features, metas)
    single = [predictor.predict(f, m) for f, m in zip(features, metas, strict=True)]
    assert len(batch) == len(single) == 40
    for one, many in zip(single, batch, strict=True):
        assert one["label"] == many["label"]
        assert one["result"][0]["label"] == many["result"][0]["label"]
        assert one["confidence"] == pytest.approx(many["confidence"], rel=1e-9)
    assert predictor.predict_batch([], []) == []


def test_prediction_is_plain_json_with_a_result_list(pngs, predictor):
    path = next(iter(pngs))
    prediction = predictor.predict(predictor.preprocess_input(decode(path), {}), {})
    assert json.loads(json.dumps(prediction)) == prediction
    (finding,) = prediction["result"]
    assert finding["label"] == finding["valid_number"] == str(prediction["label"])
    assert 0.1 < finding["confidence"] == prediction["confidence"] <= 1.0
    assert prediction["label"] in range(10)


def test_preprocess_accepts_either_ink_polarity_and_pads_to_square(pngs, predictor):
    path = next(iter(pngs))
    dark_on_light = decode(path)
    expected = image_to_features(dark_on_light)
    np.testing.assert_allclose(image_to_features(255 - dark_on_light), expected, atol=1e-4)
    np.testing.assert_allclose(image_to_features(dark_on_light[:, :, 0]), expected, atol=1e-4)

    # a wide image is padded with paper around the middle, not stretched
    wide = np.full((32, 48, 3), 255, dtype=np.uint8)
    wide[:, 8:40] = dark_on_light
    square = np.full((48, 48, 3), 255, dtype=np.uint8)
    square[8:40, 8:40] = dark_on_light
    np.testing.assert_allclose(image_to_features(wide), image_to_features(square), atol=1e-4)


@pytest.mark.parametrize(
    ("given", "message"),
    [
        ([{"a": "1"}], "got list"),
        (np.zeros((8, 8, 3), dtype=np.float32), "uint8"),
        (np.zeros((8, 8, 4), dtype=np.uint8), r"\(8, 8, 4\)"),
        (np.zeros((0, 8, 3), dtype=np.uint8), "empty"),
    ],
)
def test_preprocess_rejects_what_is_not_an_image(given, message):
    with pytest.raises(RecordError, match=message):
        image_to_features(given)


def test_predict_before_setup_says_so():
    with pytest.raises(RuntimeError, match="setup"):
        DigitsPredictor().predict(np.zeros(64), {})


def test_setup_trains_a_missing_model_once(tmp_path):
    path = tmp_path / "cache" / "digits.joblib"
    first = DigitsPredictor(path)
    first.setup()
    assert path.is_file()
    saved = path.stat().st_mtime_ns
    second = DigitsPredictor(path)
    second.setup()
    assert path.stat().st_mtime_ns == saved
    assert list(second.model.classes_) == list(range(10))


def test_model_path_comes_from_the_environment(monkeypatch, tmp_path, model_path):
    monkeypatch.setenv(MODEL_PATH_ENV, str(model_path))
    assert default_model_path() == model_path
    predictor = DigitsPredictor()
    predictor.setup()
    assert predictor.model is not None
    assert default_model_path({"XDG_CACHE_HOME": str(tmp_path)}) == (
        tmp_path / "igata-examples" / "digits.joblib"
    )


def test_unreadable_model_file_is_reported_not_overwritten(tmp_path):
    path = tmp_path / "digits.joblib"
    path.write_bytes(b"not a pickle")
    with pytest.raises(ModelFileError, match=rf"{path}.*{MODEL_PATH_ENV}"):
        ensure_model(path)
    assert path.read_bytes() == b"not a pickle"


def test_model_of_another_sklearn_version_is_retrained(tmp_path, model_path):
    import joblib
    import sklearn

    path = tmp_path / "digits.joblib"
    bundle = joblib.load(model_path)
    joblib.dump({**bundle, "sklearn_version": "0.0.1"}, path)
    ensure_model(path)
    assert joblib.load(path)["sklearn_version"] == sklearn.__version__


class CountingDigitsPredictor(DigitsPredictor):
    def __init__(self, model_path):
        super().__init__(model_path)
        self.batch_sizes: list[int] = []

    def predict_batch(self, input_records, metas):
        self.batch_sizes.append(len(input_records))
        return super().predict_batch(input_records, metas)


def test_engine_runs_the_predictor_in_batches(split, model_path, tmp_path):
    expected = write_test_pngs(tmp_path / "images", 70, split=split)
    write_bad_inputs(tmp_path / "images")
    predictor = CountingDigitsPredictor(model_path)
    result = run_pipeline(
        "files",
        "jsonl",
        predictor,
        inputs=[str(tmp_path / "images")],
        sink_options={"path": str(tmp_path / "out.jsonl")},
        batch_size=32,
        max_batch_wait=0.5,
    )
    assert result.exit_code == 1
    assert sorted((o.stage, Path(o.input).name) for o in result.outcomes) == [
        ("decode", "bad-corrupt.png"),
        ("decode", "bad-truncated.png"),
    ]
    assert sum(predictor.batch_sizes) == 70
    assert 1 < max(predictor.batch_sizes) <= 32
    records = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    right = sum(r["label"] == expected[Path(r["igata_input"])] for r in records)
    assert len(records) == 70
    assert right / 70 > 0.85
    # the engine's predictions are the predictor's own, record for record
    direct = {p: predictor.predict(predictor.preprocess_input(decode(p), {}), {}) for p in expected}
    assert {Path(r["igata_input"]): r["label"] for r in records} == {
        p: d["label"] for p, d in direct.items()
    }
    assert all(r["result"][0]["valid_number"] == str(r["label"]) for r in records)
