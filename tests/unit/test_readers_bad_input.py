"""Readers under bad input: every malformed file or row is a DataError naming file, line and field,
skippable row by row with on_bad_row=skip; never another exception."""

import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rlxf.data import DataError, read_feedback, read_labeled, read_preferences, read_prompts, readers
from rlxf.data.formats import read_demonstrations, read_response_sets
from rlxf.data.tasks import gsm8k, mbpp

GOOD = {"prompt": "p", "chosen": "c", "rejected": "r"}


def write_lines(path, lines):
    path.write_bytes(b"".join(line + b"\n" for line in lines))
    return path


def good_line():
    return json.dumps(GOOD).encode()


@pytest.mark.parametrize(
    "bad_line, message",
    [
        (b"[" * 100_000 + b"]" * 100_000, "nested too deeply"),
        (b'{"prompt": "p\xff", "chosen": "c", "rejected": "r"}', r"not valid UTF-8 text \(byte 0xff at column 14\)"),
        (b'{"prompt": "p\\ud800", "chosen": "c", "rejected": "r"}', "field 'prompt': not valid text"),
        (
            b'{"prompt": "p", "chosen": [{"role": "assistant", "content": "\\udfff"}], "rejected": "r"}',
            r"field 'chosen\[0\].content'",
        ),
        (b'{"prompt": "p", "chosen": "c", "rejected": "r", "margin": 1' + b"0" * 5000 + b"}", "invalid JSON"),
        (
            b'{"prompt": "p", "chosen": "c", "rejected": "r", "margin": ' + b"1" + b"0" * 400 + b".0}",
            None,
        ),  # inf: not finite
        (
            b'{"prompt": "p", "chosen": "c", "rejected": "r", "margin": 1' + b"0" * 400 + b"}",
            "field 'margin': expected a number",
        ),
    ],
)
def test_a_bad_jsonl_line_names_its_line_and_is_skippable(tmp_path, bad_line, message):
    path = write_lines(tmp_path / "pairs.jsonl", [good_line(), bad_line, good_line()])
    with pytest.raises(DataError, match=r"pairs.jsonl, line 2") as error:
        read_preferences(path)
    if message:
        assert error.match(message)
    records, bad = read_preferences(path, on_bad_row="skip")
    assert len(records) == 2 and [e.location for e in bad.errors] == ["line 2"]


