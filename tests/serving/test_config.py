"""SHOPREC_SERVING_CONFIG: inline JSON or a file, validated, one line when it is wrong."""

from __future__ import annotations

from pathlib import Path

import pytest

from features.errors import UserError
from serving.config import ServingConfig, serving_config


def test_unset_is_the_defaults_and_inline_json_or_a_file_sets_fields(tmp_path: Path) -> None:
    assert serving_config({}) == ServingConfig()
    assert serving_config({"SHOPREC_SERVING_CONFIG": '{"cf_weight": 0.2}'}).cf_weight == 0.2
    path = tmp_path / "serving.json"
    path.write_text('{"session_items": 5, "middle_band": [0.1, 0.9]}')
    assert serving_config({"SHOPREC_SERVING_CONFIG": str(path)}) == ServingConfig(session_items=5,
                                                                                middle_band=(0.1, 0.9))


@pytest.mark.parametrize(("value", "message"), [
    ('{"cf_weight": -1}', r"\(inline JSON\): invalid ServingConfig: cf_weight: Input should be greater than or "
                          r"equal to 0"),
    ('{"cf_weight": ', r"\(inline JSON\): invalid ServingConfig: input: Invalid JSON"),
    ("/no/such/serving.json", r"SHOPREC_SERVING_CONFIG=/no/such/serving.json: cannot read it \(No such file"),
])
def test_a_bad_config_is_one_line_naming_the_field(value: str, message: str) -> None:
    with pytest.raises(UserError, match=message) as caught:
        serving_config({"SHOPREC_SERVING_CONFIG": value})
    assert "\n" not in str(caught.value)
