import signal

import pytest

# The shared helper modules assert too: rewritten like the tests, a failure there shows its values.
pytest.register_assert_rewrite("tests.helpers", "tests.method_rounds", "tests.mpi_runs", "tests.plugin_support")

from tests.helpers import assert_no_new_segments, shm_entries  # noqa: E402 (after the registration)

# Tests that interrupt a run need SIGINT to be deliverable. A suite started in the background
# of a non-interactive shell (`cmd &` in a script) inherits SIGINT ignored, and so would every
# run it starts, since an ignored signal stays ignored across exec: Ctrl-C tests would time
# out. Catching it here gives this process Python's handler and its children the default.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)


@pytest.fixture
def shm_guard():
    """Fails the test if it leaves a shared-memory segment behind."""
    before = shm_entries()
    yield
    assert_no_new_segments(before)
