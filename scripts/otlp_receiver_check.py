#!/usr/bin/env python3
"""Traces and metrics reach a real OTLP receiver (run by scripts/web-checks.sh).

tests/suite/telemetry.rs checks the export against an in-test fake collector; this starts a separate
receiver process-independent of our code — oteltest's `otelsink` gRPC sink (PyPI `oteltest`,
pinned), which decodes with the official opentelemetry-proto Python package — on a spare port,
runs the real binary with RECOVERY_OTLP_ENDPOINT pointing at it, makes a few calls with grpcurl
(one carrying a W3C traceparent), stops the binary with SIGTERM (it flushes on the way out), and
checks what arrived: the service's resource, a server span per RPC parented on the caller's
trace, metrics, and no secret (a canary password sent to ValidatePassword) anywhere in it.
"""

import os
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from google.protobuf.json_format import MessageToDict
from oteltest.sink import GrpcSink
from oteltest.sink.handler import RequestHandler

ROOT = Path(__file__).resolve().parent.parent
BINARY = Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "target/debug/recovery-service"
RECOVERY = "identity.recovery.v1.RecoveryService"


class Collect(RequestHandler):
    def __init__(self):
        self.lock = threading.Lock()
        self.traces = []
        self.metrics = []
        self.raw = []

    def handle_trace(self, request, headers):  # noqa: ARG002
        with self.lock:
            self.traces.append(MessageToDict(request))
            self.raw.append(request.SerializeToString())

    def handle_metrics(self, request, headers):  # noqa: ARG002
        with self.lock:
            self.metrics.append(MessageToDict(request))
            self.raw.append(request.SerializeToString())

    def handle_logs(self, request, headers):  # noqa: ARG002
        pass


def spare_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


SERVICE_NAME = "recovery-otlp-check"


def fail(message, log=""):
    print(f"otlp receiver check FAILED: {message}\n{log}", file=sys.stderr)
    sys.exit(1)


