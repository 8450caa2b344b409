import pytest

from tests.helpers import assert_no_new_segments, shm_entries


@pytest.fixture
def shm_guard():
    """Fails the test if it leaves a shared-memory segment behind."""
    before = shm_entries()
    yield
    assert_no_new_segments(before)