def test_a_csv_cell_over_the_limit_names_its_line_and_the_reader_goes_on(tmp_path, monkeypatch):
    monkeypatch.setattr(readers, "CSV_FIELD_LIMIT", 131_072)
    path = tmp_path / "pairs.csv"
    path.write_text(f"prompt,chosen,rejected\np,c,r\np,{'x' * 200_000},r\nq,c2,r2\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"pairs.csv, line 3: unreadable CSV \(field larger than field limit"):
        read_preferences(path)
    records, bad = read_preferences(path, on_bad_row="skip")
    assert [r.chosen for r in records] == ["c", "c2"] and [e.location for e in bad.errors] == ["line 3"]


def test_a_long_csv_cell_within_the_limit_is_read(tmp_path):
    path = tmp_path / "pairs.csv"
    path.write_text(f"prompt,chosen,rejected\np,{'x' * 200_000},r\n", encoding="utf-8")
    (record,), _ = read_preferences(path)
    assert len(record.chosen) == 200_000


def test_bad_utf8_in_csv_and_json_names_the_row_and_field(tmp_path):
    csv_path = tmp_path / "pairs.csv"
    csv_path.write_bytes(b"prompt,chosen,rejected\np,c,r\np,c\xe9,r\n")
    with pytest.raises(DataError, match=r"pairs.csv, line 3, field 'chosen': not valid text"):
        read_preferences(csv_path)
    assert len(read_preferences(csv_path, on_bad_row="skip")[0]) == 1
    json_path = tmp_path / "pairs.json"
    json_path.write_bytes(
        b'[{"prompt": "p", "chosen": "c", "rejected": "r"}, {"prompt": "p\xc3", "chosen": "c", "rejected": "r"}]'
    )
    with pytest.raises(DataError, match=r"pairs.json, item 1, field 'prompt': not valid text"):
        read_preferences(json_path)


def test_a_json_document_nested_too_deeply_is_a_data_error(tmp_path):
    path = tmp_path / "deep.json"
    path.write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(DataError, match=r"deep.json, file: invalid JSON \(nested too deeply"):
        read_preferences(path)


@pytest.mark.parametrize(
    "suffix, content",
    [
        (".jsonl", b""),
        (".jsonl", b"\n\n"),
        (".csv", b""),
        (".csv", b"prompt,chosen,rejected\n"),
        (".json", b""),
        (".json", b"[]"),
    ],
)
def test_an_empty_file_is_an_error_not_zero_records(tmp_path, suffix, content):
    path = tmp_path / f"empty{suffix}"
    path.write_bytes(content)
    with pytest.raises(DataError, match=r"empty\.\w+, file: no rows"):
        read_preferences(path)


def test_a_file_whose_every_row_is_bad_is_an_error_even_when_skipping(tmp_path):
    path = write_lines(tmp_path / "pairs.jsonl", [b"{", b"[1]"])
    with pytest.raises(DataError, match=r"pairs.jsonl, file: no usable rows: skipped 2 bad rows"):
        read_preferences(path, on_bad_row="skip")


def test_a_folder_and_broken_parquet_files_are_data_errors(tmp_path):
    folder = tmp_path / "pairs.parquet"
    folder.mkdir()
    with pytest.raises(DataError, match="pairs.parquet, file: is a folder"):
        read_preferences(folder)
    for name, content in (("empty.parquet", b""), ("corrupt.parquet", b"PAR1 this is not parquet PAR1")):
        (tmp_path / name).write_bytes(content)
        with pytest.raises(DataError, match=rf"{name}, file: not a readable parquet file"):
            read_preferences(tmp_path / name)


def test_a_parquet_file_without_rows_is_an_error(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = tmp_path / "none.parquet"
    pq.write_table(pa.table({"prompt": pa.array([], pa.string())}), path)
    with pytest.raises(DataError, match="none.parquet, file: no rows"):
        read_preferences(path)


@pytest.mark.parametrize("label", [0.5, -1, 2, "yes", "maybe", None, [1], float("nan")])
def test_kto_labels_other_than_true_false_1_0_are_refused(tmp_path, label):
    rows = [{"prompt": "p", "completion": "ok", "label": True}, {"prompt": "p", "completion": "c", "label": label}]
    path = tmp_path / "kto.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(DataError, match=r"kto.jsonl, line 2, field 'label'"):
        read_labeled(path)
    records, bad = read_labeled(path, on_bad_row="skip")
    assert len(records) == 1 and bad.errors[0].field == "label"


@pytest.mark.parametrize(
    "label, value",
    [(True, 1.0), (False, 0.0), (1, 1.0), (0, 0.0), ("true", 1.0), ("False", 0.0), ("1", 1.0), ("0", 0.0)],
)
def test_kto_labels_true_false_1_0_are_read(tmp_path, label, value):
    path = tmp_path / "kto.jsonl"
    path.write_text(json.dumps({"prompt": "p", "completion": "c", "label": label}) + "\n")
    assert read_labeled(path)[0][0].label == value


def test_kto_labels_from_csv_text(tmp_path):
    path = tmp_path / "kto.csv"
    path.write_text("prompt,completion,label\np,a,true\np,b,0\np,c,0.5\n")
    records, bad = read_labeled(path, on_bad_row="skip")
    assert [r.label for r in records] == [1.0, 0.0] and bad.errors[0].location == "line 4"


READERS = [read_preferences, read_labeled, read_prompts, read_feedback, read_demonstrations, read_response_sets]


def _read_everything(path):
    for read in READERS:
        for on_bad_row in ("error", "skip"):
            try:
                read(path, on_bad_row=on_bad_row)
            except DataError:
                pass
    for task in (gsm8k, mbpp):
        try:
            task(path)
        except DataError:
            pass


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.integers(10**300, 10**400) | st.floats() | st.text(),
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(
            st.sampled_from(
                [
                    "prompt",
                    "chosen",
                    "rejected",
                    "completion",
                    "label",
                    "messages",
                    "role",
                    "content",
                    "tie",
                    "margin",
                    "weight",
                    "aspects",
                    "responses",
                    "text",
                    "score",
                    "response 1",
                    "response 2",
                    "test_list",
                    "question",
                    "answer",
                    "instruction",
                    "input",
                    "annotator",
                    "gold",
                ]
            ),
            inner,
            max_size=6,
        )
    ),
    max_leaves=12,
)
FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@FUZZ
@given(data=st.binary(max_size=300), suffix=st.sampled_from([".jsonl", ".json", ".csv", ".parquet"]))
def test_any_bytes_give_records_or_a_data_error(tmp_path, data, suffix):
    path = tmp_path / f"fuzz{suffix}"
    path.write_bytes(data)
    _read_everything(path)


@FUZZ
@given(rows=st.lists(json_values, min_size=1, max_size=4), suffix=st.sampled_from([".jsonl", ".json"]))
def test_any_json_rows_give_records_or_a_data_error(tmp_path, rows, suffix):
    path = tmp_path / f"fuzz{suffix}"
    text = "\n".join(json.dumps(r) for r in rows) if suffix == ".jsonl" else json.dumps(rows)
    path.write_text(text, encoding="utf-8", errors="surrogatepass")
    _read_everything(path)


@FUZZ
@given(cells=st.lists(st.lists(st.text(max_size=20), min_size=1, max_size=4), min_size=1, max_size=4))
def test_any_csv_gives_records_or_a_data_error(tmp_path, cells):
    import csv

    path = tmp_path / "fuzz.csv"
    with path.open("w", newline="", encoding="utf-8", errors="surrogatepass") as handle:
        writer = csv.writer(handle)
        writer.writerow(["prompt", "chosen", "rejected", "completion", "label"][: len(cells[0])])
        writer.writerows(cells)
    _read_everything(path)
