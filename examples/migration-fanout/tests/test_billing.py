"""The suite `test` runs once every module is migrated: behaviour stays, logs go to logging."""

import logging

from app.billing import charge


def test_a_positive_charge_goes_through_and_is_logged(caplog):
    with caplog.at_level(logging.DEBUG):
        assert charge("o-1", 250) is True
    assert "charging order o-1: 250 cents" in caplog.text


def test_a_non_positive_charge_is_refused_with_a_warning(caplog):
    with caplog.at_level(logging.DEBUG):
        assert charge("o-2", 0) is False
    assert any(r.levelno == logging.WARNING for r in caplog.records)
