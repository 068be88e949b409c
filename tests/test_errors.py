"""One option lookup for every choice the library offers."""

from __future__ import annotations

import pytest

from ctvoco.errors import UserError, look_up_option


def test_a_known_option_is_returned() -> None:
    assert look_up_option("pooling", "flatten", ("avg", "flatten")) == "flatten"


def test_a_misspelt_option_names_the_argument_and_the_closest_option() -> None:
    with pytest.raises(UserError) as caught:
        look_up_option("pooling", "flaten", ("avg", "flatten"))
    assert str(caught.value) == (
        "pooling must be one of avg, flatten; got 'flaten'; did you mean 'flatten'?"
    )


def test_an_unrelated_value_gets_no_suggestion() -> None:
    with pytest.raises(UserError, match=r"got 'zzz'$"):
        look_up_option("pooling", "zzz", ("avg", "flatten"))


@pytest.mark.parametrize("value", [None, 1, ["avg"]])
def test_a_value_that_is_not_a_string_is_refused(value: object) -> None:
    with pytest.raises(UserError, match="pooling must be one of avg, flatten"):
        look_up_option("pooling", value, ("avg", "flatten"))
