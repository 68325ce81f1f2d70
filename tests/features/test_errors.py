"""How an error reads in one line, and which errors are the user's to fix."""

from __future__ import annotations

import pytest
from pydantic import BaseModel, ValidationError

from features.errors import ShoprecError, UserError, first_line, one_line
from features.schema import ContractError
from training.bundle_files import BundleError


class Settings(BaseModel):
    k: int
    name: str


def test_a_validation_error_names_every_field_on_one_line() -> None:
    with pytest.raises(ValidationError) as caught:
        Settings(k="many")  # type: ignore[arg-type]
    assert one_line(caught.value) == ("invalid Settings: k: Input should be a valid integer, unable to parse string "
                                      "as an integer; name: Field required")


def test_long_messages_keep_both_ends_and_can_name_their_type() -> None:
    error = RuntimeError("MLflow said:\n  " + "x" * 1000 + "\n  Connection refused")
    text = one_line(error, 100, kind=True)
    assert len(text) <= 100 and "\n" not in text
    assert text.startswith("RuntimeError: MLflow said: xxx") and text.endswith("x Connection refused")
    assert one_line(ValueError("a\n  b")) == "a b" and first_line(ValueError("a\n  b")) == "a"


def test_bad_input_errors_are_user_errors_and_value_errors() -> None:
    for kind in (ContractError, BundleError):
        assert issubclass(kind, UserError) and issubclass(kind, ValueError) and issubclass(kind, ShoprecError)
