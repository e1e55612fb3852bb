import pytest


@pytest.fixture(autouse=True)
def _cache(tmp_path_factory, monkeypatch):
    """Every command test builds the tiny models into one cache of this test session, never the user's."""
    monkeypatch.setenv("TRL_SDAR_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))
    monkeypatch.setenv("TRL_EXPERIMENTAL_SILENCE", "1")
