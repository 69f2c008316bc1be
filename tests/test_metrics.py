"""edge.metrics: the counters and gauges the SIP IO code drives, in a private registry."""

from __future__ import annotations

from edge.metrics import CONTENT_TYPE, Metrics


def value(metrics: Metrics, name: str, **labels: str) -> float | None:
    return metrics.registry.get_sample_value(name, labels)


def test_message_counters_by_transport_and_kind() -> None:
    metrics = Metrics()
    metrics.message_received("udp", "request")
    metrics.message_received("UDP", "request")  # the Via spelling counts in the same series
    metrics.message_received("tcp", "response")
    metrics.message_sent("TCP", "response")
    metrics.parse_error("UDP")
    assert value(metrics, "sdpbx_sip_messages_received_total",
                 transport="udp", kind="request") == 2.0
    assert value(metrics, "sdpbx_sip_messages_received_total",
                 transport="tcp", kind="response") == 1.0
    assert value(metrics, "sdpbx_sip_messages_sent_total", transport="tcp", kind="response") == 1.0
    assert value(metrics, "sdpbx_sip_parse_errors_total", transport="udp") == 1.0
    assert value(metrics, "sdpbx_sip_parse_errors_total", transport="tcp") == 0.0


def test_new_transport_gets_its_own_series() -> None:
    metrics = Metrics()
    metrics.message_received("WS", "request")
    assert value(metrics, "sdpbx_sip_messages_received_total",
                 transport="ws", kind="request") == 1.0


def test_rejected_and_dropped() -> None:
    metrics = Metrics()
    metrics.rejected(403)
    metrics.rejected(403)
    metrics.rejected(513)
    metrics.dropped("acl")
    assert value(metrics, "sdpbx_sip_rejected_total", status="403") == 2.0
    assert value(metrics, "sdpbx_sip_rejected_total", status="513") == 1.0
    assert value(metrics, "sdpbx_sip_dropped_total", reason="acl") == 1.0


def test_gauges() -> None:
    metrics = Metrics()
    metrics.transaction_started("server")
    metrics.transaction_started("server")
    metrics.transaction_ended("server")
    metrics.set_transactions("client", 7)
    metrics.tcp_connection_opened()
    metrics.tcp_connection_opened()
    metrics.tcp_connection_closed()
    assert value(metrics, "sdpbx_sip_transactions", kind="server") == 1.0
    assert value(metrics, "sdpbx_sip_transactions", kind="client") == 7.0
    assert value(metrics, "sdpbx_tcp_connections") == 1.0
    metrics.tcp_connections_changed(5)
    assert value(metrics, "sdpbx_tcp_connections") == 5.0


def test_build_info_and_private_registries() -> None:
    first, second = Metrics("1.0"), Metrics("2.0")
    first.rejected(400)
    assert value(first, "sdpbx_build_info", version="1.0") == 1.0
    assert value(second, "sdpbx_build_info", version="2.0") == 1.0
    assert value(second, "sdpbx_sip_rejected_total", status="400") is None


def test_render() -> None:
    metrics = Metrics("9.9")
    body, content_type = metrics.render()
    assert content_type == CONTENT_TYPE == "text/plain; version=0.0.4; charset=utf-8"
    text = body.decode()
    assert 'sdpbx_build_info{version="9.9"} 1.0' in text.splitlines()
    assert "# TYPE sdpbx_sip_messages_received_total counter" in text
    assert "_created" not in text  # created-timestamp series are switched off
