#!/usr/bin/env python3
"""The whole recovery over gRPC with the Python client generated from proto/ (generate.sh).

    python3 walk.py 127.0.0.1:50051 SERVICE_LOG

Creates an account (AccountService answers loopback callers when no API key is configured),
starts a recovery (the service runs with RECOVERY_CAPTCHA=off), sends a code, reads it from the
service's console (the `log` notifier; a real client gets it from the person), shows how an error
carries its google.rpc.Status details (a wrong code: CODE_INVALID, attempts left), verifies the
code, sets the new password and logs in with it.
"""

import re
import sys
import time
import uuid
from pathlib import Path

import grpc
from google.rpc import error_details_pb2, status_pb2

sys.path.insert(0, str(Path(__file__).resolve().parent / "gen"))
from identity.recovery.v1 import account_pb2, account_pb2_grpc, recovery_pb2, recovery_pb2_grpc  # noqa: E402

OLD, NEW = "Old-Granite-Harbor-73!", "New-Velvet-Lantern-58?"


def error_info(error: grpc.RpcError):
    """The ErrorInfo of a failed call: google.rpc.Status travels in `grpc-status-details-bin`."""
    for key, value in error.trailing_metadata() or ():
        if key == "grpc-status-details-bin":
            status = status_pb2.Status.FromString(value)
            for detail in status.details:
                if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
                    info = error_details_pb2.ErrorInfo()
                    detail.Unpack(info)
                    return info
    raise AssertionError(f"no ErrorInfo in {error}")


def code_for(log: Path, login: str) -> str:
    """The code the `log` notifier printed for `login` (the last one)."""
    for _ in range(150):
        text = log.read_text()
        at = text.rfind(f"message to {login} -----")
        if at >= 0:
            found = re.search(r"^ +([0-9]{6}) *$", text[at:], re.MULTILINE)
            if found:
                return found.group(1)
        time.sleep(0.1)
    raise AssertionError(f"no code for {login} in {log}")


def main():
    address, log = sys.argv[1], Path(sys.argv[2])
    channel = grpc.insecure_channel(address)
    accounts = account_pb2_grpc.AccountServiceStub(channel)
    recovery = recovery_pb2_grpc.RecoveryServiceStub(channel)
    login = f"python-{uuid.uuid4().hex[:12]}@example.com"

    accounts.CreateAccount(account_pb2.CreateAccountRequest(login_id=login, password=OLD))
    flow = recovery.StartRecovery(recovery_pb2.StartRecoveryRequest(login_id=login, locale="en")).flow
    assert flow.state == recovery_pb2.CHOOSE_METHOD, flow
    print(f"flow {flow.flow_id}: {[m.masked_destination for m in flow.methods]}")
    recovery.SendVerificationCode(
        recovery_pb2.SendVerificationCodeRequest(flow_id=flow.flow_id, channel=recovery_pb2.EMAIL)
    )
    code = code_for(log, login)

    wrong = "%06d" % ((int(code) + 1) % 1_000_000)
    try:
        recovery.VerifyCode(recovery_pb2.VerifyCodeRequest(flow_id=flow.flow_id, code=wrong))
        raise AssertionError("a wrong code was accepted")
    except grpc.RpcError as error:
        info = error_info(error)
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, error
        assert info.reason == "CODE_INVALID" and info.domain == "recovery.identity", info
        print(f"wrong code: {info.reason}, attempts left {info.metadata['attempts_left']}")

    token = recovery.VerifyCode(recovery_pb2.VerifyCodeRequest(flow_id=flow.flow_id, code=code)).reset_token
    recovery.ResetPassword(
        recovery_pb2.ResetPasswordRequest(reset_token=token, new_password=NEW, new_password_confirmation=NEW)
    )
    login_ok = accounts.VerifyPassword(account_pb2.VerifyPasswordRequest(login_id=login, password=NEW))
    assert login_ok.valid, login_ok
    state = recovery.GetRecoveryFlow(recovery_pb2.GetRecoveryFlowRequest(flow_id=flow.flow_id)).state
    assert state == recovery_pb2.COMPLETED, state
    print("python client: the whole flow works")


if __name__ == "__main__":
    main()
