"""_grpc_call: HPACK both ways, and real calls against grpcio servers (gRPC-core, as TiKV uses) on
loopback: plaintext, mTLS, a CN allow-list that refuses per call, and failures before any answer."""

from __future__ import annotations

import pytest

from ansible_collections.tlsops.tikv.plugins.module_utils._grpc_call import (
    HpackDecoder,
    HpackError,
    call,
    decode_int,
    encode_headers,
    encode_int,
    percent_decode,
)
from ansible_collections.tlsops.tikv.plugins.module_utils._tls_probe import ProbeConfigError, Target
from tls_servers import PKI, closed_port, start_grpc as start


# --- HPACK ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("value, prefix", [(0, 5), (30, 5), (31, 5), (1337, 5), (127, 7), (70000, 7)])
def test_integers_round_trip(value, prefix):
    assert decode_int(encode_int(value, prefix), 0, prefix) == (value, len(encode_int(value, prefix)))


def test_rfc7541_c1_examples():
    assert encode_int(10, 5) == b"\x0a"
    assert encode_int(1337, 5) == b"\x1f\x9a\x0a"


def test_literal_headers_round_trip_and_long_values():
    headers = [(":path", "/tikvpb.Tikv/KvGet"), ("x-long", "v" * 300)]
    assert HpackDecoder().decode(encode_headers(headers)) == headers


def test_rfc7541_c3_requests_use_static_and_dynamic_table():
    decoder = HpackDecoder()
    first = bytes.fromhex("828684410f7777772e6578616d706c652e636f6d")
    assert decoder.decode(first) == [(":method", "GET"), (":scheme", "http"), (":path", "/"),
                                     (":authority", "www.example.com")]
    second = bytes.fromhex("828684be58086e6f2d6361636865")
    assert decoder.decode(second) == [(":method", "GET"), (":scheme", "http"), (":path", "/"),
                                      (":authority", "www.example.com"), ("cache-control", "no-cache")]


def test_huffman_strings_decode_to_none_without_losing_the_table():
    # RFC 7541 C.4.1: the same request with Huffman-coded :authority.
    decoder = HpackDecoder()
    fields = decoder.decode(bytes.fromhex("828684418cf1e3c2e5f23a6ba0ab90f4ff"))
    assert fields[3] == (":authority", None)
    assert decoder.decode(bytes.fromhex("be")) == [(":authority", None)]


def test_truncated_blocks_raise():
    with pytest.raises(HpackError):
        HpackDecoder().decode(b"\x40\x05abc")


def test_grpc_message_is_percent_decoded():
    assert percent_decode("Common%20name%20check%20fail") == "Common name check fail"
    assert percent_decode("100%") == "100%"
    assert percent_decode(None) is None


# --- against grpcio ---------------------------------------------------------------------------------

METHOD = "/tikvpb.Tikv/KvGet"


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    return PKI(tmp_path_factory.mktemp("grpc-pki"))


def target(port, pki=None, cert=None, key=None, ca=None, timeout=5):
    return Target("127.0.0.1", port, ca_path=ca or (pki.ca_path if pki else None),
                  client_cert_path=cert or (pki.client_cert if pki else None),
                  client_key_path=key or (pki.client_key if pki else None), timeout=timeout, alpn_protocols=["h2"])


def test_plaintext_call_is_served():
    server, port = start()
    try:
        result = call(target(port), METHOD, tls=False).as_dict()
    finally:
        server.stop(None)
    assert result["grpc_status"] == 0 and result["call_accepted"] is True
    assert result["response_bytes"] == len(b"value") and result["protocol"] is None


def test_mtls_call_is_served(pki):
    server, port = start(pki)
    try:
        result = call(target(port, pki), METHOD).as_dict()
    finally:
        server.stop(None)
    assert result["call_accepted"] is True and result["alpn"] == "h2" and result["protocol"].startswith("TLSv1")


def test_a_cn_outside_the_allow_list_is_refused_per_call(pki):
    server, port = start(pki, allowed=["tikv", "pd"])
    try:
        refused = call(target(port, pki), METHOD).as_dict()  # client CN tikv-client
        allowed_cert, allowed_key = pki.leaf("allowed", "tikv", ["127.0.0.1"])
        accepted = call(target(port, pki, cert=allowed_cert, key=allowed_key), METHOD).as_dict()
    finally:
        server.stop(None)
    assert refused["grpc_status"] == 16 and refused["grpc_status_name"] == "UNAUTHENTICATED"
    assert refused["grpc_message"] == "Common name check fail"
    assert refused["call_accepted"] is False and "refused the call" in refused["verdict"]
    assert accepted["call_accepted"] is True


def test_unimplemented_proves_nothing(pki):
    server, port = start(pki)
    try:
        result = call(target(port, pki), "/grpc.health.v1.Health/Check").as_dict()
    finally:
        server.stop(None)
    assert result["grpc_status"] == 12 and result["call_accepted"] is None and "proves nothing" in result["verdict"]


def test_a_certificate_from_another_ca_gets_no_answer(pki):
    server, port = start(pki)
    try:
        result = call(target(port, pki, cert=pki.foreign_client_cert, key=pki.foreign_client_key), METHOD).as_dict()
    finally:
        server.stop(None)
    assert result["call_accepted"] is None and result["grpc_status"] is None
    assert result["stage"] in ("handshake", "call") and result["error"]


def test_a_server_certificate_we_do_not_trust_stops_at_the_handshake(pki):
    server, port = start(pki)
    try:
        result = call(target(port, pki, ca=pki.foreign_ca_path), METHOD).as_dict()
    finally:
        server.stop(None)
    assert result["stage"] == "handshake" and "certificate verify failed" in result["error"].lower()


def test_nothing_listening():
    result = call(target(closed_port()), METHOD, tls=False).as_dict()
    assert result["stage"] == "connect" and result["call_accepted"] is None


def test_unreadable_local_files_raise(tmp_path):
    with pytest.raises(ProbeConfigError):
        call(target(closed_port(), ca=str(tmp_path / "missing.crt")), METHOD)