def main():
    if not BINARY.is_file():
        fail(f"{BINARY} is missing: cargo build first")
    handler = Collect()
    import logging

    port = spare_port()
    sink = GrpcSink(handler, logging.getLogger("otelsink"), max_workers=4, port=port)
    sink.start()
    work = tempfile.mkdtemp(prefix="recovery-otlp-")
    log_path = Path(work) / "service.log"
    env = {
        **os.environ,
        "NO_COLOR": "1",
        "RECOVERY_LISTEN": "127.0.0.1:0",
        "RECOVERY_CAPTCHA": "off",
        "RECOVERY_DATABASE_URL": f"sqlite://{work}/recovery.db?mode=rwc",
        # The standard variables (tests/telemetry.rs covers RECOVERY_OTLP_ENDPOINT): the endpoint,
        # the service's name and extra resource attributes, as an operator's platform sets them.
        "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{port}",
        "OTEL_SERVICE_NAME": SERVICE_NAME,
        "OTEL_RESOURCE_ATTRIBUTES": "deployment.environment.name=ci,service.namespace=identity",
        # grpcurl plays the gateway: only a trusted peer's traceparent is honoured
        # (telemetry.trust_traceparent = "proxies", the default).
        "RECOVERY_SERVER__TRUSTED_PROXIES": '["127.0.0.1"]',
    }
    env.pop("RECOVERY_REDIS_URL", None)
    env.pop("RECOVERY_OTLP_ENDPOINT", None)
    with open(log_path, "w") as log:
        service = subprocess.Popen([str(BINARY), "serve"], cwd=work, env=env, stdout=log, stderr=log)
    try:
        address = None
        for _ in range(300):
            text = log_path.read_text()
            for line in text.splitlines():
                if "recovery-service listening" in line and "address=" in line:
                    address = line.split("address=", 1)[1].split()[0]
            if address or service.poll() is not None:
                break
            time.sleep(0.1)
        if not address:
            fail("the service did not start", log_path.read_text())

        trace_id = secrets.token_hex(16)
        parent_span = secrets.token_hex(8)
        canary = f"Canary-{secrets.token_hex(6)}-Pw!"

        def grpcurl(method, body, *headers, expect_error=False):
            command = ["grpcurl", "-plaintext"]
            for header in headers:
                command += ["-H", header]
            command += ["-d", body, address, f"{RECOVERY}/{method}"]
            result = subprocess.run(command, capture_output=True, text=True)
            if (result.returncode != 0) != expect_error:
                fail(f"{method}: {result.stdout}{result.stderr}", log_path.read_text())

        grpcurl("CreateCaptcha", "{}", f"traceparent: 00-{trace_id}-{parent_span}-01")
        grpcurl("StartRecovery", '{"login_id":"otel@example.com","locale":"en"}')
        grpcurl("ValidatePassword", f'{{"password":"{canary}","login_id":"otel@example.com"}}')
        # An error, so the recovery.rpc.errors counter has a point to export.
        grpcurl("GetRecoveryFlow", '{"flow_id":"0190f8a8-0000-7000-8000-000000000000"}', expect_error=True)
        # SIGTERM: the service drains, then shuts the exporters down, which flushes them.
        service.send_signal(signal.SIGTERM)
        try:
            service.wait(timeout=30)
        except subprocess.TimeoutExpired:
            fail("the service did not stop on SIGTERM", log_path.read_text())
        deadline = time.time() + 10
        while time.time() < deadline and not (handler.traces and handler.metrics):
            time.sleep(0.1)
    finally:
        if service.poll() is None:
            service.kill()
        sink.stop()

    with handler.lock:
        traces, metrics, raw = list(handler.traces), list(handler.metrics), list(handler.raw)
    if not traces:
        fail("no trace export reached the receiver", log_path.read_text())
    if not metrics:
        fail("no metric export reached the receiver", log_path.read_text())

    spans = []
    for export in traces:
        for resource_spans in export.get("resourceSpans", []):
            attributes = {
                a["key"]: a["value"].get("stringValue")
                for a in resource_spans.get("resource", {}).get("attributes", [])
            }
            wanted = {"service.name": SERVICE_NAME, "deployment.environment.name": "ci", "service.namespace": "identity"}
            if any(attributes.get(k) != v for k, v in wanted.items()) or not attributes.get("service.version"):
                fail(f"the resource does not follow OTEL_SERVICE_NAME / OTEL_RESOURCE_ATTRIBUTES: {attributes}")
            for scope in resource_spans.get("scopeSpans", []):
                spans.extend(scope.get("spans", []))
    metric_names = sorted(
        {
            metric["name"]
            for export in metrics
            for resource_metrics in export.get("resourceMetrics", [])
            for scope in resource_metrics.get("scopeMetrics", [])
            for metric in scope.get("metrics", [])
        }
    )
    if "recovery.rpc.errors" not in metric_names:
        fail(f"no recovery.rpc.errors metric: {metric_names}")
    if "rpc.server.call.duration" not in metric_names:
        fail(f"no rpc.server.call.duration metric: {metric_names}")
    call_attributes = {
        a["key"]
        for export in metrics
        for resource_metrics in export.get("resourceMetrics", [])
        for scope in resource_metrics.get("scopeMetrics", [])
        for metric in scope.get("metrics", [])
        if metric["name"] == "rpc.server.call.duration"
        for point in metric.get("histogram", {}).get("dataPoints", [])
        for a in point.get("attributes", [])
    }
    if not {"rpc.system.name", "rpc.method", "rpc.response.status_code", "error.type"} <= call_attributes:
        fail(f"rpc.server.call.duration lacks the semconv 1.42 attributes: {sorted(call_attributes)}")
    names = sorted({span["name"] for span in spans})
    print(f"receiver got {len(spans)} spans: {', '.join(names)}; metrics: {', '.join(metric_names)}")
    for method in ("CreateCaptcha", "StartRecovery", "ValidatePassword"):
        if not any(method in span["name"] and span.get("kind") == "SPAN_KIND_SERVER" for span in spans):
            fail(f"no server span for {method}: {names}")
    # MessageToDict renders trace/span ids as base64 of the bytes.
    import base64

    wanted_trace = base64.b64encode(bytes.fromhex(trace_id)).decode()
    wanted_parent = base64.b64encode(bytes.fromhex(parent_span)).decode()
    parented = [
        s for s in spans if "CreateCaptcha" in s["name"] and s.get("traceId") == wanted_trace
    ]
    if not parented or parented[0].get("parentSpanId") != wanted_parent:
        fail("the CreateCaptcha span is not parented on the caller's traceparent")
    if any(canary.encode() in blob for blob in raw):
        fail("a password reached the telemetry export")
    print("otlp receiver check: spans (parented on traceparent) and metrics arrived; no secret in them")


if __name__ == "__main__":
    main()
