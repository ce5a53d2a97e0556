"""Where a client's credentials come from (README "Security"), as tp-worker and tpctl read them: files given
as arguments, else the environment (TPCOORD_TLS_CA, TPCOORD_TLS_CERT, TPCOORD_TLS_KEY: file paths;
TPCOORD_TOKEN_FILE, or TPCOORD_TOKEN: the token itself). A token is 16-1024 visible ASCII characters; a
token file may end in whitespace (a newline), which is not part of it."""
import os

import grpc

MIN_SECRET, MAX_SECRET = 16, 1024  # common/limits.h


class Credentials:
    def __init__(self, token=None, token_file=None, tls_ca=None, tls_cert=None, tls_key=None):
        def path(given, env):
            return given if given else os.environ.get(env, "")

        self.tls_ca = _read(path(tls_ca, "TPCOORD_TLS_CA"))
        self.tls_cert = _read(path(tls_cert, "TPCOORD_TLS_CERT"))
        self.tls_key = _read(path(tls_key, "TPCOORD_TLS_KEY"))
        if bool(self.tls_cert) != bool(self.tls_key):
            raise ValueError("a client certificate needs its key: give both tls_cert and tls_key")
        if token:
            check_secret("the token", token)
            self.token = token
        elif path(token_file, "TPCOORD_TOKEN_FILE"):
            file = path(token_file, "TPCOORD_TOKEN_FILE")
            self.token = _read(file).decode("latin-1").rstrip()
            check_secret("the secret in " + file, self.token)
        elif os.environ.get("TPCOORD_TOKEN"):
            self.token = os.environ["TPCOORD_TOKEN"]
            check_secret("TPCOORD_TOKEN", self.token)
        else:
            self.token = ""

    @property
    def tls(self):
        """TLS when any of the three is given (with no CA, the system's roots verify the coordinator)."""
        return bool(self.tls_ca or self.tls_cert or self.tls_key)

    def channel_credentials(self):
        return grpc.ssl_channel_credentials(root_certificates=self.tls_ca or None,
                                            private_key=self.tls_key or None,
                                            certificate_chain=self.tls_cert or None)


def check_secret(what, secret):
    if not MIN_SECRET <= len(secret) <= MAX_SECRET:
        raise ValueError("%s has %d characters; it must have %d to %d" % (what, len(secret), MIN_SECRET, MAX_SECRET))
    for i, c in enumerate(secret):
        if not 0x21 <= ord(c) <= 0x7E:
            raise ValueError("%s holds a character that is not visible ASCII (byte %d at offset %d)" % (what, ord(c), i))


def _read(path):
    if not path:
        return b""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise FileNotFoundError("cannot read %s: %s" % (path, e.strerror)) from None
    if not data:
        raise ValueError(path + " is empty")
    return data
