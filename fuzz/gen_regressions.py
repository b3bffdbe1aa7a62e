#!/usr/bin/env python3
"""Writes the hand-made edge-case inputs in fuzz/regressions/<target>/.

Inputs found by the fuzzers are copied into the same directories by hand
(never regenerated). The conn_ops encoding mirrors
pgvpd::testing::encode_conn_ops: config byte, then ops
  0 ClientBytes(u16le len, bytes)  1 ServerBytes(...)  2 ClientEof  3 ServerEof
  4 ServerConnected  5 ServerConnectFailed  6 Advance(u16le ms)
  7 WriteClient(u16le n)  8 WriteServer(u16le n)  9 ServerCanned(u8)  10 ClientCanned(u8)
"""
import os
import struct

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "regressions")


def be32(n):
    return struct.pack(">i", n)


def tagged(tag, body):
    return tag + be32(len(body) + 4) + body


def startup(params, version=196608):
    body = be32(version) + b"".join(k + b"\0" + v + b"\0" for k, v in params) + b"\0"
    return be32(len(body) + 4) + body


SSL = be32(8) + be32(80877103)


def cb(b):
    return bytes([0]) + struct.pack("<H", len(b)) + b


def sb(b):
    return bytes([1]) + struct.pack("<H", len(b)) + b


CEOF, SEOF, CONN, CONNFAIL = b"\x02", b"\x03", b"\x04", b"\x05"


def adv(ms):
    return b"\x06" + struct.pack("<H", ms)


def wc(n=0):
    return b"\x07" + struct.pack("<H", n)


def ws(n=0):
    return b"\x08" + struct.pack("<H", n)


def sc(i):
    return bytes([9, i])


def cc(i):
    return bytes([10, i])


# canned indexes (pgvpd::testing::canned_server / canned_client)
S_OK, S_CLEAR, S_MD5, S_SASL, S_SASL_CONT, S_SASL_FINAL, S_PS, S_KEY, S_RFQ, S_INJ = range(10)
S_ERR, S_NOTICE, S_NPV, S_PRIV_ROW = 10, 11, 12, 13
C_TENANT, C_BYPASS, C_SSL, C_GSS, C_CANCEL, C_PW, C_SASL1, C_SASL2, C_QUERY, C_TERM = range(10)

PSQL = startup([(b"user", b"app_user.acme"), (b"database", b"appdb")])
LOGIN = cb(PSQL) + CONN + ws() + sc(S_CLEAR) + wc() + cc(C_PW) + ws() + sc(S_OK) + sc(S_RFQ) + ws()


# --- auth targets: [flags][u16 le len][first message][rest], see
# pgvpd::testing::encode_two_messages. The fixed values mirror
# testing::SCRAM_FUZZ_* (password, salt, iterations, nonces).
import base64
import hashlib
import hmac as hmac_mod

PW, SALT, ITER = b"pencil", b"fuzz-salt-16byte", 16
SN = base64.b64encode(b"\x5a" * 18)
CN = base64.b64encode(b"\x11" * 18)


def two(flags, first, rest=b""):
    return bytes([flags]) + struct.pack("<H", len(first)) + first + rest


def proof(bare, server_first, without_proof):
    salted = hashlib.pbkdf2_hmac("sha256", PW, SALT, ITER)
    ck = hmac_mod.new(salted, b"Client Key", "sha256").digest()
    sk = hashlib.sha256(ck).digest()
    am = bare + b"," + server_first + b"," + without_proof
    sig = hmac_mod.new(sk, am, "sha256").digest()
    return base64.b64encode(bytes(a ^ b for a, b in zip(ck, sig)))


def server_first_for(cnonce):
    return b"r=" + cnonce + SN + b",s=" + base64.b64encode(SALT) + b",i=" + str(ITER).encode()


_sf = server_first_for(b"abc")
_wp = b"c=biws,r=abc" + SN
PROOF_TWICE = _wp + b",p=" + proof(b"n=,r=abc", _sf, _wp)
PROOF_TWICE += b",p=" + proof(b"n=,r=abc", _sf, _wp)


