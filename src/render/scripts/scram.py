"""pgpilot's roles Job: the SCRAM-SHA-256 verifier of a password, computed here so that the
password itself never reaches the server (where a statement's text can surface in logs,
pg_stat_activity and pg_stat_statements).

    python3 -c "$PGPILOT_SCRAM" ENV_VAR [CURRENT_VERIFIER]

Prints the verifier of the password in environment variable ENV_VAR, in PostgreSQL's
format (SCRAM-SHA-256$ITERATIONS:SALT$STOREDKEY:SERVERKEY). When CURRENT_VERIFIER is the
role's stored SCRAM verifier, its salt and iteration count are reused, so an unchanged
password gives the same verifier and a second run changes nothing. The password is
prepared as PostgreSQL prepares it (SASLprep, RFC 4013; a password that SASLprep refuses
is used as raw bytes, as the server does).
"""

import base64
import hashlib
import hmac
import os
import re
import stringprep
import sys
import unicodedata

ITERATIONS = 4096
SALT_BYTES = 16
CURRENT = re.compile(r"^SCRAM-SHA-256\$(\d+):([A-Za-z0-9+/=]+)\$")


def saslprep(raw):
    """RFC 4013's SASLprep of a UTF-8 password, or None where it does not apply."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        return None
    if text.isascii():
        return raw
    mapped = "".join(
        " " if stringprep.in_table_c12(c) else c
        for c in text
        if not stringprep.in_table_b1(c)
    )
    text = unicodedata.normalize("NFKC", mapped)
    if not text:
        return None
    prohibited = (
        stringprep.in_table_c12,
        stringprep.in_table_c21,
        stringprep.in_table_c22,
        stringprep.in_table_c3,
        stringprep.in_table_c4,
        stringprep.in_table_c5,
        stringprep.in_table_c6,
        stringprep.in_table_c7,
        stringprep.in_table_c8,
        stringprep.in_table_c9,
        stringprep.in_table_a1,
    )
    if any(table(c) for c in text for table in prohibited):
        return None
    if any(stringprep.in_table_d1(c) for c in text):
        if any(stringprep.in_table_d2(c) for c in text):
            return None
        if not (stringprep.in_table_d1(text[0]) and stringprep.in_table_d1(text[-1])):
            return None
    return text.encode("utf-8")


def verifier(password, salt, iterations):
    salted = hashlib.pbkdf2_hmac("sha256", password, salt, iterations)
    client_key = hmac.new(salted, b"Client Key", hashlib.sha256).digest()
    stored_key = hashlib.sha256(client_key).digest()
    server_key = hmac.new(salted, b"Server Key", hashlib.sha256).digest()
    b64 = lambda b: base64.b64encode(b).decode("ascii")
    return "SCRAM-SHA-256${}:{}${}:{}".format(
        iterations, b64(salt), b64(stored_key), b64(server_key)
    )


def main():
    raw = os.environb[sys.argv[1].encode()]
    password = saslprep(raw)
    if password is None:
        password = raw
    current = CURRENT.match(sys.argv[2] if len(sys.argv) > 2 else "")
    if current:
        iterations, salt = int(current.group(1)), base64.b64decode(current.group(2))
    else:
        iterations, salt = ITERATIONS, os.urandom(SALT_BYTES)
    print(verifier(password, salt, iterations))


if __name__ == "__main__":
    main()
