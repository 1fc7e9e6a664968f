"""How the S3 dataset lock tells a refused conditional write from any other S3 error (the
lock's behaviour between processes is tested on moto in end_to_end/test_s3_store.py)."""

from __future__ import annotations

import errno

from botocore.exceptions import ClientError

from cog_assets.store.dataset_lock import _precondition_failed


def _s3_error(code: str, message: str) -> OSError:
    """What s3fs raises for an S3 error: an OSError(EINVAL) caused by botocore's error."""
    error = OSError(errno.EINVAL, message)
    error.__cause__ = ClientError({"Error": {"Code": code, "Message": message}}, "PutObject")
    return error


def test_a_refused_conditional_write_is_a_lock_held_elsewhere():
    assert _precondition_failed(_s3_error(
        "PreconditionFailed", "At least one of the pre-conditions you specified did not hold"))
    assert _precondition_failed(_s3_error(
        "ConditionalRequestConflict",
        "A conflicting conditional operation is currently in progress against this resource."))
    assert _precondition_failed(FileExistsError("the lock object exists"))


def test_any_other_bad_request_is_not_taken_for_a_held_lock():
    """s3fs gives every HTTP 400 the same errno: a store that rejects the request must fail
    with its own error, not wait 15 minutes and report the lock as held."""
    assert not _precondition_failed(_s3_error("InvalidArgument", "Invalid argument"))
    assert not _precondition_failed(_s3_error("InvalidRequest", "Conditional writes are not "
                                                                "supported"))
    assert not _precondition_failed(OSError(errno.EINVAL, "Invalid argument"))