cases = {
    "frame": {
        "negative-length": b"Q" + be32(-1) + b"select 1\0",
        "length-3": b"Q" + be32(3),
        "length-0-startup": be32(0) + be32(196608),
        "startup-len-10001": be32(10001) + be32(196608) + b"user\0" + b"x" * (10001 - 14) + b"\0",
        "startup-len-10000": be32(10000) + be32(196608) + b"user\0" + b"x" * (10000 - 15) + b"\0\0",
        "int32-max-length": b"D" + be32(0x7FFFFFFF),
        "auth-sasl-truncated": tagged(b"R", be32(10) + b"SCRAM-SHA-256"),
        "datarow-negative-count": tagged(b"D", struct.pack(">h", -1)),
        "datarow-negative-column": tagged(b"D", struct.pack(">h", 1) + be32(-2)),
    },
    "startup": {
        "negative-length": be32(-8) + be32(196608),
        "length-3": be32(3),
        "startup-len-10001": be32(10001) + be32(196608) + b"user\0" + b"x" * (10001 - 14) + b"\0",
        "no-terminator": be32(17) + be32(196608) + b"user\0app",
        "cancel-key-257": be32(12 + 257) + be32(80877102) + be32(1) + b"k" * 257,
        "cancel-key-3": be32(15) + be32(80877102) + be32(1) + b"kkk",
        "protocol-3.99": startup([(b"user", b"u.t")], version=(3 << 16) | 99),
        "protocol-2": startup([(b"user", b"u.t")], version=2 << 16),
        "ssl-with-trailing": SSL + b"x",
        "duplicate-user": startup([(b"user", b"a.x"), (b"user", b"postgres")]),
        "empty-param-name-value": be32(13) + be32(196608) + b"\0x\0\0",
    },
    "backend": {
        "sasl-truncated": tagged(b"R", be32(10) + b"SCRAM-SHA-256"),
        "sasl-no-mechanism": tagged(b"R", be32(10) + b"\0"),
        "sasl-continue-empty": tagged(b"R", be32(11)),
        "auth-code-only-2-bytes": tagged(b"R", b"\0\0"),
        "md5-short-salt": tagged(b"R", be32(5) + b"ab"),
        "datarow-negative-count": tagged(b"D", struct.pack(">h", -1)),
        "datarow-count-32767-empty": tagged(b"D", struct.pack(">h", 32767)),
        "datarow-column-len-minus-2": tagged(b"D", struct.pack(">h", 1) + be32(-2)),
        "datarow-column-past-end": tagged(b"D", struct.pack(">h", 1) + be32(100) + b"x"),
        "error-no-terminator": tagged(b"E", b"SFATAL\0C28P01"),
        "error-empty": tagged(b"E", b""),
        "rfq-bad-status": tagged(b"Z", b"X"),
        "rfq-two-bytes": tagged(b"Z", b"II"),
        "backend-key-257": tagged(b"K", be32(1) + b"k" * 257),
        "npv-negative-count": tagged(b"v", be32(0) + be32(-1)),
        "parameter-status-no-value": tagged(b"S", b"TimeZone\0"),
    },
    "config": {
        "both-quotes": b"set_role = 'it\"s'\nupstream_host = \"a'b\"\n",
        "unterminated-quote": b"set_role = 'abc\n",
        "crlf": b"port = 6433\r\nworkers = 2\r\n",
        "cr-inside-value": b"listen_host = a\rb\n",
        "tab-in-value": b"set_role = a\tb\n",
        "no-equals": b"port\n",
        "equals-only": b"=\n",
        "empty-value": b"tls_port =\n",
        "huge-number": b"port = 99999999999999999999999\n",
        "negative-timeout": b"handshake_timeout = -1\n",
        "duplicate-key": b"port = 1\nport = 2\n",
        "unicode-space": "set_role = \u00a0role\u00a0\n".encode(),
        "nul-byte": b"set_role = a\0b\n",
        "invalid-utf8": b"set_role = \xff\xfe\n",
        "hash-in-quotes": b"tenant_separator = '#'\n",
        "text-after-quote": b"set_role = 'a' b\n",
        "list-with-empty-items": b"superuser_bypass = ,, postgres ,\n",
        "redacted-secret": b"pool_password = ********\n",
    },
    "ring_ops": {
        "capacity-0": bytes([0, 0, 5, 1, 9, 2, 3, 3, 1, 5, 0, 4, 0]),
        "capacity-1-wrap": bytes([1, 1, 1, 2, 1, 1, 1, 3, 1, 2, 1, 0, 1, 5, 0]),
        "consume-more-than-len": bytes([8, 0, 5, 2, 200, 1, 255, 2, 3, 0, 7, 5, 0]),
        "fill-full-then-peek": bytes([9, 0, 9, 3, 9, 3, 10, 2, 4, 0, 4, 5, 0, 4, 0]),
    },
    "conn_ops": {
        # CVE-2021-23214 class: bytes pipelined after SSLRequest
        "bytes-after-ssl-request": b"\x00" + cb(SSL + PSQL) + wc(),
        "three-ssl-requests": b"\x00" + cb(SSL) + wc() + cb(SSL) + wc() + cb(SSL) + wc(),
        # a Query pipelined before authentication must be held, never forwarded
        "query-before-auth": b"\x00" + cb(PSQL) + cc(C_QUERY) + CONN + ws() + sc(S_CLEAR) + ws()
        + cc(C_PW) + ws() + sc(S_OK) + sc(S_RFQ) + ws() + sc(S_INJ) + ws() + wc(),
        "query-instead-of-password": b"\x00" + cb(PSQL) + CONN + ws() + sc(S_CLEAR) + cc(C_QUERY)
        + ws() + wc(),
        "password-without-challenge": b"\x00" + cb(PSQL) + cc(C_PW) + CONN + ws() + ws()
        + sc(S_OK) + sc(S_RFQ) + ws() + wc(),
        "two-challenges-one-answer": b"\x00" + cb(PSQL) + CONN + ws() + sc(S_CLEAR) + sc(S_CLEAR)
        + cc(C_PW) + ws() + wc(),
        "sasl-truncated-from-server": b"\x00" + cb(PSQL) + CONN + ws()
        + sb(tagged(b"R", be32(10) + b"SCRAM-SHA-256")) + wc(),
        "datarow-negative-count-in-injection": b"\x00" + LOGIN
        + sb(b"1\0\0\0\x042\0\0\0\x04" + tagged(b"D", struct.pack(">h", -1))) + wc() + ws(),
        "privileged-role-refused": b"\x00" + LOGIN
        + sb(b"1\0\0\0\x042\0\0\0\x04" + tagged(b"D", b"\0\x01\0\0\0\0") + tagged(b"C", b"SELECT 1\0")
             + b"1\0\0\0\x042\0\0\0\x04") + sc(S_PRIV_ROW) + sb(tagged(b"C", b"SELECT 1\0")) + sc(S_RFQ)
        + wc() + ws(),
        "error-during-injection": b"\x00" + LOGIN + sc(S_ERR) + wc() + ws(),
        "server-eof-during-auth": b"\x00" + cb(PSQL) + CONN + ws() + sc(S_SASL) + SEOF + wc(),
        "client-eof-while-connecting": b"\x00" + cb(PSQL) + CEOF + CONN + ws() + wc(),
        "connect-failed": b"\x00" + cb(PSQL) + CONNFAIL + CONN + ws() + wc(),
        "bypass-list-empty-postgres": b"\x01" + cc(C_BYPASS) + CONN + ws() + sc(S_OK) + wc(),
        "tenant-denied": b"\x01" + cb(startup([(b"user", b"app.evil:bob")])) + CONN + ws() + wc(),
        "startup-10001-bytes": b"\x00" + cb(be32(10001) + be32(196608) + b"user\0" + b"x" * (10001 - 14) + b"\0") + wc(),
        "slow-client-writes": b"\x00" + cb(PSQL) + CONN + ws(1) + ws(1) + ws(3) + ws() + sc(S_CLEAR)
        + wc(1) + wc(2) + cc(C_PW) + ws(2) + ws() + sc(S_OK) + sc(S_PS) + sc(S_RFQ) + ws(5) + ws()
        + sc(S_INJ) + wc(3) + wc() + cc(C_QUERY) + ws() + CEOF,
        "drain-timeout": b"\x00" + cb(PSQL) + CONN + ws() + sc(S_ERR) + adv(6000),
        "clock-far-future": b"\x00" + cb(PSQL) + b"".join(adv(65535) for _ in range(40)) + wc(),
    },
    "scram_server": {
        "empty": b"",
        "p-flag": two(0, b"p=tls-server-end-point,,n=,r=abc"),
        "authzid": two(0, b"n,a=admin,n=,r=abc"),
        "mandatory-extension": two(0, b"n,,m=x,n=,r=abc"),
        "user-unescaped-equals": two(1, b"n,,n=a=b,r=abc", _wp),
        "nonce-257": two(0, b"n,,n=,r=" + b"N" * 257),
        "nonce-256-assist": two(1, b"n,,n=,r=" + b"N" * 256, b"c=biws,r=" + b"N" * 256 + SN),
        "message-1025": two(0, b"n,,n=,r=" + b"N" * 1017),
        "biws-after-y": two(1, b"y,,n=,r=abc", _wp),
        "nonce-echo-truncated": two(1, b"n,,n=,r=abc", _wp[:-1]),
        "proof-twice": two(0, b"n,,n=,r=abc", PROOF_TWICE),
        "right-proof-then-garbage": two(0, b"n,,n=,r=abc", PROOF_TWICE + b"x"),
    },
    "scram_client": {
        "empty": b"",
        "nonce-adds-nothing": two(1, b",s=AQ==,i=1"),
        "iterations-zero": two(1, b"x,s=AQ==,i=0"),
        "iterations-u64-overflow": two(1, b"x,s=AQ==,i=99999999999999999999999"),
        "iterations-at-cap": two(1, b"x,s=AQ==,i=64", b"v=AA=="),
        "salt-257": two(1, b"x,s=" + base64.b64encode(b"\x07" * 257) + b",i=1"),
        "server-error": two(1, b"x,s=AQ==,i=1", b"e=invalid-proof"),
        "signature-wrong-length": two(1, b"x,s=AQ==,i=1", b"v=AA=="),
        "mandatory-extension": two(0, b"m=x,r=" + CN + b"x,s=AQ==,i=1"),
        "nonce-not-printable": two(1, b"\x7f,s=AQ==,i=1"),
    },
    "userlist": {
        "hash-comment": b"# users\n",
        "unterminated-name": b"\"a\n",
        "doubled-quote-then-eol": b"\"a\"\"\n",
        "duplicate": b"\"a\" \"1\"\n\"a\" \"2\"\n",
        "scram-bad-iterations": b"\"a\" \"SCRAM-SHA-256$0:AA==$x:y\"\n",
        "scram-with-quotes": b"\"a\" \"SCRAM-SHA-256$4096:\"\"\"\n",
        "md5-uppercase": b"\"a\" \"md5" + b"A" * 32 + b"\"\n",
        "nul-in-secret": b"\"a\" \"b\x00c\"\n",
        "invalid-utf8-name": b"\"a\xff\" \"b\"\n",
        "lone-cr-at-eof": b"\"a\" \"b\"\r",
        "text-between-fields": b"\"a\"x\"b\"\n",
    },
}

for target, files in cases.items():
    d = os.path.join(ROOT, target)
    os.makedirs(d, exist_ok=True)
    for name, data in files.items():
        with open(os.path.join(d, name), "wb") as f:
            f.write(data)
print(sum(len(f) for f in cases.values()), "files")
