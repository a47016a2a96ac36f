"""The dsnn metadata schema is documented from the code: docs/export.md's table is
`tflite.metadata.schema_markdown()`, and an export writes only keys `METADATA_FIELDS` lists."""
import pathlib
import re

import pytest

from tflite.metadata import METADATA_FIELDS, MetadataError, schema_markdown, undocumented_keys, validate

ROOT = pathlib.Path(__file__).resolve().parents[1]
BLOCK = re.compile(r"<!-- metadata-schema:begin -->\n.*?\n\n(\| key \|.*?)<!-- metadata-schema:end -->", re.S)


def test_docs_export_md_schema_table_is_the_one_generated_from_metadata_fields():
    match = BLOCK.search((ROOT / "docs" / "export.md").read_text())
    assert match, "docs/export.md lacks the <!-- metadata-schema:begin/end --> block"
    assert match.group(1) == schema_markdown()


def test_every_field_is_listed_once_and_the_required_ones_are_what_validate_requires():
    paths = [field.path for field in METADATA_FIELDS]
    assert len(paths) == len(set(paths))
    minimal = {"format_version": 1, "levels": [{"sparsity": 0.0}], "tokens": {"pieces": [], "blank_id": 0},
               "feature_config": {"sample_rate": 16000}, "export": {}, "versions": {}}
    validate(minimal)
    for field in METADATA_FIELDS:
        if field.required and "." not in field.path and "[" not in field.path:
            with pytest.raises(MetadataError, match=field.path):
                validate({key: value for key, value in minimal.items() if key != field.path})


def test_undocumented_keys_names_a_key_the_table_lacks():
    raw = {"format_version": 1, "levels": [{"level": 0, "sparsity": 0.0, "speed": 1}],
           "export": {"design": "x", "flavour": "y"}, "novel": 1}
    assert undocumented_keys(raw) == ["export.flavour", "levels[].speed", "novel"]


def test_a_real_export_writes_only_documented_keys():
    import harness_tflite as h
    from tflite.metadata import read_metadata

    raw = read_metadata(h.exported("float")).raw
    assert undocumented_keys(raw) == []
    assert {"signatures", "evaluation", "source", "created", "level_clamping"} <= set(raw)
